"""Every conformance case, declared once with a unique name.

A case names a model (a config plus a head, saved as a random checkpoint, or the user's
`--model` directory), an input recipe, and what to compute (`kind`). Every subject (the float64
reference, and each framework in its own process) runs the same cases from this module, so the
inputs are identical by construction: each recipe is a pure function of the config and a seed.

Kinds:
    forward      one call; logits, hidden states, every layer's cache, attentions, loss, head outputs
    incremental  prefill then one token per call with the returned cache; logits and final cache
                 must equal one full forward
    chunked      the same with several multi-token chunks
    grads        d(causal-LM loss)/d(every parameter); compared pairwise between frameworks
    generate     greedy token ids
    generation   `generate(**kwargs)` against the reference `gpt2_core.generation.generate` (and
                 transformers where `oracles` names it): tokens, scores, beam records, errors
    processor    one logits processor on fixed scores, against `gpt2_core.sampling`
    tokenizer    token ids of fixed texts
    roundtrip    hub -> torch -> keras -> flax -> hub, tensors identical (run by the parent)
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from gpt2_core import GPT2Config
from gpt2_core.constants import IGNORE_INDEX

KINDS = ("forward", "incremental", "chunked", "grads", "generate", "generation", "processor",
         "tokenizer", "roundtrip")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A random checkpoint the parent writes once: `random_params(config, seed, head, scale)`."""

    config: GPT2Config
    head: str = "lm"
    seed: int = 0
    scale: float = 0.2


@dataclasses.dataclass(frozen=True)
class Case:
    """One named check.

    Attributes:
        name: unique; rows of the matrix, keys of exclusion files.
        kind: one of `KINDS`.
        model: key of the model it loads (`""` for processor and tokenizer cases).
        recipe: input recipe name (`RECIPES`), or the processor / text-set name.
        outputs: forward quantities to request: any of logits, hidden, cache, attn, loss.
        arg: kind-specific: chunk sizes, new tokens, processor argument.
        quick: part of the `--quick` subset.
        dtype: the precision the framework subjects run in (`LOW_PRECISION` for the reduced
            ones); the oracle stays float64 and the tolerance row is (quantity, dtype).
        oracles: subjects besides the reference that judge the case: ("transformers",) checks the
            reference itself against transformers' `generate`.
        compiled: one of the few generation cases compiled loops run (one shared static shape).
    """

    name: str
    kind: str
    model: str = ""
    recipe: str = "plain"
    outputs: tuple[str, ...] = ("logits", "hidden", "cache", "attn")
    arg: tuple = ()
    quick: bool = False
    dtype: str = "float32"
    oracles: tuple[str, ...] = ()
    compiled: bool = False


# Reduced-precision compute dtypes: each framework loads the model in it (torch: parameters
# and compute; Keras: the `mixed_*` policy; Flax: `dtype` and `param_dtype`).
LOW_PRECISION = ("bfloat16", "float16")


