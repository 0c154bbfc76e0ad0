"""`gpt2_core.sampling.PROCESSORS` in `keras.ops`, shaped for a compiled decode loop.

`process` applies `gpt2_core.sampling.active_processors(plan)` in the spec's table order; this
module supplies each one's tensor math (`KERAS`, keyed by the table's names) and nothing else.

The sequence so far lives in a fixed-size buffer `tokens` (N, S); positions `[start, cur)`
hold the spec's row (the prompt with its own left padding, then the new tokens; `start` skips
the bucket padding in front, which the processors must not see). `seen` (N, V) marks the tokens
after each row's left padding, kept up to date by the loop, so the repetition penalty costs
O(N V) per step instead of O(N S V).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from gpt2_core.generation_config import GenerationPlan
from gpt2_core.sampling import active_processors

NEG_INF = float("-inf")


@dataclasses.dataclass(frozen=True)
class ProcessorInputs:
    """What a processor may read besides the scores (`gpt2_core.sampling.ProcessorState`)."""

    tokens: Any   # (N, S) int32: bucket padding [0, start), the row [start, cur)
    start: Any    # () int32: the row's first column
    cur: Any      # () int32: columns filled
    step: Any     # () int32: new tokens so far
    seen: Any     # (N, V) bool: tokens of the row after its left padding


def mark_seen(seen, tokens, valid):
    """`seen` (N, V) bool with `tokens` (N, T) set where `valid` (N, T). A scatter-add of counts
    (invalid entries go to a spare column V), not an (N, T, V) one-hot."""
    B, V = ops.shape(seen)[0], ops.shape(seen)[1]
    N = ops.shape(tokens)[1]
    cols = ops.where(valid, ops.cast(tokens, "int32"), V)
    rows = ops.broadcast_to(ops.arange(B, dtype="int32")[:, None], (B, N))
    idx = ops.reshape(ops.stack([rows, cols], axis=-1), (-1, 2))
    counts = ops.scatter(idx, ops.ones((B * N,), "int32"), (B, V + 1))
    return ops.logical_or(seen, counts[:, :V] > 0)


def prompt_seen(V: int, prompt, mask, start):
    """(N, V) the prompt's tokens from each row's first attended column on (transformers skips
    only the left padding, `attention_mask.argmax(-1)`). Shapes: prompt (N, P_b), mask (N, P_b)."""
    N, P_b = ops.shape(prompt)[0], ops.shape(prompt)[1]
    col = ops.arange(P_b, dtype="int32")[None, :]
    first = ops.cast(ops.argmax(ops.cast(mask != 0, "int32"), axis=-1), "int32")[:, None]
    valid = ops.logical_and(col >= start, col >= first)
    return mark_seen(ops.zeros((N, V), "bool"), prompt, valid)


def repetition_penalty(scores, seen, penalty: float):
    penalised = ops.where(scores < 0, scores * penalty, scores / penalty)
    return ops.where(seen, penalised, scores)


def no_repeat_ngram(scores, tokens, start, cur, n: int):
    """Ban every token that would complete an n-gram already in tokens[start:cur]."""
    B, S = ops.shape(tokens)[0], ops.shape(tokens)[1]
    V = ops.shape(scores)[1]
    W = S - n + 1  # candidate windows i: tokens[i : i + n]
    i = ops.arange(W, dtype="int32")
    match = ops.logical_and(i >= start, i + n - 1 < cur)[None, :]  # (1, W)
    for j in range(n - 1):  # compare the window's first n-1 tokens with the last n-1 tokens
        last_j = ops.take_along_axis(tokens, ops.full((B, 1), cur - n + 1 + j, "int32"), axis=1)
        match = ops.logical_and(match, tokens[:, j:j + W] == last_j)
    banned = mark_seen(ops.zeros((B, V), "bool"), tokens[:, n - 1:n - 1 + W], match)
    banned = ops.where(cur - start + 1 >= n, banned, False)
    return ops.where(banned, NEG_INF, scores)


def bad_words(scores, tokens, start, cur, words: tuple[tuple[int, ...], ...]):
    """A one-token entry is always banned; a longer one bans its last token when the row ends
    with the entry's other tokens (transformers' `NoBadWordsLogitsProcessor`)."""
    V = ops.shape(scores)[1]
    always = np.zeros(V, bool)
    banned = None
    for word in words:
        *prefix, last = word
        if not prefix:
            always[last] = True
            continue
        L = len(prefix)
        cols = ops.maximum(cur - L + ops.arange(L, dtype="int32"), 0)
        ends = ops.all(ops.take(tokens, cols, axis=1) == ops.array(prefix, "int32")[None, :], axis=1)
        hit = ops.logical_and(ends, cur - start >= L)[:, None] & ops.array(np.arange(V) == last)[None, :]
        banned = hit if banned is None else ops.logical_or(banned, hit)
    banned = ops.array(always)[None, :] if banned is None else ops.logical_or(banned, always[None, :])
    return ops.where(banned, NEG_INF, scores)


def min_length(scores, length, minimum: int, eos_token_ids: tuple[int, ...]):
    """Ban eos while `length` (a scalar) < `minimum`."""
    is_eos = np.zeros(ops.shape(scores)[1], bool)
    is_eos[list(eos_token_ids)] = True
    return ops.where(ops.logical_and(length < minimum, ops.array(is_eos))[None, :], NEG_INF, scores)


def top_k(scores, k: int, min_tokens_to_keep: int = 1):
    """Keep tokens whose score is >= the k-th largest (ties at the boundary all kept)."""
    k = min(max(k, min_tokens_to_keep), scores.shape[-1])
    # the min of the k best, not `[:, -1:]`: XLA:CPU turns a top_k followed by a slice into a
    # full sort of V (9.5 ms a step for GPT-2's vocabulary on TensorFlow instead of 0.4 ms)
    kth = ops.min(ops.top_k(scores, k, sorted=False)[0], axis=-1, keepdims=True)
    return ops.where(scores < kth, NEG_INF, scores)


def _unsort(x_sorted, order):
    """Values in sorted order back to the original positions."""
    return ops.take_along_axis(x_sorted, ops.argsort(order, axis=-1), axis=-1)


def top_p(scores, p: float, min_tokens_to_keep: int = 1):
    order = ops.argsort(scores, axis=-1)  # ascending
    cum = ops.cumsum(ops.softmax(ops.take_along_axis(scores, order, axis=-1), axis=-1), axis=-1)
    V = ops.shape(scores)[1]
    keep_last = ops.arange(V) >= V - min_tokens_to_keep
    remove_sorted = ops.logical_and(cum <= 1.0 - p, ops.logical_not(keep_last)[None, :])
    return ops.where(_unsort(remove_sorted, order), NEG_INF, scores)


def min_p(scores, p: float, min_tokens_to_keep: int = 1):
    probs = ops.softmax(scores, axis=-1)
    remove = probs < p * ops.max(probs, axis=-1, keepdims=True)
    if min_tokens_to_keep > 1:  # the best token is never below p x itself
        kth = ops.min(ops.top_k(scores, min(min_tokens_to_keep, scores.shape[-1]), sorted=False)[0],
                      axis=-1, keepdims=True)  # not `[:, -1:]`: see `top_k`
        remove = ops.logical_and(remove, scores < kth)
    return ops.where(remove, NEG_INF, scores)


def typical_p(scores, mass: float, min_tokens_to_keep: int = 1):
    logp = ops.log_softmax(scores, axis=-1)
    p = ops.exp(logp)
    ent = -ops.sum(ops.where(p > 0, logp * p, 0.0), axis=-1, keepdims=True)
    shifted = ops.abs(-logp - ent)
    order = ops.argsort(shifted, axis=-1)  # ascending
    sorted_shifted = ops.take_along_axis(shifted, order, axis=-1)
    cum = ops.cumsum(ops.softmax(ops.take_along_axis(scores, order, axis=-1), axis=-1), axis=-1)
    V = ops.shape(scores)[1]
    last = ops.minimum(ops.sum(ops.cast(cum < mass, "int32"), axis=-1), V - 1)
    threshold = ops.take_along_axis(sorted_shifted, last[:, None], axis=-1)
    keep_first = ops.arange(V) < min_tokens_to_keep
    remove_sorted = ops.logical_and(sorted_shifted > threshold, ops.logical_not(keep_first)[None, :])
    return ops.where(_unsort(remove_sorted, order), NEG_INF, scores)


KERAS = {
    "repetition_penalty": lambda s, x, g: repetition_penalty(s, x.seen, g.repetition_penalty),
    "no_repeat_ngram_size": lambda s, x, g: no_repeat_ngram(s, x.tokens, x.start, x.cur,
                                                            g.no_repeat_ngram_size),
    "bad_words_ids": lambda s, x, g: bad_words(s, x.tokens, x.start, x.cur, g.bad_words_ids),
    # the loop's plan counts min_length in new tokens (`generation.trace_plan`)
    "min_length": lambda s, x, g: min_length(s, x.step, g.min_length, g.eos_token_ids),
    "temperature": lambda s, x, g: s / g.temperature,
    "top_k": lambda s, x, g: top_k(s, g.top_k, g.min_tokens_to_keep),
    "top_p": lambda s, x, g: top_p(s, g.top_p, g.min_tokens_to_keep),
    "min_p": lambda s, x, g: min_p(s, g.min_p, g.min_tokens_to_keep),
    "typical_p": lambda s, x, g: typical_p(s, g.typical_p, g.min_tokens_to_keep),
}
"""Each row of `gpt2_core.sampling.PROCESSORS`, by name, as `(scores, inputs, plan) -> scores`."""


def process(scores, plan: GenerationPlan, inputs: ProcessorInputs):
    """Every processor the plan turns on, in the spec's order. Shapes: (N, V) float32 -> (N, V)."""
    for p in active_processors(plan):
        scores = KERAS[p.name](scores, inputs, plan)
    return scores


def tracks_seen(plan: GenerationPlan) -> bool:
    """Only the repetition penalty reads `seen`: the loop skips its update otherwise."""
    return plan.repetition_penalty != 1.0
