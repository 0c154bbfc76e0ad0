"""Parameter initialisation, seeded, in NumPy.

`init_params` is GPT-2's training init (Radford et al. 2019, sec. 2.3): every matrix and
embedding N(0, initializer_range), the residual projections N(0, initializer_range /
sqrt(2 n_layer)), biases 0, LayerNorm gains 1. `random_params` randomises every tensor
(gains and biases too) for parity tests, where a zero bias or unit gain would hide a bug.
"""

from __future__ import annotations

import numpy as np

from gpt2_core.config import GPT2Config
from gpt2_core.layout import weight_layout


def init_params(config: GPT2Config, seed: int = 0, head: str = "lm",
                dtype: type = np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for spec in weight_layout(config, head):
        if spec.init == "zeros":
            value = np.zeros(spec.shape)
        elif spec.init == "ones":
            value = np.ones(spec.shape)
        else:
            std = config.residual_init_std if spec.init == "residual" else config.initializer_range
            value = rng.normal(0.0, std, spec.shape)
        params[spec.name] = value.astype(dtype)
    return params


def random_params(config: GPT2Config, seed: int = 0, head: str = "lm", scale: float = 0.2,
                  dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Every tensor random: gains 1 + N(0, scale), biases and weights N(0, scale)."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for spec in weight_layout(config, head):
        value = rng.normal(0.0, scale, spec.shape)
        if spec.init == "ones":
            value += 1.0
        params[spec.name] = value.astype(dtype)
    return params
