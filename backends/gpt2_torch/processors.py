"""The processor table of `gpt2_core.sampling` in torch: the same rows, order and semantics.

`PROCESSORS` maps each spec row's name to its torch function `(scores, state, plan) -> scores`;
`apply` runs the rows `gpt2_core.sampling.active_processors(plan)` turns on, so the table (what
is on, in which order, warpers only when sampling) is decided by the spec alone.

Shapes: scores (N, V) float, ids (N, S) long (each row so far: left padding, prompt, new tokens),
N the expanded batch (B * num_return_sequences or B * num_beams).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from gpt2_core.generation_config import GenerationPlan
from gpt2_core.sampling import active_processors

FILTER_VALUE = float("-inf")


@dataclasses.dataclass(frozen=True)
class ProcessorState:
    """What a processor may read besides the scores (`gpt2_core.sampling.ProcessorState`)."""

    ids: torch.Tensor             # (N, S) long: each row so far (left padding, prompt, new tokens)
    prompt_padding: torch.Tensor  # (N,) long: each row's left padding, left out of the penalty
    step: int                     # new tokens so far (0 at the first decoding step)
    eos_token_ids: tuple[int, ...]


def repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor, penalty: float,
                       ignore_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """CTRL's penalty on every token of the row after its first `ignore_lengths` positions (the
    left padding, as transformers' `generate` skips it)."""
    N, S = input_ids.shape
    counted = torch.ones_like(input_ids)
    if ignore_lengths is not None:
        counted = (torch.arange(S, device=input_ids.device) >= ignore_lengths[:, None]).long()
    # a count per token, not a scatter of booleans: duplicate ids in and out of the padding
    # would make a boolean scatter's result depend on write order
    seen = torch.zeros_like(scores, dtype=torch.long).scatter_add_(1, input_ids, counted) > 0
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


def no_repeat_ngram(scores: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Ban each token that would repeat an n-gram of the row (`banned_ngram_tokens`)."""
    N, S = input_ids.shape
    if S < n:
        return scores
    windows = input_ids.unfold(1, n, 1)                              # (N, S - n + 1, n)
    prefix = input_ids[:, S - n + 1:]                                # (N, n - 1)
    match = (windows[:, :, :n - 1] == prefix[:, None, :]).all(-1)    # (N, S - n + 1)
    banned = torch.zeros_like(scores, dtype=torch.long).scatter_add_(1, windows[:, :, -1],
                                                                     match.long()) > 0
    return scores.masked_fill(banned, FILTER_VALUE)


def bad_words(scores: torch.Tensor, input_ids: torch.Tensor,
              bad_words_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """A one-token entry is always banned; a longer one bans its last token when the row ends
    with its other tokens (transformers' `NoBadWordsLogitsProcessor`)."""
    N, S = input_ids.shape
    banned = torch.zeros_like(scores, dtype=torch.bool)
    for *prefix, last in bad_words_ids:
        if not prefix:
            banned[:, last] = True
        elif len(prefix) <= S:
            tail = torch.tensor(prefix, dtype=input_ids.dtype, device=input_ids.device)
            banned[:, last] |= (input_ids[:, S - len(prefix):] == tail).all(-1)
    return scores.masked_fill(banned, FILTER_VALUE)


def min_length(scores: torch.Tensor, cur_len: int, minimum: int,
               eos_token_ids: Sequence[int]) -> torch.Tensor:
    """eos is banned while the row (prompt and left padding included) is shorter than `minimum`."""
    if cur_len >= minimum or not eos_token_ids:
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


def _keep_sorted(remove_sorted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """A removal mask in `order`'s sorted positions -> the same mask over the vocabulary."""
    return torch.empty_like(remove_sorted).scatter_(1, order, remove_sorted)


def top_p(scores: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Drop the least likely tokens whose ascending cumulative probability is <= 1 - p."""
    sorted_scores, order = torch.sort(scores, dim=-1, descending=False, stable=True)
    cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= 1.0 - p
    remove_sorted[:, -min_tokens_to_keep:] = False
    return scores.masked_fill(_keep_sorted(remove_sorted, order), FILTER_VALUE)


def min_p(scores: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Drop tokens whose probability is below `p` times the best one's; keep the best
    `min_tokens_to_keep`."""
    probs = scores.softmax(-1)
    remove = probs < p * probs.amax(-1, keepdim=True)
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    remove_sorted = remove.gather(1, order)
    remove_sorted[:, :min_tokens_to_keep] = False
    return scores.masked_fill(_keep_sorted(remove_sorted, order), FILTER_VALUE)


def typical_p(scores: torch.Tensor, mass: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Locally typical sampling: rank tokens by |-log p - entropy|, keep the smallest such prefix
    holding `mass` (transformers' `TypicalLogitsWarper`)."""
    logp = scores.log_softmax(-1)
    ent = -torch.nansum(logp * logp.exp(), -1, keepdim=True)
    shifted = (-logp - ent).abs()
    sorted_shifted, order = torch.sort(shifted, dim=-1, stable=True)
    cum = scores.gather(1, order).softmax(-1).cumsum(-1)
    last = (cum < mass).sum(-1, keepdim=True).clamp_max(scores.shape[-1] - 1)
    remove_sorted = sorted_shifted > sorted_shifted.gather(1, last)
    remove_sorted[:, :min_tokens_to_keep] = False
    return scores.masked_fill(_keep_sorted(remove_sorted, order), FILTER_VALUE)


Apply = Callable[[torch.Tensor, ProcessorState, GenerationPlan], torch.Tensor]

PROCESSORS: dict[str, Apply] = {
    "repetition_penalty": lambda s, st, g: repetition_penalty(s, st.ids, g.repetition_penalty,
                                                              st.prompt_padding),
    "no_repeat_ngram_size": lambda s, st, g: no_repeat_ngram(s, st.ids, g.no_repeat_ngram_size),
    "bad_words_ids": lambda s, st, g: bad_words(s, st.ids, g.bad_words_ids),
    "min_length": lambda s, st, g: min_length(s, st.ids.shape[1], g.min_length, st.eos_token_ids),
    "temperature": lambda s, st, g: temperature(s, g.temperature),
    "top_k": lambda s, st, g: top_k(s, g.top_k, g.min_tokens_to_keep),
    "top_p": lambda s, st, g: top_p(s, g.top_p, g.min_tokens_to_keep),
    "min_p": lambda s, st, g: min_p(s, g.min_p, g.min_tokens_to_keep),
    "typical_p": lambda s, st, g: typical_p(s, g.typical_p, g.min_tokens_to_keep),
}
"""The torch function of each row of `gpt2_core.sampling.PROCESSORS`, by name."""


def active(plan: GenerationPlan) -> tuple[Apply, ...]:
    """The torch functions of the rows `plan` turns on, in the spec's table order."""
    return tuple(PROCESSORS[p.name] for p in active_processors(plan))


def apply(scores: torch.Tensor, state: ProcessorState, plan: GenerationPlan,
          fns: Sequence[Apply] | None = None) -> torch.Tensor:
    """Every active processor of `plan` (or the precomputed `fns = active(plan)`), in order."""
    for fn in active(plan) if fns is None else fns:
        scores = fn(scores, state, plan)
    return scores
