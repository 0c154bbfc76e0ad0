"""`gpt2_core.threefry` in JAX: Threefry-2x32 (20 rounds) in uint32, so seeded sampling draws the
same noise bits as the NumPy reference and the other backends.

The key is two uint32 words `(seed >> 32, seed & 0xFFFFFFFF)` (`key_words`), traced in the
compiled loop, so a new seed never retraces it. Counter words `(step, row * V + token)`: uint32
multiply-add wraps mod 2**32, exactly the reference's `& 0xFFFFFFFF`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_core import threefry as spec

Array = jax.Array


def key_words(seed: int) -> Array:
    """(2,) uint32: the key words of a 64-bit seed (validated by the spec)."""
    return jnp.asarray(np.asarray(spec.key_words(seed), np.uint32))


def _rotl(x: Array, r: int) -> Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """Threefry-2x32, 20 rounds: key (2,) uint32, counter words x0, x1 uint32 (broadcast)."""
    k0, k1 = key[0], key[1]
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(spec.KS_PARITY))
    x0 = jnp.asarray(x0, jnp.uint32) + ks[0]
    x1 = jnp.asarray(x1, jnp.uint32) + ks[1]
    for i in range(5):
        for r in spec.ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r)
            x1 = x1 ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def bits_to_uniform(bits: Array) -> Array:
    """uint32 -> float32 in [tiny, 1): the top 23 bits as a mantissa in [1, 2), minus 1."""
    one = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32)
    return jnp.maximum(one - np.float32(1.0), np.float32(spec.TINY))


def uniform_rows(key: Array, step: Array | int, rows: Array, vocab_size: int) -> Array:
    """(R, V) float32 uniforms of decoding step `step` for the expanded-batch rows `rows` (R,)."""
    counter = (jnp.asarray(rows, jnp.uint32)[:, None] * np.uint32(vocab_size)
               + jnp.arange(vocab_size, dtype=jnp.uint32)[None, :])  # wraps mod 2**32
    step = np.uint32(step & spec.MASK32) if isinstance(step, int) else jnp.asarray(step).astype(jnp.uint32)
    step_word = jnp.broadcast_to(step, counter.shape)
    x0, _ = threefry2x32(key, step_word, counter)
    return bits_to_uniform(x0)


def uniform(key: Array, step: Array | int, rows: int, vocab_size: int) -> Array:
    """(rows, V) float32: `gpt2_core.threefry.uniform` bit for bit."""
    return uniform_rows(key, step, jnp.arange(rows, dtype=jnp.uint32), vocab_size)


def gumbel(key: Array, step: Array | int, rows: int, vocab_size: int) -> Array:
    """(rows, V) float32 Gumbel(0, 1) noise, `-log(-log(u))`."""
    return -jnp.log(-jnp.log(uniform(key, step, rows, vocab_size)))
