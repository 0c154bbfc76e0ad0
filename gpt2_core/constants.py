"""Numbers that define GPT-2 beyond its config. Backends import these; none trusts its framework's
defaults (LayerNorm epsilon defaults: torch 1e-5, Keras 1e-3, Flax NNX 1e-6; the epsilon itself
lives in `GPT2Config.layer_norm_epsilon`)."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100
"""Label value the causal-LM loss skips (Hugging Face's convention)."""


def mask_value(dtype: np.dtype | type) -> float:
    """Score given to masked attention positions before the softmax: the dtype's most negative
    finite value, as in Hugging Face's GPT-2. A finite value (not -inf) keeps rows whose keys are
    all masked (query positions that are padding) finite: their softmax is uniform.

    Accepts framework dtypes NumPy does not know by name (bfloat16: -3.3895e38)."""
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    if "bfloat16" in str(name):
        return BFLOAT16_MIN
    return float(np.finfo(dtype).min)


BFLOAT16_MIN = -3.3895313892515355e38
"""The most negative finite bfloat16: -(2 - 2^-7) * 2^127."""
