"""`GenerationConfig`: Hugging Face's `generation_config.json` keys and semantics, validated once.

Every backend's `generate` resolves its arguments here, so every bad value gets the same error in
every framework and every default comes from one rule:

- a field left at `None` is *unset*; `resolve` fills it from `DEFAULTS` (transformers v5's
  `GenerationConfig._get_default_generation_params`, e.g. `max_length=20`, `top_k=50`);
- `eos_token_id`, `bos_token_id` and `pad_token_id` default to the model's `GPT2Config`, and the pad
  id falls back to the first eos id (transformers' `_prepare_special_tokens`);
- `max_new_tokens` wins over `max_length`; with neither, 20 new tokens (capped at `n_positions`);
  `min_new_tokens` wins over `min_length` (transformers' `_prepare_generated_length`).

`resolve(...)` returns a frozen `GenerationPlan` with every number decided; the backends' loops
read only the plan.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpt2_core._io import atomic_write_text
from gpt2_core.config import GPT2Config

logger = logging.getLogger(__name__)

GENERATION_CONFIG_NAME = "generation_config.json"

_INT = "int"
_FLOAT = "float"
_BOOL = "bool"


@dataclasses.dataclass(frozen=True)
class Field:
    """One `generation_config.json` key: its type, default when unset, and what it means."""

    name: str
    kind: str          # _INT, _FLOAT, _BOOL, or a special kind checked by `_check_special`
    default: Any       # the value `resolve` uses when the field is None
    doc: str


FIELDS: tuple[Field, ...] = (
    Field("max_length", _INT, 20, "total length cap (prompt included); overridden by `max_new_tokens`"),
    Field("max_new_tokens", _INT, None, "new tokens to generate at most; wins over `max_length`"),
    Field("min_length", _INT, 0, "eos is forbidden while the row (prompt included) is shorter"),
    Field("min_new_tokens", _INT, None, "eos forbidden before this many new tokens; wins over `min_length`"),
    Field("do_sample", _BOOL, False, "sample instead of picking the most likely token"),
    Field("temperature", _FLOAT, 1.0, "divide the scores (sampling only)"),
    Field("top_k", _INT, 50, "keep the k best tokens (sampling only; 0 disables)"),
    Field("top_p", _FLOAT, 1.0, "nucleus: smallest set holding this probability (sampling only)"),
    Field("min_p", _FLOAT, None, "drop tokens below min_p x the best probability (sampling only)"),
    Field("typical_p", _FLOAT, 1.0, "locally typical sampling mass (sampling only)"),
    Field("repetition_penalty", _FLOAT, 1.0, "CTRL's penalty on tokens in the row (left padding skipped)"),
    Field("no_repeat_ngram_size", _INT, 0, "forbid repeating any n-gram of this size"),
    Field("bad_words_ids", "bad_words", None, "token sequences that may never be generated"),
    Field("num_beams", _INT, 1, "beam search width (1: greedy or sampling)"),
    Field("length_penalty", _FLOAT, 1.0, "beam score = sum logprob / length ** length_penalty"),
    Field("early_stopping", "early_stopping", False, "beam search stop rule: True, False or 'never'"),
    Field("num_return_sequences", _INT, 1, "sequences returned per prompt row"),
    Field("eos_token_id", "token_ids", None, "one id or several; default: the model config's"),
    Field("pad_token_id", "token_id", None, "fills finished rows; default: model config's, then first eos"),
    Field("bos_token_id", "token_id", None, "the prompt when `input_ids` is None; default: model config's"),
    Field("stop_strings", "stop_strings", None, "stop a row when its text ends in one (needs `tokenizer`)"),
    Field("output_scores", _BOOL, False, "return the processed scores of every step"),
    Field("output_logits", _BOOL, False, "return the raw logits of every step"),
    Field("return_dict_in_generate", _BOOL, False, "return an output record instead of the sequences"),
    Field("seed", _INT, None, "seeds the counter-based sampler (same tokens in every framework)"),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in FIELDS}

# Keys transformers knows that this package does not implement. From a loaded file or a
# `transformers.GenerationConfig` they are accepted at their neutral value (None or
# transformers' default) and kept for the round trip; any other value is refused at `generate`.
NEUTRAL_FOREIGN: dict[str, tuple[Any, ...]] = {
    "use_cache": (None, True), "output_attentions": (None, False),
    "output_hidden_states": (None, False), "num_beam_groups": (None, 1),
    "diversity_penalty": (None, 0.0), "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0),
    "encoder_repetition_penalty": (None, 1.0), "encoder_no_repeat_ngram_size": (None, 0),
    "remove_invalid_values": (None, False), "renormalize_logits": (None, False),
    "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "sequence_bias": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "guidance_scale": (None, 1.0),
    "exponential_decay_length_penalty": (None,), "top_h": (None,), "max_time": (None,),
    "low_memory": (None, False), "penalty_alpha": (None,), "dola_layers": (None,),
    "token_healing": (None, False), "watermarking_config": (None,), "constraints": (None,),
    "force_words_ids": (None,), "prompt_lookup_num_tokens": (None,),
}
# Bookkeeping keys of transformers' files, never a generation option.
_METADATA = frozenset({"transformers_version", "_from_model_config", "_commit_hash",
                       "_original_object_hash", "generation_kwargs", "compile_config",
                       "cache_implementation", "cache_config", "max_cache_len",
                       "return_legacy_cache", "disable_compile", "trust_remote_code",
                       "decoder_start_token_id", "is_assistant", "num_assistant_tokens",
                       "num_assistant_tokens_schedule", "assistant_confidence_threshold",
                       "assistant_lookbehind", "target_lookbehind", "assistant_early_exit",
                       "max_matching_ngram_size", "assistant_ensemble_weight", "use_mtp",
                       "speculation_type", "custom_generate", "base_model_tp_plan"})


class GenerationConfig:
    """Generation options, keyed and defaulted like `transformers.GenerationConfig`.

    Fields are plain attributes (`config.max_new_tokens = 50`); they are validated when
    `generate` runs (or by `validate()`). Unknown keys from a file are kept in `extra` and
    written back unchanged.

    Example:
        >>> cfg = GenerationConfig(max_new_tokens=5, do_sample=True, seed=0)
        >>> cfg.to_diff_dict()
        {'max_new_tokens': 5, 'do_sample': True, 'seed': 0}
    """

    def __init__(self, **kwargs: Any) -> None:
        for name in FIELD_NAMES:
            setattr(self, name, kwargs.pop(name, None))
        self.extra: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key not in NEUTRAL_FOREIGN and key not in _METADATA:
                raise TypeError(
                    f"GenerationConfig got an unexpected keyword argument {key!r}. Known fields: "
                    f"{', '.join(FIELD_NAMES)}.")
            self.extra[key] = value

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationConfig:
        """From a `generation_config.json` mapping; keys this package does not know are kept."""
        if not isinstance(data, Mapping):
            raise TypeError(f"`data` must be a mapping. Received: {type(data).__name__}.")
        out = cls()
        for key, value in data.items():
            if key in FIELD_NAMES:
                setattr(out, key, value)
            else:
                out.extra[key] = value
        return out

    @classmethod
    def from_model_config(cls, config: GPT2Config) -> GenerationConfig:
        """The special-token ids of a model config (transformers' `from_model_config`). Ids
        outside the model's vocabulary (GPT-2's 50256 on a small test vocabulary) can never be
        generated and are left out (see `resolve`)."""
        V = config.vocab_size
        eos = [i for i in as_sequence(config.eos_token_id) if i < V]
        in_vocab = lambda i: i if i is not None and i < V else None  # noqa: E731
        return cls(eos_token_id=(eos[0] if len(eos) == 1 and _is_int(config.eos_token_id) else eos or None),
                   bos_token_id=in_vocab(config.bos_token_id), pad_token_id=in_vocab(config.pad_token_id))

    @classmethod
    def coerce(cls, value: Any) -> GenerationConfig:
        """A `GenerationConfig`, a mapping, or any object with `to_dict()` (such as a
        `transformers.GenerationConfig`)."""
        if isinstance(value, GenerationConfig):
            return value.copy()
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict):
            return cls.from_dict(to_dict())
        raise TypeError(
            "`generation_config` must be a GenerationConfig, a mapping, or an object with "
            f"`to_dict()` (such as transformers.GenerationConfig). Received: {type(value).__name__}.")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> GenerationConfig:
        """Read `generation_config.json` (or a model directory holding one)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, GENERATION_CONFIG_NAME)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"No generation config at {path!r}.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"`{path}` is not valid JSON: {e}. Rewrite it with "
                             "`GenerationConfig.save_pretrained`.") from e
        if not isinstance(data, dict):
            raise ValueError(f"`{path}` must hold a JSON object. Received: {type(data).__name__}.")
        return cls.from_dict(data)

    @classmethod
    def for_checkpoint(cls, path: str | os.PathLike[str], config: GPT2Config) -> GenerationConfig:
        """A loaded model's config: the folder's `generation_config.json` when it has one, else
        the model config's special-token ids (transformers' `from_pretrained`)."""
        path = os.fspath(path)
        if os.path.isfile(os.path.join(path, GENERATION_CONFIG_NAME)):
            return cls.from_pretrained(path)
        return cls.from_model_config(config)

    def checkpoint_files(self) -> dict[str, str]:
        """`{"generation_config.json": text}` for `gpt2_core.save_pretrained(extra_files=...)`,
        so the file is written in the same all-or-nothing transaction as the weights."""
        return {GENERATION_CONFIG_NAME: self.to_json_string()}

    def save_pretrained(self, path: str | os.PathLike[str]) -> str:
        """Write `generation_config.json` into the directory `path` atomically; returns its path."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        target = os.path.join(path, GENERATION_CONFIG_NAME)
        atomic_write_text(target, self.to_json_string())
        return target

    # ---- views ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field (None when unset), then the kept foreign keys."""
        data = {name: copy.deepcopy(getattr(self, name)) for name in FIELD_NAMES}
        data.update(copy.deepcopy(self.extra))
        return data

    def to_diff_dict(self) -> dict[str, Any]:
        """Only the fields that are set (what `save_pretrained` writes), then foreign keys."""
        data = {k: v for k, v in self.to_dict().items() if k not in FIELD_NAMES or v is not None}
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_diff_dict(), indent=2, sort_keys=True, default=_json_default) + "\n"

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the given fields; returns the keys that are not fields (as transformers)."""
        unused = {}
        for key, value in kwargs.items():
            if key in FIELD_NAMES:
                setattr(self, key, value)
            else:
                unused[key] = value
        return unused

    def copy(self) -> GenerationConfig:
        return copy.deepcopy(self)

    def validate(self) -> None:
        """Raise for every value no generation could use (checks that need the model or the
        prompt run in `resolve`)."""
        _validate_fields(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        # transformers hashes its GenerationConfig by its JSON too; Flax NNX needs a module's
        # static attributes hashable. Do not mutate a config while it is a dict key.
        return hash(self.to_json_string())

    def __repr__(self) -> str:
        return f"GenerationConfig({self.to_json_string().strip()})"


def _json_default(value: Any) -> Any:
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"generation config value {value!r} ({type(value).__name__}) is not JSON.")


# ---- validation ----------------------------------------------------------------------------
def _bad(name: str, constraint: str, value: Any, fix: str = "") -> ValueError:
    tail = f" {fix}" if fix else ""
    return ValueError(f"`{name}` must be {constraint}. Received: {name}={value!r}.{tail}")


def _is_int(v: Any) -> bool:
    """Python and NumPy integers (not bools)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _check_field(f: Field, v: Any) -> None:
    if v is None:
        return
    if f.kind == _INT and not _is_int(v):
        raise TypeError(f"`{f.name}` must be an integer. Received: {f.name}={v!r} ({type(v).__name__}).")
    if f.kind == _FLOAT and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise TypeError(f"`{f.name}` must be a number. Received: {f.name}={v!r} ({type(v).__name__}).")
    if f.kind == _BOOL and not isinstance(v, bool):
        raise TypeError(f"`{f.name}` must be True or False. Received: {f.name}={v!r}.")
    if f.kind == "token_id" and (not _is_int(v) or v < 0):
        raise _bad(f.name, "None or a non-negative integer", v)
    if f.kind == "token_ids":  # [] turns eos off, overriding the model config's
        ids = [v] if _is_int(v) else v
        if not isinstance(ids, (list, tuple)) or any(not _is_int(i) or i < 0 for i in ids):
            raise _bad(f.name, "None, a non-negative integer, or a list of them", v)
    if f.kind == "early_stopping" and v not in (True, False, "never"):
        raise _bad(f.name, "True, False or 'never'", v)
    if f.kind == "stop_strings":
        strings = [v] if isinstance(v, str) else v
        if not isinstance(strings, (list, tuple)) or not strings or any(
                not isinstance(s, str) or not s for s in strings):
            raise _bad(f.name, "a non-empty string or a non-empty list of non-empty strings", v)
    if f.kind == "bad_words":
        if not isinstance(v, (list, tuple)) or not v or any(
                not isinstance(w, (list, tuple)) or not w or any(not _is_int(i) or i < 0 for i in w)
                for w in v):
            raise _bad(f.name, "a non-empty list of non-empty lists of token ids", v,
                       "Example: bad_words_ids=[[1234], [42, 7]].")


