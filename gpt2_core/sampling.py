"""The logits processors: each once, in NumPy, with Hugging Face's semantics, in one ordered table.

Every backend's `generate` applies `PROCESSORS` in table order, so that given the same logits
all backends keep the same candidates. The contract: each processor is
`(scores, state, plan) -> scores`, with `state` a `ProcessorState` (the ids so far, each row's
left padding, the step, the eos ids) and `plan` the resolved `GenerationPlan`.
Shapes: scores (N, V) float, ids (N, S) int (the whole row so far, prompt included), where N is
the expanded batch (B * num_return_sequences or B * num_beams).

Order (transformers' `GenerationMixin._get_logits_processor`): repetition penalty,
no-repeat-ngram, bad words, min length; then, when sampling, temperature, top-k, top-p, min-p,
typical-p. Under beam search they apply to log-softmaxed scores, as transformers does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gpt2_core.generation_config import GenerationPlan

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


def bad_words(scores: np.ndarray, input_ids: np.ndarray,
              bad_words_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """transformers' `NoBadWordsLogitsProcessor`: a one-token entry is always banned; a longer
    entry bans its last token when the row ends with the entry's other tokens."""
    scores = scores.copy()
    rows = input_ids.tolist()
    for word in bad_words_ids:
        *prefix, last = word
        for b, row in enumerate(rows):
            if not prefix or (len(row) >= len(prefix) and row[len(row) - len(prefix):] == prefix):
                scores[b, last] = FILTER_VALUE
    return scores


def min_length(scores: np.ndarray, cur_len: int, minimum: int,
               eos_token_ids: Sequence[int]) -> np.ndarray:
    """transformers' `MinLengthLogitsProcessor`: eos is banned while the row (prompt and left
    padding included) is shorter than `minimum`. `min_new_tokens` resolves to this too."""
    if cur_len >= minimum or not eos_token_ids:
        return scores
    scores = scores.copy()
    scores[:, list(eos_token_ids)] = FILTER_VALUE
    return scores


def min_p(scores: np.ndarray, p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Min-p (Nguyen et al. 2024): drop tokens whose probability is below `p` times the best
    token's; keep at least `min_tokens_to_keep` (the best ones)."""
    probs = softmax_f(scores)
    remove = probs < p * probs.max(-1, keepdims=True)
    order = np.argsort(-scores, axis=-1, kind="stable")  # descending
    remove_sorted = np.take_along_axis(remove, order, -1)
    remove_sorted[:, :min_tokens_to_keep] = False
    np.put_along_axis(remove, order, remove_sorted, -1)
    return np.where(remove, FILTER_VALUE, scores)


def typical_p(scores: np.ndarray, mass: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Locally typical sampling (Meister et al. 2022), as transformers' `TypicalLogitsWarper`:
    rank tokens by |-log p - entropy|, keep the smallest such prefix holding `mass`."""
    logp = log_softmax_f(scores)
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):
        ent = -np.nansum(logp * p, -1, keepdims=True)
    shifted = np.abs(-logp - ent)
    order = np.argsort(shifted, axis=-1, kind="stable")  # ascending
    sorted_shifted = np.take_along_axis(shifted, order, -1)
    cum = np.cumsum(softmax_f(np.take_along_axis(scores, order, -1)), -1)
    last = np.minimum((cum < mass).sum(-1), scores.shape[-1] - 1)
    remove_sorted = sorted_shifted > np.take_along_axis(sorted_shifted, last[:, None], -1)
    remove_sorted[:, :min_tokens_to_keep] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, -1)
    return np.where(remove, FILTER_VALUE, scores)


def softmax_f(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis that maps a row's -inf entries to 0."""
    m = x.max(-1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0))
    return e / e.sum(-1, keepdims=True)


def log_softmax_f(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    shifted = x - np.where(np.isfinite(m), m, 0)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@dataclasses.dataclass(frozen=True)
class ProcessorState:
    """What a processor may read besides the scores."""

    ids: np.ndarray              # (N, S) int: each row so far (left padding, prompt, new tokens)
    prompt_padding: np.ndarray   # (N,) int: each row's left padding, left out of the penalty
    step: int                    # new tokens so far (0 at the first decoding step)
    eos_token_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Processor:
    """One row of the processor table: its name, when it is on, and what it does."""

    name: str
    active: Callable[[GenerationPlan], bool]
    apply: Callable[[np.ndarray, ProcessorState, GenerationPlan], np.ndarray]
    sampling_only: bool = False


PROCESSORS: tuple[Processor, ...] = (
    Processor("repetition_penalty", lambda g: g.repetition_penalty != 1.0,
              lambda s, st, g: repetition_penalty(s, st.ids, g.repetition_penalty, st.prompt_padding)),
    Processor("no_repeat_ngram_size", lambda g: g.no_repeat_ngram_size > 0,
              lambda s, st, g: no_repeat_ngram(s, st.ids, g.no_repeat_ngram_size)),
    Processor("bad_words_ids", lambda g: bool(g.bad_words_ids),
              lambda s, st, g: bad_words(s, st.ids, g.bad_words_ids)),
    Processor("min_length", lambda g: g.min_length > 0 and bool(g.eos_token_ids),
              lambda s, st, g: min_length(s, st.ids.shape[1], g.min_length, st.eos_token_ids)),
    Processor("temperature", lambda g: g.temperature != 1.0,
              lambda s, st, g: temperature(s, g.temperature), sampling_only=True),
    Processor("top_k", lambda g: g.top_k != 0,
              lambda s, st, g: top_k(s, g.top_k, g.min_tokens_to_keep), sampling_only=True),
    Processor("top_p", lambda g: g.top_p < 1.0,
              lambda s, st, g: top_p(s, g.top_p, g.min_tokens_to_keep), sampling_only=True),
    Processor("min_p", lambda g: g.min_p is not None,
              lambda s, st, g: min_p(s, g.min_p, g.min_tokens_to_keep), sampling_only=True),
    Processor("typical_p", lambda g: g.typical_p < 1.0,
              lambda s, st, g: typical_p(s, g.typical_p, g.min_tokens_to_keep), sampling_only=True),
)
"""Every processor, in the order each backend applies them."""


def active_processors(plan: GenerationPlan) -> tuple[Processor, ...]:
    """The processors a plan turns on, in table order (warpers only when sampling)."""
    return tuple(p for p in PROCESSORS if (plan.do_sample or not p.sampling_only) and p.active(plan))


def apply_processors(scores: np.ndarray, state: ProcessorState, plan: GenerationPlan) -> np.ndarray:
    """Every active processor of `plan`, in table order."""
    for p in active_processors(plan):
        scores = p.apply(scores, state, plan)
    return scores
