"""`gpt2_core.sampling.PROCESSORS` in JAX, shape-static so they run inside the compiled decode loop.

The spec decides which processors run and in what order (`active_processors(plan)`); this module
supplies one JAX function per table row, under the row's name (`PROCESSORS`), each
`(scores, state, plan) -> scores`.

Shapes: scores (N, V) float32; `state.ids` (N, S) int, the sequence buffer, whose slots
`[start, end)` hold each row so far (its left padding, prompt and new tokens; the slots before
`start` are the bucket's filler, never read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gpt2_core.generation_config import GenerationPlan

Array = jax.Array
NEG_INF = -jnp.inf  # gpt2_core.sampling.FILTER_VALUE


class ProcessorState(NamedTuple):
    """`gpt2_core.sampling.ProcessorState` over the sequence buffer (all traced)."""

    ids: Array       # (N, S) int32: the sequence buffer
    start: Array     # () int32: first slot of the rows (the bucket's filler lies before)
    end: Array       # () int32: slots [start, end) hold each row so far
    padding: Array   # (N,) int32: each row's first attended slot (its left padding ends there)
    step: Array      # () int32: new tokens so far
    min_new: Array   # () int32: eos is banned while step < min_new (plan.min_length - T0)


def _slots(ids: Array, start, end) -> Array:
    """(N, S) bool: slots inside [start, end); `start` a scalar or (N,)."""
    s = jnp.arange(ids.shape[1])[None, :]
    return (s >= jnp.reshape(start, (-1, 1))) & (s < end)


def _presence(ids: Array, flags: Array, V: int) -> Array:
    """(N, V) bool: token v is at a flagged slot of row n."""
    N = ids.shape[0]
    hit = jnp.zeros((N, V), jnp.int32).at[jnp.arange(N)[:, None], ids].max(flags.astype(jnp.int32))
    return hit > 0


def _scatter_rows(values: Array, order: Array) -> Array:
    """Undo a per-row permutation: out[n, order[n, i]] = values[n, i]."""
    rows = jnp.arange(values.shape[0])[:, None]
    return jnp.zeros_like(values).at[rows, order].set(values)


def repetition_penalty(scores: Array, ids: Array, start, end, penalty: float) -> Array:
    """CTRL's penalty on every token at slots [start, end) of a row (`start` skips its padding)."""
    seen = _presence(ids, _slots(ids, start, end), scores.shape[-1])
    return jnp.where(seen, jnp.where(scores < 0, scores * penalty, scores / penalty), scores)


def no_repeat_ngram(scores: Array, ids: Array, start, end, n: int) -> Array:
    """Ban every token that would complete an n-gram already in `ids[:, start:end]`."""
    N, S = ids.shape
    if S < n:
        return scores
    windows = S - n + 1
    match = jnp.ones((N, windows), bool)
    for j in range(n - 1):  # the window's first n-1 tokens equal the last n-1 of the sequence
        tail = jax.lax.dynamic_slice_in_dim(ids, jnp.maximum(end - n + 1 + j, 0), 1, axis=1)
        match = match & (ids[:, j:j + windows] == tail)
    i = jnp.arange(windows)
    match = match & (i >= start) & (i <= end - n)
    banned = _presence(ids[:, n - 1:], match, scores.shape[-1])
    return jnp.where(banned, NEG_INF, scores)


def bad_words(scores: Array, ids: Array, start, end, words: tuple[tuple[int, ...], ...]) -> Array:
    """A word's last token is banned when the row ends with the word's other tokens."""
    for word in words:
        *prefix, last = word
        ban = jnp.ones((ids.shape[0],), bool)
        if prefix:
            p = len(prefix)
            tail = jax.lax.dynamic_slice_in_dim(ids, jnp.maximum(end - p, 0), p, axis=1)
            ban = (tail == jnp.asarray(prefix, ids.dtype)).all(-1) & (end - p >= start)
        scores = scores.at[:, last].set(jnp.where(ban, NEG_INF, scores[:, last]))
    return scores


def min_length(scores: Array, step, min_new, eos_token_ids: tuple[int, ...]) -> Array:
    """End-of-sequence ids are banned while step < min_new."""
    eos = jnp.zeros(scores.shape[-1], bool).at[jnp.asarray(eos_token_ids)].set(True)
    return jnp.where(eos & (step < min_new), NEG_INF, scores)