_RANGES: dict[str, tuple[str, Any]] = {
    # name: (constraint text, predicate on the value)
    "max_length": ("a positive integer", lambda v: v > 0),
    "max_new_tokens": ("a positive integer (transformers raises for 0 too)", lambda v: v > 0),
    "min_length": ("a non-negative integer", lambda v: v >= 0),
    "min_new_tokens": ("a non-negative integer", lambda v: v >= 0),
    "temperature": ("> 0 (use do_sample=False for greedy decoding)", lambda v: v > 0),
    "top_k": ("a non-negative integer (0 disables it)", lambda v: v >= 0),
    "top_p": ("in (0, 1]", lambda v: 0 < v <= 1),
    "min_p": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "typical_p": ("in (0, 1]", lambda v: 0 < v <= 1),
    "repetition_penalty": ("> 0", lambda v: v > 0),
    "no_repeat_ngram_size": ("a non-negative integer", lambda v: v >= 0),
    "num_beams": ("a positive integer", lambda v: v >= 1),
    "num_return_sequences": ("a positive integer", lambda v: v >= 1),
    "seed": ("None or an integer in [0, 2**64)", lambda v: 0 <= v < 2 ** 64),
}


def _validate_fields(cfg: GenerationConfig) -> None:
    for f in FIELDS:
        v = getattr(cfg, f.name)
        _check_field(f, v)
        if v is not None and f.name in _RANGES:
            constraint, ok = _RANGES[f.name]
            if not ok(v):
                raise _bad(f.name, constraint, v)
    for key, value in cfg.extra.items():
        if key in NEUTRAL_FOREIGN and value not in NEUTRAL_FOREIGN[key]:
            raise ValueError(
                f"`{key}` is a transformers generation option this package does not implement. "
                f"Received: {key}={value!r}. Leave it unset (or at {NEUTRAL_FOREIGN[key][-1]!r}).")
    nb = cfg.num_beams or 1
    nrs = cfg.num_return_sequences or 1
    if nrs > 1 and nb == 1 and not cfg.do_sample:
        # transformers' GenerationConfig.validate: greedy decoding has one answer per row.
        raise ValueError(
            "Greedy decoding (num_beams=1, do_sample=False) returns one sequence per row. "
            f"Received: num_return_sequences={nrs}. Set do_sample=True or num_beams>={nrs}.")
    if nb > 1 and nrs > nb:
        raise ValueError(
            "`num_return_sequences` must be <= `num_beams` for beam search. Received: "
            f"num_return_sequences={nrs}, num_beams={nb}. Raise num_beams or lower num_return_sequences.")


