"""The activation functions a GPT-2 `config.json` may name, each defined once with its formula.

GPT-2's own is `gelu_new`: the tanh approximation of GELU (Hendrycks & Gimpel 2016, eq. 2),
which OpenAI's checkpoints were trained with. The exact erf GELU (`gelu`) is a different
function; using it with GPT-2 weights shifts logits by about 1e-3.

Backends map each name to their own ops and pass the constants below explicitly: framework
defaults differ (e.g. `tf.nn.gelu` and `jax.nn.gelu` default to different forms).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

GELU_TANH_COEFF = 0.044715
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# `gelu_fast` writes sqrt(2/pi) rounded to 10 digits; keep its literal to match checkpoints' code.
GELU_FAST_SQRT_2_OVER_PI = 0.7978845608
QUICK_GELU_ALPHA = 1.702

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Names: gelu_new, gelu_pytorch_tanh."""
    return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_COEFF * x**3)))


def gelu_fast(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2)))."""
    return 0.5 * x * (1.0 + np.tanh(x * GELU_FAST_SQRT_2_OVER_PI * (1.0 + GELU_TANH_COEFF * x * x)))


def gelu_exact(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + erf(x / sqrt(2))). Name: gelu."""
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype))).astype(x.dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form of 1 / (1 + exp(-x))


def quick_gelu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(1.702 x)."""
    return x * sigmoid(QUICK_GELU_ALPHA * x)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x). Names: silu, swish."""
    return x * sigmoid(x)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_fast,
    "gelu": gelu_exact,
    "quick_gelu": quick_gelu,
    "relu": relu,
    "silu": silu,
    "swish": silu,
    "tanh": tanh,
}
"""Name in `config.activation_function` -> NumPy reference implementation."""

# The formula each name denotes, for backends that map names to their own ops.
ACTIVATION_KIND: dict[str, str] = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_fast",
    "gelu": "gelu_exact",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}
