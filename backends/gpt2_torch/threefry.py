"""`gpt2_core.threefry` in torch: the same Threefry-2x32 bits, so a seed samples the same tokens
in every framework.

Words are held in int64 and masked with 0xFFFFFFFF (torch 2.13 has no uint32 add or shifts on
CPU): an add or a left shift only grows the bits above 32, which the mask drops, and every
intermediate stays below 2**63 (a 32-bit word shifted left by at most 29), so the masked int64
values are exactly the uint32 ones.

Shapes: rows N (the expanded batch), V vocabulary.
"""

from __future__ import annotations

import torch

from gpt2_core.threefry import KS_PARITY, MASK32, ROTATIONS, TINY, key_words

Word = int | torch.Tensor  # a 32-bit word: a Python int or an int64 tensor of values in [0, 2**32)


def threefry2x32(key: tuple[Word, Word], x0: torch.Tensor,
                 x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32, 20 rounds, on int64 tensors of 32-bit counter words (broadcast together).

    `key` words may be 0-d int64 tensors, so a compiled caller can change the seed without
    recompiling."""
    k0, k1 = key
    ks = (k0, k1, k0 ^ k1 ^ KS_PARITY)
    x0 = (x0 + ks[0]) & MASK32
    x1 = (x1 + ks[1]) & MASK32
    for i in range(5):
        for r in ROTATIONS[i % 2]:
            # x0 is masked once per 4 rounds (it stays below 2**36); x1 every round, as its
            # rotation must see exactly 32 bits. Fewer ops: small batches are dispatch-bound.
            x0 = x0 + x1
            x1 = (((x1 << r) | (x1 >> (32 - r))) ^ x0) & MASK32
        x0 = (x0 + ks[(i + 1) % 3]) & MASK32
        x1 = (x1 + ks[(i + 2) % 3] + (i + 1)) & MASK32
    return x0, x1


def bits_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """int64 words in [0, 2**32) -> float32 in [tiny, 1): the top 23 bits as a mantissa in [1, 2),
    minus 1. The or-ed word is below 2**31, so it fits an int32 to bitcast."""
    u = ((bits >> 9) | 0x3F800000).to(torch.int32).view(torch.float32) - 1.0
    return u.clamp_min(float(TINY))


def counters(rows: int, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(rows, V) int64 second counter words: `row * V + token` mod 2**32."""
    row = torch.arange(rows, dtype=torch.int64, device=device)[:, None] * vocab_size
    return (row + torch.arange(vocab_size, dtype=torch.int64, device=device)) & MASK32


def uniform(seed: int, step: Word, rows: int, vocab_size: int,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """(rows, V) float32 uniforms of decoding step `step` (0-based), `gpt2_core.threefry.uniform`
    bit for bit."""
    return uniform_at(key_words(seed), step, counters(rows, vocab_size, device))


def uniform_at(key: tuple[Word, Word], step: Word, counter: torch.Tensor) -> torch.Tensor:
    """Uniforms for precomputed `counters(...)` (the decode loop builds them once)."""
    x0, _ = threefry2x32(key, torch.zeros_like(counter) + (step & MASK32), counter)
    return bits_to_uniform(x0)


def gumbel_at(key: tuple[Word, Word], step: Word, counter: torch.Tensor) -> torch.Tensor:
    """(rows, V) float32 Gumbel(0, 1) noise `-log(-log(u))`, computed in float32."""
    return -torch.log(-torch.log(uniform_at(key, step, counter)))


def gumbel(seed: int, step: Word, rows: int, vocab_size: int,
           device: torch.device | str = "cpu") -> torch.Tensor:
    """`gpt2_core.threefry.gumbel` in torch."""
    return gumbel_at(key_words(seed), step, counters(rows, vocab_size, device))