# ---- resolution ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GenerationPlan:
    """Every generation number decided, for a prompt of `prompt_length` (padded width) tokens.

    Backends read only this record; `processors` in `gpt2_core.sampling` read it too.
    """

    batch_size: int                   # B prompt rows
    prompt_length: int                # T0, the (left-padded) prompt width
    max_new_tokens: int               # steps at most
    min_length: int                   # eos forbidden while T0 + step < min_length
    do_sample: bool
    temperature: float
    top_k: int                        # 0: off
    top_p: float                      # 1.0: off
    min_p: float | None
    typical_p: float                  # 1.0: off
    repetition_penalty: float         # 1.0: off
    no_repeat_ngram_size: int         # 0: off
    bad_words_ids: tuple[tuple[int, ...], ...]   # eos-only entries removed, as transformers
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    num_return_sequences: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int                 # fills finished rows (-1 only when there is no eos either)
    bos_token_id: int | None
    stop_strings: tuple[str, ...]
    output_scores: bool
    output_logits: bool
    return_dict_in_generate: bool
    seed: int | None                  # None: the backend draws one (`draw_seed`)
    vocab_size: int

    @property
    def max_length(self) -> int:
        return self.prompt_length + self.max_new_tokens

    @property
    def expanded_batch(self) -> int:
        """Rows the loop runs: B * num_beams for beam search, else B * num_return_sequences."""
        return self.batch_size * (self.num_beams if self.num_beams > 1 else self.num_return_sequences)

    @property
    def min_tokens_to_keep(self) -> int:
        """Warpers keep this many candidates: 1, or n_eos + 1 under beam sampling (transformers)."""
        return len(self.eos_token_ids) + 1 if self.num_beams > 1 else 1

    @property
    def beams_to_keep(self) -> int:
        """Candidates a beam step ranks: max(2, 1 + n_eos) * num_beams (transformers)."""
        return max(2, 1 + len(self.eos_token_ids)) * self.num_beams

    @property
    def mode(self) -> str:
        if self.num_beams > 1:
            return "beam_sample" if self.do_sample else "beam_search"
        return "sample" if self.do_sample else "greedy"