# ---- models --------------------------------------------------------------------------------
def _tiny(**kw) -> GPT2Config:
    base = dict(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    return GPT2Config(**{**base, **kw})


# Each config turns on options the others leave at their defaults.
TINY_MODELS: dict[str, ModelSpec] = {
    # n_positions 80: room for an 8-token prompt plus 64 greedy steps.
    "base": ModelSpec(_tiny(n_positions=80)),
    "gelu_exact_inner_untied_eps": ModelSpec(_tiny(
        vocab_size=89, n_embd=24, n_layer=3, n_head=3, n_inner=40, activation_function="gelu",
        tie_word_embeddings=False, layer_norm_epsilon=1e-3)),
    "inverse_layer_scale_reorder": ModelSpec(_tiny(
        vocab_size=101, n_layer=3, n_head=2, scale_attn_by_inverse_layer_idx=True,
        reorder_and_upcast_attn=True, activation_function="quick_gelu")),
    "unscaled_relu": ModelSpec(_tiny(vocab_size=64, n_embd=16, scale_attn_weights=False,
                                     activation_function="relu")),
    "gelu_fast": ModelSpec(_tiny(n_embd=16, n_layer=1, n_head=2, activation_function="gelu_fast")),
    "gelu_pytorch_tanh": ModelSpec(_tiny(n_embd=16, n_layer=1, n_head=2,
                                         activation_function="gelu_pytorch_tanh")),
    "silu": ModelSpec(_tiny(n_embd=16, n_layer=1, n_head=2, activation_function="silu")),
    "tanh": ModelSpec(_tiny(n_embd=16, n_layer=1, n_head=2, activation_function="tanh")),
}
_HEADS_CONFIG = _tiny(num_labels=3, pad_token_id=0)
for _head in ("base", "sequence_classification", "token_classification", "question_answering"):
    TINY_MODELS[f"head_{_head}"] = ModelSpec(_HEADS_CONFIG, head=_head)
# The double-heads model's summary projects to one score per choice (Hugging Face sets
# num_labels=1 for it).
TINY_MODELS["head_double_heads"] = ModelSpec(_tiny(num_labels=1), head="double_heads")

# GPT-2 small's shapes; weights N(0, 0.02) in every tensor (gains 1 + N(0, 0.02)): realistic
# magnitudes, and no zero bias or unit gain to hide a mapping bug.
SMALL_MODELS: dict[str, ModelSpec] = {
    "gpt2_small_random": ModelSpec(GPT2Config.from_preset("gpt2"), scale=0.02),
}

USER_MODEL = "user"  # the `--model PATH` directory


# ---- input recipes -------------------------------------------------------------------------
def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _ids(config: GPT2Config, shape, *key) -> np.ndarray:
    return _rng("ids", config.vocab_size, shape, *key).integers(0, config.vocab_size, shape,
                                                                 dtype=np.int64)


def _mask(B: int, T: int, pads: list[int], side: str) -> np.ndarray:
    mask = np.ones((B, T), np.int64)
    for b, n in enumerate(pads):
        if n:
            if side == "left":
                mask[b, :n] = 0
            else:
                mask[b, T - n:] = 0
    return mask


def make_inputs(config: GPT2Config, recipe: str, T: int = 12) -> dict[str, np.ndarray]:
    """The model inputs of a recipe: input_ids (B, T) and optionally attention_mask,
    position_ids, token_type_ids, labels, mc_token_ids. Deterministic in (config, recipe, T)."""
    T = min(T, config.n_positions)
    if recipe == "plain":
        return {"input_ids": _ids(config, (2, T), recipe)}
    if recipe == "unpadded":
        return {"input_ids": _ids(config, (2, T), recipe), "attention_mask": np.ones((2, T), np.int64)}
    if recipe in ("left_padded", "right_padded"):
        side = recipe.split("_")[0]
        return {"input_ids": _ids(config, (3, T), recipe),
                "attention_mask": _mask(3, T, [0, T // 4, T // 2], side)}
    if recipe == "token_types":
        return {"input_ids": _ids(config, (2, T), recipe),
                "token_type_ids": _ids(config, (2, T), recipe, "types")}
    if recipe == "positions":
        start = min(5, config.n_positions - T)
        return {"input_ids": _ids(config, (2, T), recipe),
                "position_ids": np.broadcast_to(np.arange(start, start + T), (2, T)).copy()}
    if recipe == "labels":
        inputs = make_inputs(config, "left_padded", T)
        labels = inputs["input_ids"].copy()
        labels[inputs["attention_mask"] == 0] = IGNORE_INDEX
        labels[:, 3] = IGNORE_INDEX
        return {**inputs, "labels": labels}
    if recipe == "labels_all_ignored":  # loss is NaN (0 / 0) in every implementation
        ids = _ids(config, (2, T), recipe)
        return {"input_ids": ids, "labels": np.full_like(ids, IGNORE_INDEX)}
    if recipe == "choices":  # double heads: (B, n_choices, T), each choice summarised at its end
        ids = _ids(config, (2, 3, T), recipe)
        mc = np.array([[T - 1, T - 3, T - 2], [T - 2, T - 1, T - 4]], np.int64)
        return {"input_ids": ids, "mc_token_ids": mc}
    if recipe == "pad_token_tail":  # sequence classification pools the last non-pad token
        ids = _ids(config, (3, T), recipe)
        ids[ids == config.pad_token_id] = 1
        mask = _mask(3, T, [0, 2, 5], "right")
        ids[mask == 0] = config.pad_token_id
        return {"input_ids": ids, "attention_mask": mask}
    raise ValueError(f"Unknown input `recipe`. Received: recipe={recipe!r}.")


PROMPT_RECIPE = "prompt"


def make_prompt(config: GPT2Config) -> dict[str, np.ndarray]:
    """A left-padded batch of 8-token prompts for greedy generation."""
    return {"input_ids": _ids(config, (2, 8), PROMPT_RECIPE),
            "attention_mask": _mask(2, 8, [0, 3], "left")}


# ---- processors and tokenizer texts ----------------------------------------------------------
PROCESSORS: dict[str, tuple] = {  # processor -> arguments tried
    "temperature": (0.7, 1.3),
    "top_k": (1, 5, 40),
    "top_p": (0.1, 0.8, 0.95),
    "repetition_penalty": (1.3, 0.8),
    "no_repeat_ngram": (1, 2, 3),
}


def processor_inputs(vocab_size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """(scores (3, V) float32, input_ids (3, 16) with repeats so that n-grams recur)."""
    scores = _rng("scores").normal(0.0, 3.0, (3, vocab_size)).astype(np.float32)
    ids = _rng("history").integers(0, 12, (3, 16), dtype=np.int64)  # few distinct: repeats
    return scores, ids


TEXTS: dict[str, tuple[str, ...]] = {
    "ascii": ("Hello world", "GPT-2 was released in 2019.", "  leading spaces", "trailing  ",
              "it's  I'll we've they'd don't", "a\nb\n\nc\t\td", "1234567890 3.14159"),
    "unicode": ("naïve café — “quotes”", "日本語のテキスト", "emoji 🤖🚀 done", "Ωμέγα and ✓",
                "zero\u200bwidth", "mixed 中文 and English   spaces\n"),
}


# ---- generation ------------------------------------------------------------------------------
# Ids the "base" model's greedy path emits early (`make_prompt`): row 0 picks 2 at step 1 and row
# 1 at step 8; 57 and 32 end rows at steps 9 and 1. Random weights rarely pick a given id, so the
# eos cases use these; tests/conformance checks they still end rows early.
EOS = 2
EOS_PAIR = [57, 32]
# Stop strings the greedy text holds (ids 0-93 are the printable ASCII bytes '!'..'~'):
# row 0 starts "Y###", row 1 "zAAA".
STOP_STRINGS = ["##", "AAA"]
GENERATION_MODELS: dict[str, ModelSpec] = {
    # pad and eos from the model config (not the call)
    "gen_config_pad": ModelSpec(_tiny(n_positions=80, eos_token_id=EOS, pad_token_id=7, bos_token_id=1)),
}
TINY_MODELS.update(GENERATION_MODELS)

HF = ("transformers",)


def _gen(name: str, model: str = "base", oracles: tuple[str, ...] = HF, compiled: bool = False,
         quick: bool = False, recipe: str = PROMPT_RECIPE, **kwargs) -> Case:
    return Case(f"generation.{name}", "generation", model, recipe, arg=tuple(sorted(kwargs.items())),
                quick=quick, oracles=oracles, compiled=compiled)


def generation_cases() -> list[Case]:
    """The generation section. Greedy, beams and every processor under greedy decoding are also
    checked against transformers; sampling only against the reference (transformers samples
    with `torch.multinomial`). `compiled` marks the cases compiled loops run: one static shape
    (prompt (2, 8), 16 new tokens)."""
    scores = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)
    return [
        _gen("greedy.eos_pad_arg", compiled=True, quick=True, max_new_tokens=16, eos_token_id=EOS,
             pad_token_id=5),
        _gen("greedy.several_eos", max_new_tokens=16, eos_token_id=EOS_PAIR, pad_token_id=0),
        _gen("greedy.max_length", max_length=20, eos_token_id=EOS_PAIR),
        _gen("greedy.max_new_tokens_wins", max_length=12, max_new_tokens=10),
        _gen("greedy.min_new_tokens_eos", compiled=True, max_new_tokens=16, min_new_tokens=6,
             eos_token_id=EOS),
        _gen("greedy.min_length_eos", max_new_tokens=12, min_length=14, eos_token_id=EOS),
        _gen("greedy.pad_from_config", model="gen_config_pad", max_new_tokens=16),
        _gen("greedy.repetition_penalty", max_new_tokens=16, repetition_penalty=1.5),
        _gen("greedy.repetition_penalty_below_one", max_new_tokens=16, repetition_penalty=0.7),
        # the left padding holds the ids the model picks most: penalising it changes the tokens
        _gen("greedy.repetition_penalty_skips_padding", recipe="padding_holds_favourites",
             max_new_tokens=16, repetition_penalty=3.0),
        _gen("greedy.no_repeat_ngram", max_new_tokens=16, no_repeat_ngram_size=2),
        _gen("greedy.bad_words", max_new_tokens=16, bad_words_ids=[[92], [2, 2], [EOS]],
             eos_token_id=EOS),
        _gen("greedy.processors_combined", compiled=True, max_new_tokens=16,
             repetition_penalty=1.3, no_repeat_ngram_size=3, bad_words_ids=[[56, 2]],
             min_new_tokens=3, eos_token_id=EOS),
        _gen("greedy.scores", max_new_tokens=10, eos_token_id=EOS, **scores),
        _gen("greedy.64_steps", quick=True, max_new_tokens=64),
        _gen("beam.default", quick=True, num_beams=3, max_new_tokens=10, eos_token_id=EOS),
        _gen("beam.early_true_short_penalty_two_returned", num_beams=4, max_new_tokens=10,
             early_stopping=True, length_penalty=0.5, num_return_sequences=2, eos_token_id=EOS),
        _gen("beam.early_never_long_penalty_several_eos", num_beams=3, max_new_tokens=10,
             early_stopping="never", length_penalty=1.5, eos_token_id=EOS_PAIR),
        _gen("beam.early_false_negative_penalty", num_beams=2, max_new_tokens=10,
             length_penalty=-1.0, eos_token_id=[EOS, 56]),
        _gen("beam.scores", num_beams=3, max_new_tokens=8, eos_token_id=EOS, **scores),
        _gen("beam.processors", num_beams=2, max_new_tokens=10, repetition_penalty=1.4,
             no_repeat_ngram_size=2, eos_token_id=EOS),
        # sampling: the reference only (Threefry noise, the same bits in every framework)
        _gen("sample.64_steps", oracles=(), compiled=True, quick=True, do_sample=True, seed=0,
             max_new_tokens=64),
        _gen("sample.warpers", oracles=(), compiled=True, do_sample=True, seed=1,
             max_new_tokens=16, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2,
             eos_token_id=EOS),
        _gen("sample.min_p_typical", oracles=(), do_sample=True, seed=2, max_new_tokens=16,
             min_p=0.05, typical_p=0.9, temperature=1.3),
        _gen("sample.num_return_sequences", oracles=(), do_sample=True, seed=2**40 + 3,
             max_new_tokens=16, num_return_sequences=3, eos_token_id=EOS, **scores),
        _gen("sample.no_top_k_default", oracles=(), do_sample=True, seed=5, max_new_tokens=16,
             top_k=0),
        _gen("beam_sample.default", oracles=(), do_sample=True, seed=4, num_beams=3,
             max_new_tokens=10, eos_token_id=EOS, num_return_sequences=2, **scores),
        _gen("stop_strings.greedy", oracles=(), compiled=True, max_new_tokens=16,
             stop_strings=STOP_STRINGS, eos_token_id=EOS_PAIR[0]),
        _gen("stop_strings.beam", oracles=(), num_beams=2, max_new_tokens=10, stop_strings=["Y#"]),
        # without eos, a row a stop string ended keeps its real tokens (transformers pads only
        # when eos ends rows)
        _gen("stop_strings.no_eos", oracles=(), max_new_tokens=12, stop_strings=["##"]),
        _gen("streamer.greedy", oracles=(), max_new_tokens=12, eos_token_id=EOS, stream=True),
        _gen("streamer.sample", oracles=(), do_sample=True, seed=9, max_new_tokens=12, stream=True),
        # errors: every subject must raise the same exception type
        _gen("error.max_new_tokens_zero", max_new_tokens=0),
        _gen("error.eos_out_of_range", oracles=(), max_new_tokens=4, eos_token_id=999),
        _gen("error.num_beams_zero", oracles=(), max_new_tokens=4, num_beams=0),
        _gen("error.greedy_several_returned", max_new_tokens=4, num_return_sequences=2),
        _gen("error.empty_prompt", oracles=(), recipe="empty_prompt", max_new_tokens=4),
    ]


def make_generation_prompt(config: GPT2Config, recipe: str) -> dict[str, np.ndarray]:
    if recipe == "empty_prompt":
        return {"input_ids": np.zeros((1, 0), np.int64), "attention_mask": np.zeros((1, 0), np.int64)}
    prompt = make_prompt(config)
    if recipe == "padding_holds_favourites":  # row 1's three padding slots hold 2, 32 and 56
        prompt["input_ids"][1, :3] = [2, 32, 56]
    return prompt


# ---- the case lists ------------------------------------------------------------------------
ALL_OUTPUTS = ("logits", "hidden", "cache", "attn")


def _model_cases(prefix: str, model: str, spec_head: str, full: bool, small: bool) -> list[Case]:
    p = f"{prefix}.{model}"
    if spec_head != "lm":
        recipe = {"double_heads": "choices", "sequence_classification": "pad_token_tail"}.get(
            spec_head, "left_padded")
        return [Case(f"{p}.forward.{recipe}", "forward", model, recipe, ("logits", "hidden"))]
    if small:
        return [
            Case(f"{p}.forward.left_padded", "forward", model, "left_padded",
                 ("logits", "hidden", "cache"), arg=(16,), quick=True),
            Case(f"{p}.loss.labels", "forward", model, "labels", ("logits", "loss"), arg=(16,)),
            Case(f"{p}.incremental.left_padded", "incremental", model, "left_padded",
                 ("logits", "cache"), arg=(16, 8)),
            Case(f"{p}.generate.greedy16", "generate", model, PROMPT_RECIPE, arg=(16,)),
        ]
    cases = [
        Case(f"{p}.forward.left_padded", "forward", model, "left_padded", quick=True),
        Case(f"{p}.grads.labels", "grads", model, "labels", quick=model == "base"),
    ]
    if not full:
        return cases
    cases += [
        Case(f"{p}.forward.plain", "forward", model, "plain"),
        Case(f"{p}.forward.unpadded", "forward", model, "unpadded"),
        Case(f"{p}.forward.right_padded", "forward", model, "right_padded"),
        Case(f"{p}.forward.token_types", "forward", model, "token_types"),
        Case(f"{p}.forward.positions", "forward", model, "positions"),
        Case(f"{p}.loss.labels", "forward", model, "labels", ("logits", "loss"), quick=True),
        Case(f"{p}.loss.labels_all_ignored", "forward", model, "labels_all_ignored", ("loss",)),
        Case(f"{p}.incremental.unpadded", "incremental", model, "unpadded", ("logits", "cache"),
             arg=(12, 4)),
        Case(f"{p}.incremental.left_padded", "incremental", model, "left_padded",
             ("logits", "cache"), arg=(12, 4), quick=True),
        Case(f"{p}.chunked.left_padded", "chunked", model, "left_padded", ("logits", "cache"),
             arg=(12, 5, 3, 4)),
        Case(f"{p}.generate.greedy64", "generate", model, PROMPT_RECIPE, arg=(64,), quick=True),
    ]
    return cases


def tiny_cases() -> list[Case]:
    cases: list[Case] = []
    for name, spec in TINY_MODELS.items():
        with_grads = name in ("base", "gelu_exact_inner_untied_eps", "inverse_layer_scale_reorder")
        model_cases = _model_cases("tiny", name, spec.head, full=name == "base", small=False)
        cases += [c for c in model_cases if c.kind != "grads" or with_grads]
    # The float64 oracle against each framework in reduced precision. Named with the dtype
    # after the model, so that `--only tiny.base.forward.left_padded` still picks one case.
    for dtype in LOW_PRECISION:
        cases.append(Case(f"tiny.base.{dtype}.forward.left_padded", "forward", "base",
                          "left_padded", ("logits", "hidden", "cache"), dtype=dtype))
    for proc, args in PROCESSORS.items():
        for a in args:
            cases.append(Case(f"processor.{proc}.{a}", "processor", "", proc, arg=(a,),
                              quick=a == args[0]))
    for texts in TEXTS:
        cases.append(Case(f"tokenizer.{texts}", "tokenizer", "", texts, quick=True))
    cases += generation_cases()
    cases.append(Case("tiny.gelu_exact_inner_untied_eps.roundtrip.hub_torch_keras_flax_hub",
                      "roundtrip", "gelu_exact_inner_untied_eps", quick=True))
    return cases


def small_cases() -> list[Case]:
    return _model_cases("small", "gpt2_small_random", "lm", full=False, small=True)


def user_cases(n_positions: int) -> list[Case]:
    """Cases for a user's checkpoint (`--model PATH`): real weights, so the small-model set plus
    the caches' incremental path; sequence lengths fit `n_positions`."""
    p = f"model.{USER_MODEL}"
    return [
        Case(f"{p}.forward.left_padded", "forward", USER_MODEL, "left_padded",
             ("logits", "hidden", "cache"), arg=(16,), quick=True),
        Case(f"{p}.forward.right_padded", "forward", USER_MODEL, "right_padded",
             ("logits", "cache"), arg=(16,)),
        Case(f"{p}.loss.labels", "forward", USER_MODEL, "labels", ("logits", "loss"), arg=(16,)),
        Case(f"{p}.incremental.left_padded", "incremental", USER_MODEL, "left_padded",
             ("logits", "cache"), arg=(16, 8), quick=True),
        Case(f"{p}.generate.greedy32", "generate", USER_MODEL, PROMPT_RECIPE,
             arg=(min(32, n_positions - 8),), quick=True),
    ]


def select(suites: list[str], quick: bool = False, user_n_positions: int | None = None,
           only: str | None = None) -> list[Case]:
    """The cases of the named suites (`tiny`, `small`, `model`), optionally the quick subset or
    those whose name contains `only`. Names are checked unique."""
    cases: list[Case] = []
    for suite in suites:
        if suite == "tiny":
            cases += tiny_cases()
        elif suite == "small":
            cases += small_cases()
        elif suite == "model":
            if user_n_positions is None:
                raise ValueError("The `model` suite needs `--model PATH`.")
            cases += user_cases(user_n_positions)
        else:
            raise ValueError(f"Unknown suite. Received: {suite!r}. Expected tiny, small or model.")
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Case names must be unique. Duplicated: {dupes}.")
    if quick:
        cases = [c for c in cases if c.quick]
    if only:
        cases = [c for c in cases if any(part in c.name for part in only.split(","))]
    return cases


def model_specs() -> dict[str, ModelSpec]:
    return {**TINY_MODELS, **SMALL_MODELS}


def seq_len(case: Case) -> int:
    return case.arg[0] if case.kind in ("forward", "incremental", "chunked") and case.arg else 12
