"""`GPT2Config`: the model's hyperparameters, keyed exactly like Hugging Face's GPT-2 `config.json`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from gpt2_core._io import atomic_write_text
from gpt2_core.activations import ACTIVATIONS

SUMMARY_TYPES = ("last", "first", "mean", "cls_index", "attn")
# The keys transformers' tools (Trainer, pipelines, peft) assign on `model.config` at run time:
# the only assignable fields; everything else is frozen.
RUNTIME_KEYS = ("use_cache", "output_hidden_states", "output_attentions", "return_dict")
_RUNTIME_DEFAULTS = {"output_hidden_states": False, "output_attentions": False, "return_dict": True}


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """GPT-2 hyperparameters. Field names are the keys of Hugging Face's `config.json`.

    Unknown keys of a loaded `config.json` are kept in `extra` and written back unchanged, so a
    hub config survives a load/save round trip. Derived values are properties.

    Frozen, except the runtime keys `use_cache`, `output_hidden_states`, `output_attentions` and
    `return_dict` (`RUNTIME_KEYS`): transformers' Trainer and pipelines assign them, so they
    may be assigned too (`config.use_cache = False`), checked on assignment. They are the
    defaults of the models' forward arguments of the same names, and leave the hash alone.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    summary_type: str = "cls_index"
    summary_use_proj: bool = True
    summary_activation: str | None = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    use_cache: bool = True
    output_hidden_states: bool = False
    output_attentions: bool = False
    return_dict: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True
    num_labels: int = 2
    problem_type: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # transformers' config protocol, read by its tools and peft (a class constant, not a field)
    model_type: ClassVar[str] = "gpt2"

    def __post_init__(self) -> None:
        problems = list(_validate(self))
        if problems:
            raise ValueError("Invalid GPT2Config: " + " ".join(problems))

    def __hash__(self) -> int:  # dict-valued fields: hash the canonical JSON instead
        data = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}
        return hash(json.dumps(data, sort_keys=True))

    # ---- derived values -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        """MLP width: `n_inner`, or 4 * `n_embd` when `n_inner` is None."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def attn_scale(self, layer_idx: int) -> float:
        """The factor attention scores are multiplied by in layer `layer_idx` (0-based)."""
        scale = 1.0
        if self.scale_attn_weights:
            scale /= math.sqrt(self.head_dim)
        if self.scale_attn_by_inverse_layer_idx:
            scale /= float(layer_idx + 1)
        return scale

    @property
    def residual_init_std(self) -> float:
        """Init std of the residual projections (`attn.c_proj`, `mlp.c_proj`), GPT-2 paper 2.3."""
        return self.initializer_range / math.sqrt(2 * self.n_layer)

    def get_text_config(self, *args: Any, **kwargs: Any) -> GPT2Config:
        """transformers' protocol for multimodal configs: GPT-2's config is its own text config."""
        return self

    def replace(self, **changes: Any) -> GPT2Config:
        return dataclasses.replace(self, **changes)

    # ---- JSON ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GPT2Config:
        """Build a config from a `config.json` mapping; unknown keys go to `extra`."""
        if not isinstance(data, Mapping):
            raise TypeError(f"`data` must be a mapping. Received: {type(data).__name__}.")
        model_type = data.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ValueError(
                f"`config.json` describes a {model_type!r} model, not GPT-2. Received: "
                f"model_type={model_type!r}. Expected model_type='gpt2'."
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "num_labels"}
        kwargs: dict[str, Any] = {k: data[k] for k in known if k in data}
        extra = {k: v for k, v in data.items() if k not in known}
        # Legacy checkpoints carry `n_ctx` (== n_positions); it stays in `extra` for round trips.
        if "n_positions" not in data and "n_ctx" in data:
            kwargs["n_positions"] = data["n_ctx"]
        extra.pop("model_type", None)
        if "id2label" in data:
            kwargs["num_labels"] = len(data["id2label"])
            # Default label maps are derived from num_labels; only custom ones stay in `extra`.
            if data["id2label"] == _default_id2label(len(data["id2label"])):
                extra.pop("id2label")
                if data.get("label2id") == _default_label2id(len(data["id2label"])):
                    extra.pop("label2id", None)
        elif "num_labels" in data:
            kwargs["num_labels"] = data["num_labels"]
            extra.pop("num_labels", None)
        if isinstance(kwargs.get("eos_token_id"), list):
            kwargs["eos_token_id"] = list(kwargs["eos_token_id"])
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"model_type": "gpt2"}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "num_labels"):
                continue
            if f.name in _RUNTIME_DEFAULTS and getattr(self, f.name) == _RUNTIME_DEFAULTS[f.name]:
                continue  # runtime keys are written only when set (hub files carry none)
            data[f.name] = getattr(self, f.name)
        if "id2label" not in self.extra:
            data["id2label"] = _default_id2label(self.num_labels)
            data["label2id"] = _default_label2id(self.num_labels)
        data.update(self.extra)
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> GPT2Config:
        """Read a `config.json` file (or a directory holding one)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No GPT-2 config at {path!r}. Expected a Hugging Face `config.json` "
                "(a model directory holds it next to `model.safetensors`)."
            )
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"`{path}` is not valid JSON: {e}.") from e
        return cls.from_dict(data)

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write `config.json` atomically (a directory path gets `config.json` inside it)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        atomic_write_text(path, self.to_json_string())

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPT2Config:
        """One of OpenAI's released sizes: `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, or
        `distilgpt2`."""
        if name not in PRESETS:
            raise ValueError(
                f"Unknown preset `name`. Received: name={name!r}. Expected one of {sorted(PRESETS)}."
            )
        return cls(**{**PRESETS[name], **overrides})


def _runtime_setattr(self: GPT2Config, name: str, value: Any) -> None:
    if name not in RUNTIME_KEYS:
        raise dataclasses.FrozenInstanceError(
            f"cannot assign to field {name!r}: GPT2Config is frozen except its runtime keys "
            f"{RUNTIME_KEYS}. Make a new config instead: config.replace({name}=...).")
    problem = _runtime_problem(name, value)
    if problem:
        raise TypeError(problem)
    object.__setattr__(self, name, value)


# A frozen dataclass may not define `__setattr__` in its body; installed afterwards, it keeps
# `frozen=True`'s generated `__init__`, `__eq__` and `replace` and opens the runtime keys only.
GPT2Config.__setattr__ = _runtime_setattr  # type: ignore[method-assign]


def _runtime_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, bool):
        return (f"`{name}` must be a bool (True or False). Received: {name}={value!r} "
                f"({type(value).__name__}).")
    return None


PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),
    "gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20),
    "gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25),
    "distilgpt2": dict(n_embd=768, n_layer=6, n_head=12),
}


def _default_id2label(n: int) -> dict[str, str]:
    return {str(i): f"LABEL_{i}" for i in range(n)}


def _default_label2id(n: int) -> dict[str, int]:
    return {f"LABEL_{i}": i for i in range(n)}


def _positive_int(c: GPT2Config, name: str) -> str | None:
    v = getattr(c, name)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        return f"`{name}` must be a positive integer. Received: {name}={v!r}."
    return None


def _validate(c: GPT2Config):
    for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        problem = _positive_int(c, name)
        if problem:
            yield problem
    if isinstance(c.n_embd, int) and isinstance(c.n_head, int) and c.n_head > 0:
        if c.n_embd % c.n_head:
            yield (
                f"`n_embd` must be divisible by `n_head`. Received: n_embd={c.n_embd}, "
                f"n_head={c.n_head}."
            )
    if c.n_inner is not None and _positive_int(c, "n_inner"):
        yield f"`n_inner` must be None or a positive integer. Received: n_inner={c.n_inner!r}."
    if c.activation_function not in ACTIVATIONS:
        yield (
            f"`activation_function` must be one of {sorted(ACTIVATIONS)}. "
            f"Received: activation_function={c.activation_function!r}."
        )
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"):
        v = getattr(c, name)
        if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            yield f"`{name}` must be a probability in [0, 1). Received: {name}={v!r}."
    eps = c.layer_norm_epsilon
    if not isinstance(eps, (int, float)) or not eps > 0:
        yield f"`layer_norm_epsilon` must be > 0. Received: layer_norm_epsilon={eps!r}."
    if not isinstance(c.initializer_range, (int, float)) or not c.initializer_range > 0:
        yield f"`initializer_range` must be > 0. Received: initializer_range={c.initializer_range!r}."
    if c.summary_type not in SUMMARY_TYPES:
        yield (
            f"`summary_type` must be one of {SUMMARY_TYPES}. Received: "
            f"summary_type={c.summary_type!r}."
        )
    if c.summary_activation not in (None, "tanh", "linear"):
        yield (
            "`summary_activation` must be None, 'tanh' or 'linear'. Received: "
            f"summary_activation={c.summary_activation!r}."
        )
    for name in RUNTIME_KEYS:
        problem = _runtime_problem(name, getattr(c, name))
        if problem:
            yield problem
    for name in ("bos_token_id", "pad_token_id"):
        v = getattr(c, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            yield f"`{name}` must be None or a non-negative integer. Received: {name}={v!r}."
    eos = c.eos_token_id
    eos_list = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if any(not isinstance(e, int) or isinstance(e, bool) or e < 0 for e in eos_list):
        yield (
            "`eos_token_id` must be None, a non-negative integer or a list of them. "
            f"Received: eos_token_id={eos!r}."
        )
    if isinstance(c.num_labels, bool) or not isinstance(c.num_labels, int) or c.num_labels < 1:
        yield f"`num_labels` must be a positive integer. Received: num_labels={c.num_labels!r}."
    problem_types = (None, "regression", "single_label_classification",
                     "multi_label_classification")
    if c.problem_type not in problem_types:
        yield (
            f"`problem_type` must be one of {problem_types}. Received: "
            f"problem_type={c.problem_type!r}."
        )
