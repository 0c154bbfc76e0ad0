"""`gpt2_core.sampling`'s logits processors in `keras.ops`, shaped for a compiled decode loop.

The sequence so far lives in a fixed-size buffer `tokens` (B, S_buf); positions
`[start, cur)` hold it (`start` skips the bucket padding added in front of the prompt, which the
processors must not see). `seen` (B, V) marks the tokens of that span, kept up to date by the
loop, so the repetition penalty costs O(B V) per step instead of O(B S V).
"""

from __future__ import annotations

from keras import ops

from gpt2_core.sampling import SamplingConfig

NEG_INF = float("-inf")


def mark_seen(seen, tokens, valid):
    """`seen` (B, V) bool with `tokens` (B, N) set where `valid` (B, N). A scatter-add of counts
    (invalid entries go to a spare column V), not a (B, N, V) one-hot."""
    B, V = ops.shape(seen)[0], ops.shape(seen)[1]
    N = ops.shape(tokens)[1]
    cols = ops.where(valid, ops.cast(tokens, "int32"), V)
    rows = ops.broadcast_to(ops.arange(B, dtype="int32")[:, None], (B, N))
    idx = ops.reshape(ops.stack([rows, cols], axis=-1), (-1, 2))
    counts = ops.scatter(idx, ops.ones((B * N,), "int32"), (B, V + 1))
    return ops.logical_or(seen, counts[:, :V] > 0)


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
    return ops.where(banned, NEG_INF, scores)


def top_k(scores, k: int):
    k = min(k, scores.shape[-1])
    kth = ops.top_k(scores, k)[0][:, -1:]
    return ops.where(scores < kth, NEG_INF, scores)


def top_p(scores, p: float):
    order = ops.argsort(scores, axis=-1)  # ascending
    sorted_scores = ops.take_along_axis(scores, order, axis=-1)
    cum = ops.cumsum(ops.softmax(sorted_scores, axis=-1), axis=-1)
    V = ops.shape(scores)[1]
    keep_last = ops.arange(V) == V - 1  # min_tokens_to_keep = 1
    remove_sorted = ops.logical_and(cum <= 1.0 - p, ops.logical_not(keep_last)[None, :])
    remove = ops.take_along_axis(remove_sorted, ops.argsort(order, axis=-1), axis=-1)
    return ops.where(remove, NEG_INF, scores)


def process(scores, cfg: SamplingConfig, eos_ids: tuple[int, ...], tokens=None, start=0, cur=0,
            seen=None, new_tokens=0):
    """Every configured processor in Hugging Face's order (as `gpt2_core.sampling.process`).

    Shapes: scores (B, V) float32 -> (B, V).
    """
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, seen, cfg.repetition_penalty)
    if cfg.no_repeat_ngram_size:
        n = cfg.no_repeat_ngram_size
        scores = ops.where(cur - start + 1 >= n, no_repeat_ngram(scores, tokens, start, cur, n), scores)
    if cfg.min_new_tokens and eos_ids:
        is_eos = ops.sum(ops.one_hot(ops.array(eos_ids, "int32"), ops.shape(scores)[1]), axis=0) > 0
        scores = ops.where(ops.logical_and(new_tokens < cfg.min_new_tokens, is_eos)[None], NEG_INF, scores)
    if cfg.do_sample:
        if cfg.temperature != 1.0:
            scores = scores / cfg.temperature
        if cfg.top_k is not None:
            scores = top_k(scores, cfg.top_k)
        if cfg.top_p is not None and cfg.top_p < 1.0:
            scores = top_p(scores, cfg.top_p)
    return scores
