"""The heads' losses in `keras.ops`, with PyTorch's (and so Hugging Face's) semantics.

All are computed in float32 whatever the compute policy.
"""

from __future__ import annotations

from keras import ops

from gpt2_core.constants import IGNORE_INDEX


def cross_entropy(logits, labels, ignore_index: int | None = IGNORE_INDEX):
    """Mean cross-entropy over entries whose label is not `ignore_index`; NaN if none is kept
    (0 / 0, as `torch.nn.CrossEntropyLoss`).

    Shapes: logits (..., N), labels (...) int -> scalar.
    """
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "int32")
    keep = ops.ones_like(labels, "bool") if ignore_index is None else labels != ignore_index
    safe = ops.where(keep, labels, 0)
    logz = ops.logsumexp(logits, axis=-1)
    picked = ops.squeeze(ops.take_along_axis(logits, safe[..., None], axis=-1), -1)
    keep_f = ops.cast(keep, "float32")
    return ops.sum((logz - picked) * keep_f) / ops.sum(keep_f)


def causal_lm_loss(logits, labels):
    """Cross-entropy of logits[:, t] against labels[:, t + 1], skipping `-100`.

    Shapes: logits (..., T, V), labels (..., T) -> scalar.
    """
    return cross_entropy(logits[..., :-1, :], labels[..., 1:])


def mse(pred, target):
    return ops.mean(ops.square(ops.cast(pred, "float32") - ops.cast(target, "float32")))


def bce_with_logits(logits, targets):
    """Mean binary cross-entropy, overflow-free: max(x, 0) - x z + log(1 + exp(-|x|))."""
    x, z = ops.cast(logits, "float32"), ops.cast(targets, "float32")
    return ops.mean(ops.relu(x) - x * z + ops.log1p(ops.exp(-ops.abs(x))))
