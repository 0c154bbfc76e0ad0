"""`gpt2_core.threefry` in `keras.ops`: Threefry-2x32 noise, bit-identical to the NumPy spec on
every Keras backend, so a seed gives the same tokens in TensorFlow, JAX and PyTorch.

Words are uint32 on TensorFlow and JAX (wrapping arithmetic); the PyTorch backend has no uint32
add or shifts on CPU, so there they are int64 masked with 0xFFFFFFFF after every operation that
can leave 32 bits (`_wrap`). Traceable: it runs inside the compiled decode loops.

Shapes: N rows (the expanded batch), V vocabulary.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from gpt2_core.threefry import KS_PARITY, MASK32, ROTATIONS, TINY, key_words


def word_dtype() -> str:
    return "int64" if keras.backend.backend() == "torch" else "uint32"


def _wrap(x):
    """x mod 2**32 (a no-op on uint32 words)."""
    return ops.bitwise_and(x, MASK32) if word_dtype() == "int64" else x


def _word(v):
    return ops.convert_to_tensor(np.asarray(v, np.int64 if word_dtype() == "int64" else np.uint32))


def key_tensor(seed: int):
    """(2,) words of a 64-bit seed: the decode loops take the key as a tensor, so a new seed
    reuses the compiled function."""
    return _word(key_words(seed))


def _rotl(x, r: int):
    return ops.bitwise_or(_wrap(ops.left_shift(x, _word(r))), ops.right_shift(x, _word(32 - r)))


def threefry2x32(key, x0, x1):
    """Threefry-2x32, 20 rounds. key (2,) words; x0, x1 word tensors of one shape."""
    k0, k1 = key[0], key[1]
    ks = (k0, k1, ops.bitwise_xor(ops.bitwise_xor(k0, k1), _word(KS_PARITY)))
    x0, x1 = _wrap(x0 + ks[0]), _wrap(x1 + ks[1])
    for i in range(5):
        for r in ROTATIONS[i % 2]:
            x0 = _wrap(x0 + x1)
            x1 = ops.bitwise_xor(_rotl(x1, r), x0)
        x0 = _wrap(x0 + ks[(i + 1) % 3])
        x1 = _wrap(x1 + ks[(i + 2) % 3] + _word(i + 1))
    return x0, x1


def bits_to_uniform(bits):
    """Words -> float32 in [tiny, 1). The spec bitcasts `(bits >> 9) | 0x3F800000` (a float in
    [1, 2)) and subtracts 1; that equals `(bits >> 9) * 2**-23` exactly (23-bit integers and
    powers of two are exact in float32), which every backend computes without a bitcast."""
    mantissa = ops.cast(ops.right_shift(bits, _word(9)), "int32")
    return ops.maximum(ops.cast(mantissa, "float32") * (2.0 ** -23), float(TINY))


def uniform(key, step, rows: int, vocab_size: int, first_row: int = 0):
    """(rows, V) float32 uniforms of decoding step `step` (a scalar, 0-based), for the expanded
    rows `first_row`, ..., `first_row + rows - 1` (counter words `(step, row * V + token)`)."""
    if isinstance(rows, int):
        row = _word(np.arange(first_row, first_row + rows, dtype=np.uint64) & MASK32)
    else:  # a symbolic batch (the SavedModel signature)
        row = ops.cast(ops.arange(rows, dtype="int32"), word_dtype()) + _word(first_row & MASK32)
    if word_dtype() == "int64":
        counter = _wrap(row[:, None] * vocab_size + ops.arange(vocab_size, dtype="int64")[None, :])
    else:  # uint32 products and sums wrap mod 2**32 by themselves
        counter = row[:, None] * _word(vocab_size & MASK32) + _word(np.arange(vocab_size))[None, :]
    step = _word(step & MASK32) if isinstance(step, int) else _wrap(ops.cast(step, word_dtype()))
    x0 = ops.broadcast_to(step, ops.shape(counter))
    bits, _ = threefry2x32(key, x0, counter)
    return bits_to_uniform(bits)


def gumbel(key, step, rows: int, vocab_size: int):
    """(rows, V) float32 Gumbel(0, 1) noise, `-log(-log(u))`."""
    u = uniform(key, step, rows, vocab_size)
    return -ops.log(-ops.log(u))
