"""Argument rules every backend's public boundary applies: label ranges and cache shapes.

Written once here, in NumPy and plain shape arithmetic; each backend passes host values (only
when they are concrete: traced values cannot be inspected) or the static shapes of its tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpt2_core.config import GPT2Config
from gpt2_core.constants import IGNORE_INDEX


def check_label_range(labels: Any, upper: int, name: str = "labels", bound: str = "vocab_size",
                      hint: str = "") -> None:
    """Raise `ValueError` unless every label lies in [0, upper) or equals -100.

    The rule of `torch.nn.CrossEntropyLoss` (ignore_index=-100), which every transformers GPT-2
    head with class labels uses: an id outside it is an index error on CPU, a device assert on
    GPU, and a silent NaN or clamped loss in JAX.

    Args:
        labels: host values (NumPy array, list) or None (nothing to check).
        upper: the number of classes (`vocab_size`, `num_labels`, the number of choices).
        name: the argument, as the user spelled it.
        bound: what `upper` is called, for the message.
        hint: a sentence appended to the message (where a wrong config is the likelier fix).
    """
    if labels is None:
        return
    labels = np.asarray(labels)
    if not labels.size or not np.issubdtype(labels.dtype, np.integer):
        return  # float targets (regression, multi-label) have no range; their heads say so
    bad = ((labels < 0) | (labels >= upper)) & (labels != IGNORE_INDEX)
    if not bad.any():
        return
    values = sorted(set(labels[bad].tolist()))
    shown = ", ".join(map(str, values[:5])) + (", ..." if len(values) > 5 else "")
    raise ValueError(
        f"`{name}` must lie in [0, {bound}={upper}) or be {IGNORE_INDEX} (skipped by the loss). "
        f"Received out-of-range values [{shown}] at {int(bad.sum())} of {labels.size} positions. "
        f"Pass values below {upper}, or {IGNORE_INDEX} where the loss should skip a position."
        + (f" {hint}" if hint else ""))


NUM_LABELS_HINT = ("If these classes are right, build the model with a config whose "
                   "`num_labels` covers them.")


def classification_problem(config: GPT2Config, integer_labels: bool) -> str:
    """The sequence-classification loss transformers picks: `config.problem_type`, else
    regression for one label, single-label classification for integer labels, multi-label
    otherwise (modeling_gpt2.py, `GPT2ForSequenceClassification.forward`)."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    return "single_label_classification" if integer_labels else "multi_label_classification"


def check_past_shapes(config: GPT2Config, pairs: Any, batch: int | None,
                      length_name: str = "past") -> int | None:
    """Check the per-layer `(key, value)` shapes of `past_key_values`; return the past length.

    Every key and value must be (batch, n_head, past, head_dim) with one past length for all
    layers: a value shorter than its key would otherwise be sliced or broadcast into wrong
    logits, and other shapes reach the framework's internals as raw errors. Dimensions that are
    None (unknown while tracing) are not compared.

    Shapes: pairs L x ((B, nh, S_past, hs), (B, nh, S_past, hs)).

    Args:
        pairs: per-layer pairs of arrays or tensors (anything with a `.shape`, or nested lists).
        batch: the rows of the new input, or None when unknown.
        length_name: how the third axis is named in the message ("past", or "max_length" for a
            preallocated cache).
    """
    if not isinstance(pairs, Sequence) or isinstance(pairs, (str, bytes)):
        raise ValueError(f"`past_key_values` must be a sequence of per-layer (key, value) pairs. "
                         f"Received: {type(pairs).__name__}. Pass the `past_key_values` returned "
                         "by the previous call unchanged.")
    if len(pairs) != config.n_layer:
        raise ValueError(f"`past_key_values` must hold one (key, value) pair per layer "
                         f"(n_layer={config.n_layer}). Received {len(pairs)} entries. Pass the "
                         "`past_key_values` returned by the previous call unchanged.")
    shapes = [_pair_shapes(i, pair) for i, pair in enumerate(pairs)]
    past = shapes[0][0][2] if len(shapes[0][0]) == 4 else None
    want = (batch, config.n_head, past, config.head_dim)
    for i, pair in enumerate(shapes):
        for part, shape in zip(("key", "value"), pair):
            if len(shape) != 4 or any(w is not None and s is not None and w != s
                                      for w, s in zip(want, shape)):
                raise ValueError(
                    f"`past_key_values[{i}]` {part} must have shape (batch={batch}, n_head="
                    f"{config.n_head}, {length_name}={past}, head_dim={config.head_dim}), with one "
                    f"{length_name} length for every key and value. Received shape {shape}. Pass "
                    "the `past_key_values` returned by the previous call unchanged.")
    return past


def _pair_shapes(i: int, pair: Any) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
    try:
        key, value = pair
    except (TypeError, ValueError):
        raise ValueError(f"`past_key_values[{i}]` must be a (key, value) pair. Received: "
                         f"{type(pair).__name__}"
                         f"{f' of length {len(pair)}' if hasattr(pair, '__len__') else ''}. Pass "
                         "the `past_key_values` returned by the previous call unchanged.") from None
    return _shape(key), _shape(value)


def _shape(x: Any) -> tuple[int | None, ...]:
    """The dimensions of an array or tensor (nested lists too); None where symbolic."""
    return tuple(_dim(d) for d in (x.shape if hasattr(x, "shape") else np.shape(x)))


def _dim(d: Any) -> int | None:
    try:
        return int(d)
    except (TypeError, ValueError):  # None or a symbolic dimension while tracing
        return None