def top_k(scores: Array, k: int, min_tokens_to_keep: int = 1) -> Array:
    """Keep the tokens scoring >= the k-th best (ties at the boundary all kept)."""
    k = min(max(k, min_tokens_to_keep), scores.shape[-1])
    # the min of the k best, not `[:, -1:]`: XLA CPU turns a top_k followed by a slice into a
    # full sort of V (13 ms a step for GPT-2's vocabulary instead of 0.4 ms)
    kth = jax.lax.top_k(scores, k)[0].min(-1, keepdims=True)
    return jnp.where(scores < kth, NEG_INF, scores)


def top_p(scores: Array, p: float, min_tokens_to_keep: int = 1) -> Array:
    order = jnp.argsort(scores, axis=-1, stable=True)  # ascending, as gpt2_core
    probs = jax.nn.softmax(jnp.take_along_axis(scores, order, axis=-1), axis=-1)
    remove_sorted = jnp.cumsum(probs, axis=-1) <= 1.0 - p
    remove_sorted = remove_sorted.at[:, -min_tokens_to_keep:].set(False)
    return jnp.where(_scatter_rows(remove_sorted, order), NEG_INF, scores)


def _keep_best(remove: Array, scores: Array, n: int) -> Array:
    """`remove` with the n best-scoring tokens of each row cleared (ties to the lower index,
    as a stable descending sort)."""
    best = jax.lax.top_k(scores, n)[1]
    return remove.at[jnp.arange(scores.shape[0])[:, None], best].set(False)


def min_p(scores: Array, p: float, min_tokens_to_keep: int = 1) -> Array:
    probs = jax.nn.softmax(scores, axis=-1)
    remove = probs < p * probs.max(-1, keepdims=True)
    return jnp.where(_keep_best(remove, scores, min_tokens_to_keep), NEG_INF, scores)


def typical_p(scores: Array, mass: float, min_tokens_to_keep: int = 1) -> Array:
    logp = jax.nn.log_softmax(scores, axis=-1)
    p = jnp.exp(logp)
    ent = -jnp.nansum(logp * p, -1, keepdims=True)  # -inf * 0 terms are NaN: skipped
    shifted = jnp.abs(-logp - ent)
    order = jnp.argsort(shifted, axis=-1, stable=True)  # ascending
    sorted_shifted = jnp.take_along_axis(shifted, order, -1)
    cum = jnp.cumsum(jax.nn.softmax(jnp.take_along_axis(scores, order, -1), axis=-1), -1)
    last = jnp.minimum((cum < mass).sum(-1), scores.shape[-1] - 1)
    remove_sorted = sorted_shifted > jnp.take_along_axis(sorted_shifted, last[:, None], -1)
    remove_sorted = remove_sorted.at[:, :min_tokens_to_keep].set(False)
    return jnp.where(_scatter_rows(remove_sorted, order), NEG_INF, scores)


Fn = Callable[[Array, ProcessorState, GenerationPlan], Array]
PROCESSORS: dict[str, Fn] = {
    "repetition_penalty": lambda s, st, g: repetition_penalty(s, st.ids, st.padding, st.end,
                                                              g.repetition_penalty),
    "no_repeat_ngram_size": lambda s, st, g: no_repeat_ngram(s, st.ids, st.start, st.end,
                                                             g.no_repeat_ngram_size),
    "bad_words_ids": lambda s, st, g: bad_words(s, st.ids, st.start, st.end, g.bad_words_ids),
    "min_length": lambda s, st, g: min_length(s, st.step, st.min_new, g.eos_token_ids),
    "temperature": lambda s, st, g: s / g.temperature,
    "top_k": lambda s, st, g: top_k(s, g.top_k, g.min_tokens_to_keep),
    "top_p": lambda s, st, g: top_p(s, g.top_p, g.min_tokens_to_keep),
    "min_p": lambda s, st, g: min_p(s, g.min_p, g.min_tokens_to_keep),
    "typical_p": lambda s, st, g: typical_p(s, g.typical_p, g.min_tokens_to_keep),
}
"""One JAX function per row of `gpt2_core.sampling.PROCESSORS`, under the same name."""


def apply(scores: Array, state: ProcessorState, plan: GenerationPlan, names: tuple[str, ...]) -> Array:
    """The processors `names` (`active_processors(plan)`, in table order)."""
    for name in names:
        scores = PROCESSORS[name](scores, state, plan)
    return scores