def merge(model_generation_config: GenerationConfig | None, generation_config: Any,
          kwargs: Mapping[str, Any]) -> GenerationConfig:
    """The model's config, then the call's `generation_config`, then keyword arguments, each
    overriding the last (transformers' `_prepare_generation_config`). An unknown keyword raises
    `TypeError` naming it."""
    base = GenerationConfig() if model_generation_config is None else model_generation_config.copy()
    if generation_config is not None:
        given = GenerationConfig.coerce(generation_config)
        for name in FIELD_NAMES:
            if getattr(given, name) is not None:
                setattr(base, name, getattr(given, name))
        base.extra.update(given.extra)
    for key, value in kwargs.items():
        if key not in FIELD_NAMES:
            raise TypeError(f"generate() got an unexpected keyword argument {key!r}. Generation "
                            f"options are the GenerationConfig fields: {', '.join(FIELD_NAMES)}.")
        setattr(base, key, value)
    return base


def resolve(config: GPT2Config, gen: GenerationConfig, batch_size: int, prompt_length: int,
            *, has_tokenizer: bool = False) -> GenerationPlan:
    """Validate `gen` against the model and the prompt and decide every number.

    Raises `ValueError`/`TypeError` naming the argument, the constraint, the value and the fix.
    """
    _validate_fields(gen)
    V = config.vocab_size
    if prompt_length < 1:
        raise ValueError(
            f"`input_ids` must hold at least one token per row. Received shape ({batch_size}, "
            f"{prompt_length}). Pass input_ids=None to start each row from `bos_token_id`.")

    def pick(name: str) -> Any:
        v = getattr(gen, name)
        return DEFAULTS[name] if v is None else v

    # Ids given to `generate` (or in its generation config) must lie in the vocabulary. Ids the
    # model config carries by default (GPT-2's 50256 on a small test vocabulary) that lie outside
    # it can never be generated, so they are left out: transformers accepts them and they never
    # fire, but its min-length processors index with them.
    eos = gen.eos_token_id
    if eos is None:
        eos = [i for i in as_sequence(config.eos_token_id) if i < V] or None
    eos_ids = as_sequence(eos)
    pad = gen.pad_token_id
    if pad is None and config.pad_token_id is not None and config.pad_token_id < V:
        pad = config.pad_token_id
    if pad is None and eos_ids:
        pad = eos_ids[0]  # transformers: "Setting `pad_token_id` to `eos_token_id`"
    bos = bos_token_id(config, gen)
    for name, ids in (("eos_token_id", eos_ids), ("pad_token_id", as_sequence(pad))):
        out = [i for i in ids if not 0 <= i < V]
        if out:
            raise ValueError(
                f"`{name}` must lie in [0, vocab_size={V}). Received: {name}="
                f"{ids[0] if len(ids) == 1 else list(ids)!r}. Pass an id of this model's vocabulary "
                "(GPT-2's <|endoftext|> is 50256).")
    bad_words = tuple(tuple(int(i) for i in w) for w in (gen.bad_words_ids or ()))
    out = sorted({i for w in bad_words for i in w if i >= V})
    if out:
        raise ValueError(f"`bad_words_ids` must hold ids in [0, vocab_size={V}). Received "
                         f"out-of-range ids {out[:5]}.")
    # transformers' NoBadWordsLogitsProcessor never bans an eos id on its own.
    bad_words = tuple(w for w in bad_words if not (len(w) == 1 and w[0] in eos_ids))

    if gen.max_new_tokens is not None:
        max_new = gen.max_new_tokens
    elif gen.max_length is not None:
        max_new = gen.max_length - prompt_length
        if max_new < 1:
            # transformers warns and still takes one step: its loop checks the length after it.
            logger.warning("`max_length`=%d is not longer than the prompt (%d tokens); one token is "
                           "generated. Set `max_new_tokens` instead.", gen.max_length, prompt_length)
            max_new = 1
    else:  # the default: 20 new tokens, capped at the position table (transformers)
        max_new = max(min(DEFAULTS["max_length"] + prompt_length, config.n_positions) - prompt_length, 1)
    if prompt_length + max_new > config.n_positions:
        raise ValueError(
            f"prompt length {prompt_length} + max_new_tokens {max_new} = {prompt_length + max_new} "
            f"exceeds the model's n_positions={config.n_positions}. Lower `max_new_tokens` (or "
            "`max_length`) or truncate the prompt.")
    if gen.min_new_tokens is not None:
        min_length = prompt_length + gen.min_new_tokens
    else:
        min_length = pick("min_length")

    stop = gen.stop_strings
    stop_strings = () if stop is None else ((stop,) if isinstance(stop, str) else tuple(stop))
    if stop_strings and not has_tokenizer:
        raise ValueError("`stop_strings` needs `tokenizer=` to turn tokens into text (as in "
                         f"transformers). Received: stop_strings={list(stop_strings)!r}, tokenizer=None.")
    nb = pick("num_beams")
    output_scores, output_logits = pick("output_scores"), pick("output_logits")
    return GenerationPlan(
        batch_size=batch_size, prompt_length=prompt_length, max_new_tokens=max_new,
        min_length=min_length, do_sample=pick("do_sample"), temperature=float(pick("temperature")),
        top_k=pick("top_k"), top_p=float(pick("top_p")),
        min_p=None if gen.min_p is None else float(gen.min_p), typical_p=float(pick("typical_p")),
        repetition_penalty=float(pick("repetition_penalty")),
        no_repeat_ngram_size=pick("no_repeat_ngram_size"), bad_words_ids=bad_words,
        num_beams=nb, length_penalty=float(pick("length_penalty")),
        early_stopping=pick("early_stopping"), num_return_sequences=pick("num_return_sequences"),
        eos_token_ids=eos_ids, pad_token_id=-1 if pad is None else pad, bos_token_id=bos,
        stop_strings=stop_strings, output_scores=output_scores, output_logits=output_logits,
        return_dict_in_generate=pick("return_dict_in_generate"), seed=gen.seed, vocab_size=V)


