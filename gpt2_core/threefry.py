"""Counter-based random numbers for sampling: the same bits in NumPy, torch, TensorFlow and JAX.

Sampling draws its noise from Threefry-2x32 with 20 rounds (Salmon et al. 2011, the generator
behind `jax.random`), keyed by the seed and counted by (step, row * V + token). Noise is a pure
function of (seed, step, row, token), so every framework computes bit-identical uniforms and a
seed gives the same text in PyTorch, TensorFlow and JAX (unless two candidates tie within
float32 rounding of the scores).

- key words: `(seed >> 32, seed & 0xFFFFFFFF)`
- counter words: `(step, row * V + token)` (mod 2**32), `row` indexing the expanded batch
  (`B * num_return_sequences` or `B * num_beams`)
- uniform: the first output word `x`, `bitcast_float32((x >> 9) | 0x3F800000) - 1`, clamped to
  `[tiny, 1)` (float32's smallest normal), so `-log(-log(u))` is finite
- sampling is Gumbel-max: `argmax(scores + gumbel)`; beam sampling is Gumbel-top-k

Ports: uint32 arithmetic in TensorFlow and JAX; int64 masked with 0xFFFFFFFF in torch (torch has
no uint32 add or shifts on CPU). `tests/flax` checks this file against
`jax.extend.random.threefry_2x32` bit for bit.
"""

from __future__ import annotations

import numpy as np

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
KS_PARITY = 0x1BD11BDA  # Threefry's key-schedule constant
MASK32 = 0xFFFFFFFF
TINY = np.finfo(np.float32).tiny


def key_words(seed: int) -> tuple[int, int]:
    """The two 32-bit key words of a 64-bit seed."""
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"`seed` must be an integer in [0, 2**64). Received: seed={seed!r}.")
    return (seed >> 32) & MASK32, seed & MASK32


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key: tuple[int, int], x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32, 20 rounds, on uint32 counter words (broadcast together)."""
    with np.errstate(over="ignore"):
        k0, k1 = np.uint32(key[0]), np.uint32(key[1])
        ks = (k0, k1, np.uint32(k0 ^ k1 ^ np.uint32(KS_PARITY)))
        x0 = np.asarray(x0, np.uint32) + ks[0]
        x1 = np.asarray(x1, np.uint32) + ks[1]
        for i in range(5):
            for r in ROTATIONS[i % 2]:
                x0 = x0 + x1
                x1 = _rotl(x1, r)
                x1 = x1 ^ x0
            x0 = x0 + ks[(i + 1) % 3]
            x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def bits_to_uniform(bits: np.ndarray) -> np.ndarray:
    """uint32 -> float32 in [tiny, 1): the top 23 bits as a mantissa in [1, 2), minus 1."""
    u = ((bits >> np.uint32(9)) | np.uint32(0x3F800000)).view(np.float32) - np.float32(1.0)
    return np.maximum(u, TINY)


def uniform(seed: int, step: int, rows: int, vocab_size: int) -> np.ndarray:
    """(rows, V) float32 uniforms of decoding step `step` (0-based)."""
    counter = (np.arange(rows, dtype=np.uint64)[:, None] * np.uint64(vocab_size)
               + np.arange(vocab_size, dtype=np.uint64)[None, :]) & np.uint64(MASK32)
    x0, _ = threefry2x32(key_words(seed), np.full(counter.shape, step & MASK32, np.uint32),
                         counter.astype(np.uint32))
    return bits_to_uniform(x0)


def gumbel(seed: int, step: int, rows: int, vocab_size: int) -> np.ndarray:
    """(rows, V) float32 Gumbel(0, 1) noise: `-log(-log(u))`, computed in float32."""
    u = uniform(seed, step, rows, vocab_size)
    return -np.log(-np.log(u))
