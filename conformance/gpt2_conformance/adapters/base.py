"""The adapter contract and the output conversion the framework adapters share.

An adapter has five methods (`load`, `forward`, `grads`, `generate`, `save`) and, where the
backend has them, `process` (one logits processor) and `tokenize`. Everything crosses the
boundary as NumPy: inputs are NumPy arrays, outputs are dicts keyed by tensor path:

    logits, loss, last_hidden_state, mc_logits, start_logits, end_logits,
    hidden.{i} (i in 0..L), cache.{i}.key, cache.{i}.value, attn.{i}, grad.{canonical name}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

Arrays = dict[str, np.ndarray]


class Adapter(Protocol):
    name: str

    def load(self, path: str, head: str, dtype: str = "float32") -> Any:
        """The backend's model class for `head` from a Hugging Face GPT-2 directory, computing
        in `dtype` (float32, bfloat16 or float16; the reference ignores it: float64)."""

    def forward(self, model: Any, inputs: Arrays, outputs: tuple[str, ...],
                past: Any = None) -> tuple[Arrays, Any]:
        """One call. Returns the requested tensors and the backend's own `past_key_values`
        (fed back unchanged in the next incremental call)."""

    def grads(self, model: Any, inputs: Arrays) -> Arrays:
        """`grad.{canonical name}` -> d(loss)/d(parameter) in the canonical layout."""

    def generate(self, model: Any, inputs: Arrays, max_new_tokens: int) -> np.ndarray:
        """Greedy ids, prompt included: (B, T + new)."""

    def generation(self, model: Any, inputs: Arrays, kwargs: dict[str, Any], *, tokenizer: Any,
                   streamer: Any, compiled: bool = False) -> Arrays:
        """`model.generate(input_ids, attention_mask, tokenizer=, streamer=, **kwargs)` as
        `generation_outputs` arrays. `compiled`: run the backend's compiled loop where it has
        an eager one too (a case marked `compiled`)."""

    def save(self, model: Any, path: str) -> None:
        """`save_pretrained(path)`."""


HEAD_CLASSES = {
    "base": "GPT2Model", "lm": "GPT2LMHeadModel", "double_heads": "GPT2DoubleHeadsModel",
    "sequence_classification": "GPT2ForSequenceClassification",
    "token_classification": "GPT2ForTokenClassification",
    "question_answering": "GPT2ForQuestionAnswering",
}

FIELDS = ("logits", "loss", "last_hidden_state", "mc_logits", "start_logits", "end_logits")


def widen(a: np.ndarray) -> np.ndarray:
    """float16 and bfloat16 arrays -> float32 (exact), so every result file holds plain NumPy
    dtypes: `np.savez` would write ml_dtypes' bfloat16 as opaque bytes ('V2')."""
    a = np.asarray(a)
    if a.dtype == np.float16 or a.dtype.kind == "V" or a.dtype.name == "bfloat16":
        return a.astype(np.float32)
    return a


def output_arrays(out: Any, outputs: tuple[str, ...], to_numpy: Callable[[Any], np.ndarray]
                  ) -> Arrays:
    """An HF-style output record -> tensor paths. `outputs` selects the forward quantities."""
    to_numpy = _widened(to_numpy)
    arrays: Arrays = {}
    for field in FIELDS:
        value = getattr(out, field, None)
        if value is None or (field == "logits" and "logits" not in outputs):
            continue
        if field == "loss" and "loss" not in outputs:
            continue
        arrays[field] = to_numpy(value)
    if "hidden" in outputs:
        for i, h in enumerate(out.hidden_states):
            arrays[f"hidden.{i}"] = to_numpy(h)
    if "attn" in outputs:
        for i, a in enumerate(out.attentions):
            arrays[f"attn.{i}"] = to_numpy(a)
    if "cache" in outputs:
        arrays.update(cache_arrays(out.past_key_values, to_numpy))
    return arrays


def generation_outputs(out: Any, to_numpy: Callable[[Any], np.ndarray]) -> Arrays:
    """`generate`'s result (the sequences, or a `GenerateDecoderOnlyOutput` /
    `GenerateBeamDecoderOnlyOutput`) -> tensor paths: ids under `generated`, scores under
    `logits.` (the logits tolerance row)."""
    if not hasattr(out, "sequences"):
        return {"generated": np.asarray(to_numpy(out), np.int64)}
    arrays: Arrays = {"generated": np.asarray(to_numpy(out.sequences), np.int64)}
    for field in ("scores", "logits"):
        for i, step in enumerate(getattr(out, field, None) or ()):
            arrays[f"logits.{field}.{i}"] = widen(to_numpy(step))
    if getattr(out, "sequences_scores", None) is not None:
        arrays["logits.sequences_scores"] = widen(to_numpy(out.sequences_scores))
    if getattr(out, "beam_indices", None) is not None:
        arrays["generated.beam_indices"] = np.asarray(to_numpy(out.beam_indices), np.int64)
    return arrays


def _widened(to_numpy: Callable[[Any], np.ndarray]) -> Callable[[Any], np.ndarray]:
    return lambda t: widen(to_numpy(t))


def cache_arrays(past: Any, to_numpy: Callable[[Any], np.ndarray]) -> Arrays:
    to_numpy = _widened(to_numpy)
    arrays: Arrays = {}
    for i, (k, v) in enumerate(past):
        arrays[f"cache.{i}.key"] = to_numpy(k)
        arrays[f"cache.{i}.value"] = to_numpy(v)
    return arrays


def call_kwargs(inputs: Arrays, outputs: tuple[str, ...], head: str) -> dict[str, Any]:
    """The model keyword arguments for a recipe's inputs (only those present). The
    question-answering model has no cache (as in transformers)."""
    kw: dict[str, Any] = {k: v for k, v in inputs.items()}
    kw["output_hidden_states"] = "hidden" in outputs
    kw["output_attentions"] = "attn" in outputs
    if head != "question_answering":
        kw["use_cache"] = True
    return kw


def accepted(fn: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `fn` declares (heads differ: the QA model takes no cache)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params}
