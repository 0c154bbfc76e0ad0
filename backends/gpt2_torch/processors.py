"""The logits processors of `gpt2_core.sampling`, in torch, with the same semantics and order.
Shapes: scores (B, V) float, input_ids (B, S) long (the whole sequence so far)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gpt2_core.sampling import SamplingConfig, banned_ngram_tokens

FILTER_VALUE = float("-inf")


def repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    picked = scores.gather(1, input_ids)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, input_ids, picked)


def no_repeat_ngram(scores: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    scores = scores.clone()
    for b, row in enumerate(input_ids.tolist()):
        banned = banned_ngram_tokens(row, n)  # the spec's own rule, shared by every backend
        if banned:
            scores[b, banned] = FILTER_VALUE
    return scores


def min_new_tokens(scores: torch.Tensor, new_tokens: int, minimum: int,
                   eos_token_ids: Sequence[int]) -> torch.Tensor:
    if new_tokens >= minimum or not eos_token_ids:
        return scores
    scores = scores.clone()
    scores[:, list(eos_token_ids)] = FILTER_VALUE
    return scores


def temperature(scores: torch.Tensor, t: float) -> torch.Tensor:
    return scores / t


def top_k(scores: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep tokens scoring >= the k-th largest (boundary ties kept)."""
    k = min(max(k, min_tokens_to_keep), scores.shape[-1])
    kth = torch.topk(scores, k, dim=-1).values[:, -1:]
    return scores.masked_fill(scores < kth, FILTER_VALUE)


def top_p(scores: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Drop the least likely tokens whose ascending cumulative probability is <= 1 - p."""
    sorted_scores, order = torch.sort(scores, dim=-1, descending=False, stable=True)
    cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= 1.0 - p
    remove_sorted[:, -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return scores.masked_fill(remove, FILTER_VALUE)


def process(scores: torch.Tensor, input_ids: torch.Tensor, cfg: SamplingConfig, new_tokens: int,
            eos_token_ids: Sequence[int]) -> torch.Tensor:
    """Every configured processor in `gpt2_core.sampling.process`'s order."""
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, input_ids, cfg.repetition_penalty)
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
