"""Shared configs and checks for the Keras tests."""

from __future__ import annotations

import numpy as np
from keras import ops

from gpt2_core import GPT2Config

# Tiny configs covering every option the spec defines.
CONFIGS = {
    "base": GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                       pad_token_id=0, eos_token_id=100, bos_token_id=100),
    "untied_scaled": GPT2Config(vocab_size=97, n_positions=40, n_embd=48, n_layer=3, n_head=3,
                                n_inner=72, tie_word_embeddings=False,
                                scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True,
                                activation_function="gelu_fast", layer_norm_epsilon=1e-3,
                                pad_token_id=0, eos_token_id=96, bos_token_id=96),
    "no_scale_relu": GPT2Config(vocab_size=64, n_positions=24, n_embd=16, n_layer=2, n_head=2,
                                scale_attn_weights=False, activation_function="quick_gelu",
                                pad_token_id=0, eos_token_id=63, bos_token_id=63),
}


def to_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def assert_close(name: str, got, want, atol: float, rtol: float = 0.0) -> None:
    """Report the max abs diff, where it is, and the first differing pairs."""
    got, want = to_np(got).astype(np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != {want.shape}")
    diff = np.abs(got - want)
    bad = diff > atol + rtol * np.abs(want)
    if bad.any() or not np.isfinite(got).all() == np.isfinite(want).all():
        idx = np.unravel_index(np.nanargmax(diff), diff.shape)
        pairs = list(zip(got[bad].ravel()[:4], want[bad].ravel()[:4]))
        raise AssertionError(f"{name}: max |diff| {diff.max():.3g} at {idx}; first pairs {pairs}")


def batch(config: GPT2Config, B: int = 3, T: int = 9, seed: int = 0):
    """Random ids and a mask with left padding in row 0 and right padding in row 1."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, (B, T)).astype(np.int32)
    mask = np.ones((B, T), np.int32)
    mask[0, :3] = 0
    mask[1, -2:] = 0
    return ids, mask


def byte_vocabulary(merges: tuple[str, ...] = ("t h", "th e", "Ġ t", "a t")):
    """A tiny byte-level BPE vocabulary (the 256 byte symbols, a few merges, `<|endoftext|>`
    last) and its merge rules: a tokenizer for models of ~260 ids."""
    from gpt2_tokenizer import bytes_to_unicode

    vocab = {c: i for i, (_, c) in enumerate(sorted(bytes_to_unicode().items()))}
    for rule in merges:
        vocab[rule.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, list(merges)
