"""Shared fixtures. Conformance runs at `jax_default_matmul_precision="highest"` (on CPU float32
matmuls are full precision anyway; on GPU/TPU the default would use TF32/bf16 passes)."""

import jax
import numpy as np
import pytest

pytest.importorskip("flax")
jax.config.update("jax_default_matmul_precision", "highest")

import gpt2_core  # noqa: E402
from gpt2_core import GPT2Config  # noqa: E402

TINY = dict(vocab_size=96, n_positions=48, n_embd=32, n_layer=2, n_head=4)
CONFIGS = {
    "base": GPT2Config(**TINY),
    "flags": GPT2Config(**TINY, scale_attn_by_inverse_layer_idx=True, n_inner=48,
                        activation_function="gelu_fast", layer_norm_epsilon=1e-3),
    "untied_upcast": GPT2Config(**{**TINY, "n_layer": 3}, tie_word_embeddings=False,
                                reorder_and_upcast_attn=True, scale_attn_weights=False,
                                activation_function="quick_gelu"),
    "relu": GPT2Config(**TINY, activation_function="relu"),
}


@pytest.fixture(params=sorted(CONFIGS))
def config(request):
    return CONFIGS[request.param]


def checkpoint(tmp_path, config, head="lm", seed=0, scale=0.2):
    """A saved checkpoint with every tensor random; returns (dir, params)."""
    params = gpt2_core.random_params(config, seed, head=head, scale=scale)
    gpt2_core.save_pretrained(tmp_path, config, params)
    return str(tmp_path), params


def random_ids(config, shape, seed=0, low=0):
    return np.random.default_rng(seed).integers(low, config.vocab_size, shape)


class Recorder:
    """A streamer (the `put`/`end` protocol of transformers' streamers) that keeps what it gets."""

    def __init__(self):
        self.values, self.ended = [], 0

    def put(self, value):
        assert not self.ended
        self.values.append(np.asarray(value))

    def end(self):
        self.ended += 1
