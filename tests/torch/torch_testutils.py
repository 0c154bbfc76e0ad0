"""Shared test helpers: tiny configs covering every option, checkpoints, transformers oracle."""

from __future__ import annotations

import logging

import numpy as np
import torch

from gpt2_core import GPT2Config, random_params, save_pretrained

torch.set_num_threads(2)
logging.getLogger("transformers").setLevel(logging.ERROR)

# Each config exercises options the others leave at their defaults. eos/bos sit inside the
# tiny vocabularies so transformers accepts them.
SMALL = dict(n_positions=32, bos_token_id=1, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0,
             attn_pdrop=0.0, summary_first_dropout=0.0)
CONFIGS = {
    "default": GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, **SMALL),
    "untied_gelu_exact_inner": GPT2Config(
        vocab_size=89, n_embd=24, n_layer=3, n_head=3, n_inner=40, activation_function="gelu",
        tie_word_embeddings=False, layer_norm_epsilon=1e-3, **SMALL),
    "scaling_flags_upcast": GPT2Config(
        vocab_size=101, n_embd=32, n_layer=3, n_head=2, scale_attn_by_inverse_layer_idx=True,
        reorder_and_upcast_attn=True, activation_function="quick_gelu", **SMALL),
    "unscaled_relu": GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=4,
                                scale_attn_weights=False, activation_function="relu", **SMALL),
    "gelu_fast": GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2,
                            activation_function="gelu_fast", **SMALL),
    "silu": GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, activation_function="silu",
                       **SMALL),
    "tanh": GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, activation_function="tanh",
                       **SMALL),
}


def write_checkpoint(path, config: GPT2Config, head: str = "lm", seed: int = 7, **kw):
    params = random_params(config, seed=seed, head=head)
    save_pretrained(path, config, params, **kw)
    return params


def random_ids(config: GPT2Config, shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab_size, shape)


def hf_model(path, cls_name: str = "GPT2LMHeadModel", impl: str = "eager"):
    import transformers

    return getattr(transformers, cls_name).from_pretrained(path, attn_implementation=impl).eval()


def hf_cache(cache):
    """transformers' DynamicCache -> per-layer (key, value) tuples."""
    return tuple((layer.keys, layer.values) for layer in cache.layers)