def check_streamer(streamer: Any, plan: GenerationPlan) -> None:
    """A streamer has transformers' protocol (`put`, `end`) and is not used with beams."""
    if streamer is None:
        return
    if not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise TypeError("`streamer` must have `put(value)` and `end()` methods, like transformers' "
                        f"TextStreamer. Received: {type(streamer).__name__}.")
    check_streaming(plan)


def check_streaming(plan: GenerationPlan) -> None:
    """Streaming (a streamer, or a backend's step iterator) is greedy or sampled decoding only."""
    if plan.num_beams > 1:
        raise ValueError("`streamer` cannot be used with beam search (num_beams > 1), as in "
                         f"transformers. Received: num_beams={plan.num_beams}.")


def start_ids(plan_bos: int | None, vocab_size: int) -> list[list[int]]:
    """The prompt when `input_ids` is None: one row holding `bos_token_id` (transformers)."""
    if plan_bos is None:
        raise ValueError("`input_ids` is None and there is no `bos_token_id` to start from. Pass "
                         "input_ids, or set bos_token_id in the generation or model config.")
    if not 0 <= plan_bos < vocab_size:
        raise ValueError(f"`bos_token_id` must lie in [0, vocab_size={vocab_size}). Received: "
                         f"bos_token_id={plan_bos}.")
    return [[plan_bos]]


