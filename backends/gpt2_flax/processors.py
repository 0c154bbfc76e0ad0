"""`gpt2_core.sampling`'s logits processors in JAX, shape-static so they run inside the compiled
decode loop. Same rules, same order (Hugging Face's); tests check them on the same logits.

Shapes: scores (B, V) float; ids (B, S) int, the sequence buffer; `start`/`end` (scalars) bound
the slots that hold the sequence so far (prompt included), `ids[:, start:end]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gpt2_core.sampling import SamplingConfig

Array = jax.Array
NEG_INF = -jnp.inf  # gpt2_core.sampling.FILTER_VALUE


def _slots(ids: Array, start, end) -> Array:
    """(B, S) bool: slots inside [start, end)."""
    s = jnp.arange(ids.shape[1])
    return jnp.broadcast_to((s >= start) & (s < end), ids.shape)


def _presence(ids: Array, flags: Array, V: int) -> Array:
    """(B, V) bool: token v is at a flagged slot of row b."""
    B = ids.shape[0]
    hit = jnp.zeros((B, V), jnp.int32).at[jnp.arange(B)[:, None], ids].max(flags.astype(jnp.int32))
    return hit > 0


def repetition_penalty(scores: Array, ids: Array, start, end, penalty: float) -> Array:
    seen = _presence(ids, _slots(ids, start, end), scores.shape[-1])
    return jnp.where(seen, jnp.where(scores < 0, scores * penalty, scores / penalty), scores)


def no_repeat_ngram(scores: Array, ids: Array, start, end, n: int) -> Array:
    """Ban every token that would complete an n-gram already in `ids[:, start:end]`."""
    B, S = ids.shape
    if S < n:
        return scores
    windows = S - n + 1
    match = jnp.ones((B, windows), bool)
    for j in range(n - 1):  # the window's first n-1 tokens equal the last n-1 of the sequence
        tail = jax.lax.dynamic_slice_in_dim(ids, jnp.maximum(end - n + 1 + j, 0), 1, axis=1)
        match = match & (ids[:, j:j + windows] == tail)
    i = jnp.arange(windows)
    match = match & (i >= start) & (i <= end - n)
    banned = _presence(ids[:, n - 1:], match, scores.shape[-1])
    return jnp.where(banned, NEG_INF, scores)


def min_new_tokens(scores: Array, new_tokens, minimum: int, eos_token_ids: tuple[int, ...]
                   ) -> Array:
    if not minimum or not eos_token_ids:
        return scores
    eos = jnp.zeros(scores.shape[-1], bool).at[jnp.asarray(eos_token_ids)].set(True)
    return jnp.where(eos & (new_tokens < minimum), NEG_INF, scores)


def top_k(scores: Array, k: int) -> Array:
    k = min(max(k, 1), scores.shape[-1])
    kth = jax.lax.top_k(scores, k)[0][:, -1:]
    return jnp.where(scores < kth, NEG_INF, scores)


def top_p(scores: Array, p: float, min_tokens_to_keep: int = 1) -> Array:
    order = jnp.argsort(scores, axis=-1, stable=True)  # ascending, as gpt2_core
    sorted_scores = jnp.take_along_axis(scores, order, axis=-1)
    probs = jax.nn.softmax(sorted_scores.astype(jnp.float32), axis=-1)
    remove_sorted = jnp.cumsum(probs, axis=-1) <= 1.0 - p
    remove_sorted = remove_sorted.at[:, -min_tokens_to_keep:].set(False)
    rows = jnp.arange(scores.shape[0])[:, None]
    remove = jnp.zeros_like(remove_sorted).at[rows, order].set(remove_sorted)
    return jnp.where(remove, NEG_INF, scores)


def process(scores: Array, ids: Array, start, end, cfg: SamplingConfig, new_tokens,
            eos_token_ids: tuple[int, ...]) -> Array:
    """`gpt2_core.sampling.process`: penalties, then (when sampling) the warpers."""
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, ids, start, end, cfg.repetition_penalty)
    if cfg.no_repeat_ngram_size:
        scores = no_repeat_ngram(scores, ids, start, end, cfg.no_repeat_ngram_size)
    if cfg.min_new_tokens:
        scores = min_new_tokens(scores, new_tokens, cfg.min_new_tokens, eos_token_ids)
    if cfg.do_sample:
        if cfg.temperature != 1.0:
            scores = scores / cfg.temperature
        if cfg.top_k is not None:
            scores = top_k(scores, cfg.top_k)
        if cfg.top_p is not None and cfg.top_p < 1.0:
            scores = top_p(scores, cfg.top_p)
    return scores
