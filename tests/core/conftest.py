"""Shared fixtures: tiny GPT-2 configs covering every option, random checkpoints on disk."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2_core import GPT2Config, random_params, save_pretrained

# Each config exercises options the others leave at their defaults.
CONFIGS = {
    "default": GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4),
    "untied_gelu_exact_inner": GPT2Config(
        vocab_size=89, n_positions=24, n_embd=24, n_layer=3, n_head=3, n_inner=40,
        activation_function="gelu", tie_word_embeddings=False, layer_norm_epsilon=1e-3),
    "scaling_flags": GPT2Config(
        vocab_size=101, n_positions=24, n_embd=32, n_layer=3, n_head=2,
        scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True,
        activation_function="quick_gelu"),
    "unscaled_relu": GPT2Config(
        vocab_size=64, n_positions=24, n_embd=16, n_layer=2, n_head=4, scale_attn_weights=False,
        activation_function="relu"),
    "gelu_fast": GPT2Config(vocab_size=50, n_positions=24, n_embd=16, n_layer=1, n_head=2,
                            activation_function="gelu_fast"),
    "silu": GPT2Config(vocab_size=50, n_positions=24, n_embd=16, n_layer=1, n_head=2,
                       activation_function="silu"),
    "tanh": GPT2Config(vocab_size=50, n_positions=24, n_embd=16, n_layer=1, n_head=2,
                       activation_function="tanh"),
}


@pytest.fixture(params=sorted(CONFIGS))
def config(request) -> GPT2Config:
    return CONFIGS[request.param]


@pytest.fixture
def checkpoint(tmp_path, config):
    params = random_params(config, seed=7)
    save_pretrained(tmp_path, config, params)
    return tmp_path, config, params


def random_ids(config: GPT2Config, shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab_size, shape)