def bos_token_id(config: GPT2Config, gen: GenerationConfig) -> int | None:
    """The call's bos id, else the model config's when it lies in the vocabulary."""
    if gen.bos_token_id is not None:
        return gen.bos_token_id
    bos = config.bos_token_id
    return bos if bos is not None and bos < config.vocab_size else None


def checkpoint_files_of(model: Any) -> dict[str, str]:
    """What a backend's `save_pretrained` adds to the weights: `generation_config.json` for a
    model that generates (transformers writes it when `can_generate()`), else nothing."""
    gen = getattr(model, "generation_config", None)
    if not callable(getattr(model, "generate", None)) or gen is None:
        return {}
    return gen.checkpoint_files()


def field_table_markdown() -> str:
    """The README's table of fields, defaults and meanings (kept in sync by a test)."""
    rows = ["| field | default when unset | meaning |", "|---|---|---|"]
    for f in FIELDS:
        rows.append(f"| `{f.name}` | `{f.default!r}` | {f.doc} |")
    return "\n".join(rows)


def as_sequence(value: int | Sequence[int] | None) -> tuple[int, ...]:
    """One id, several, or None, as a tuple of Python ints."""
    if value is None:
        return ()
    return (int(value),) if _is_int(value) else tuple(int(i) for i in value)
