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
    all masked (query positions that are padding) finite: their softmax is uniform."""
    return float(np.finfo(dtype).min)
