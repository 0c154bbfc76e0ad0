"""The sampling rules: each logits processor once, in NumPy, with Hugging Face's semantics.

Every backend's `generate` applies the same processors in the same order so that, given the
same logits, all backends keep the same candidates. Shapes: scores (B, V) float, input_ids
(B, S) int (the whole sequence so far, prompt included).

Order (as `transformers.GenerationMixin`): repetition penalty, no-repeat-ngram, min new tokens,
then, when sampling, temperature, top-k, top-p.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

FILTER_VALUE = -np.inf
"""Score of a token removed by top-k/top-p/no-repeat-ngram/min-new-tokens."""


def repetition_penalty(scores: np.ndarray, input_ids: np.ndarray, penalty: float,
                       ignore_lengths: np.ndarray | int | None = None) -> np.ndarray:
    """CTRL's penalty (Keskar et al. 2019): each token already in the row has its score divided
    by `penalty` when positive, multiplied when negative.

    `ignore_lengths` (an int, or (B,) ints) skips that many leading positions of each row: a
    left-padded prompt's padding, which transformers' `generate` leaves out (it passes the
    index of the first attended position, `attention_mask.argmax(-1)`).
    """
    if penalty <= 0:
        raise ValueError(f"`repetition_penalty` must be > 0. Received: {penalty}.")
    scores = scores.copy()
    B, S = input_ids.shape
    skip = np.zeros(B, np.int64) if ignore_lengths is None else np.broadcast_to(ignore_lengths, (B,))
    for b in range(B):
        ids = np.unique(input_ids[b, skip[b]:])
        picked = scores[b, ids]
        scores[b, ids] = np.where(picked < 0, picked * penalty, picked / penalty)
    return scores


def left_padding_lengths(attention_mask: np.ndarray) -> np.ndarray:
    """(B,) index of each row's first attended position: its left padding."""
    return (np.asarray(attention_mask) != 0).argmax(-1)


def banned_ngram_tokens(row: Sequence[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `row`."""
    if len(row) + 1 < n:
        return []
    prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
    return sorted({row[i + n - 1] for i in range(len(row) - n + 1)
                   if tuple(row[i:i + n - 1]) == prefix})


def no_repeat_ngram(scores: np.ndarray, input_ids: np.ndarray, n: int) -> np.ndarray:
    if n <= 0:
        raise ValueError(f"`no_repeat_ngram_size` must be a positive integer. Received: {n}.")
    scores = scores.copy()
    for b, row in enumerate(input_ids.tolist()):
        scores[b, banned_ngram_tokens(row, n)] = FILTER_VALUE
    return scores


def min_new_tokens(scores: np.ndarray, new_tokens: int, minimum: int,
                   eos_token_ids: Sequence[int]) -> np.ndarray:
    """End-of-sequence tokens are forbidden until `minimum` new tokens exist."""
    if new_tokens >= minimum or not eos_token_ids:
        return scores
    scores = scores.copy()
    scores[:, list(eos_token_ids)] = FILTER_VALUE
    return scores


def temperature(scores: np.ndarray, t: float) -> np.ndarray:
    if not t > 0:
        raise ValueError(f"`temperature` must be > 0 (use greedy decoding for 0). Received: {t}.")
    return scores / t


def top_k(scores: np.ndarray, k: int, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Keep tokens whose score is >= the k-th largest (ties at the boundary are all kept)."""
    if k <= 0:
        raise ValueError(f"`top_k` must be a positive integer. Received: {k}.")
    k = min(max(k, min_tokens_to_keep), scores.shape[-1])
    kth = np.sort(scores, axis=-1)[:, -k][:, None]
    return np.where(scores < kth, FILTER_VALUE, scores)


def top_p(scores: np.ndarray, p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Nucleus filtering (Holtzman et al. 2019): drop the least likely tokens whose cumulative
    probability (ascending, stable sort) is <= 1 - p; keep at least `min_tokens_to_keep`."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"`top_p` must be in (0, 1]. Received: {p}.")
    order = np.argsort(scores, axis=-1, kind="stable")  # ascending
    sorted_scores = np.take_along_axis(scores, order, -1)
    shifted = sorted_scores - sorted_scores.max(-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    remove_sorted = np.cumsum(probs, -1) <= 1.0 - p
    remove_sorted[:, -min_tokens_to_keep:] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, -1)
    return np.where(remove, FILTER_VALUE, scores)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """The decoding options shared by every backend's `generate` (Hugging Face's names)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("top_k", "no_repeat_ngram_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ValueError(f"`{name}` must be None or a positive integer. Received: {v!r}.")
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0. Received: {self.temperature!r}.")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"`top_p` must be in (0, 1]. Received: {self.top_p!r}.")
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError("`repetition_penalty` must be > 0. Received: "
                             f"{self.repetition_penalty!r}.")
        if self.min_new_tokens < 0:
            raise ValueError(f"`min_new_tokens` must be >= 0. Received: {self.min_new_tokens!r}.")


def process(scores: np.ndarray, input_ids: np.ndarray, cfg: SamplingConfig, new_tokens: int,
            eos_token_ids: Sequence[int], attention_mask: np.ndarray | None = None) -> np.ndarray:
    """Apply every configured processor in Hugging Face's order. Warpers (temperature, top-k,
    top-p) apply only when `cfg.do_sample`. With `attention_mask` (B, S), left padding is left
    out of the repetition penalty (as transformers' `generate`)."""
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        skip = None if attention_mask is None else left_padding_lengths(attention_mask)
        scores = repetition_penalty(scores, input_ids, cfg.repetition_penalty, skip)
    if cfg.no_repeat_ngram_size:
        scores = no_repeat_ngram(scores, input_ids, cfg.no_repeat_ngram_size)
    if cfg.min_new_tokens:
        scores = min_new_tokens(scores, new_tokens, cfg.min_new_tokens, eos_token_ids)
    if cfg.do_sample:
        if cfg.temperature != 1.0:
            scores = temperature(scores, cfg.temperature)
        if cfg.top_k is not None:
            scores = top_k(scores, cfg.top_k)
        if cfg.top_p is not None and cfg.top_p < 1.0:
            scores = top_p(scores, cfg.top_p)
    return scores
