"""`generate`: greedy, sampling and beam search on a preallocated cache, with Hugging Face's
semantics (token-identical greedy and beam outputs), plus streaming.

Per step: one forward of the new token over the static cache, logits for the last position
only, the processors of `gpt2_core.sampling` (torch versions in `processors.py`).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from gpt2_core.sampling import SamplingConfig
from gpt2_torch import inputs, processors
from gpt2_torch.cache import StaticCache
from gpt2_torch.modeling import AttnMask


class Streamer(Protocol):
    """transformers' streamer protocol: `put` gets the prompt, then each step's tokens."""

    def put(self, value: torch.Tensor) -> None: ...

    def end(self) -> None: ...


class Tokenizer(Protocol):
    def decode(self, ids: list[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int
    sampling: SamplingConfig
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    stop_strings: tuple[str, ...] = ()
    tokenizer: Any = None
    seed: int | None = None
    compile: bool = False


@dataclasses.dataclass
class StreamStep:
    """One decoding step: the new token of each row (B,), and with a tokenizer the text each
    row gained (held back while a multi-byte character is incomplete)."""

    token_ids: torch.Tensor
    text: list[str] | None = None


class GenerationMixin:
    """`generate`, `stream_generate` and the compilable `decode_step` for `GPT2LMHeadModel`."""

    @torch.inference_mode()
    def generate(self, input_ids, attention_mask=None, *, max_new_tokens: int = 20,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float | None = None,
                 no_repeat_ngram_size: int | None = None, min_new_tokens: int = 0,
                 eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
                 stop_strings: str | Sequence[str] | None = None, tokenizer: Tokenizer | None = None,
                 num_beams: int = 1, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, num_return_sequences: int = 1,
                 seed: int | None = None, streamer: Streamer | None = None,
                 compile: bool = False) -> torch.Tensor:
        """Continue each prompt; returns prompt plus new tokens.

        Shapes: input_ids (B, T) (left-pad prompts of different lengths and pass
        attention_mask (B, T)) -> (B * num_return_sequences, T + n), n <= max_new_tokens.

        Args:
            eos_token_id: one id or several; default `config.eos_token_id`. Rows that finished
                get `pad_token_id` (default: the first eos id).
            stop_strings: stop a row once its new text contains one of them (needs `tokenizer`).
            num_beams: beam search (transformers' algorithm: `length_penalty` divides the score
                by generated length ** length_penalty; `early_stopping` True, False or "never").
            seed: seeds a private `torch.Generator` for sampling (reproducible).
            streamer: an object with `put`/`end` (e.g. transformers' `TextStreamer`).
            compile: run each decoding step through `torch.compile(fullgraph=True,
                dynamic=False)` on a static cache whose length is rounded up to a multiple of
                64 (capped at `n_positions`). The compiled step is kept per model and
                (batch, cache length, dtype, device), so later calls whose prompt plus
                `max_new_tokens` falls in the same bucket reuse it without recompiling. The
                first call pays the compilation (about 15 s for GPT-2 small on CPU); the prompt
                itself runs eagerly. It removes per-step Python overhead, which matters for
                small models and fast devices; for GPT-2 small on a 2-core CPU, where reading
                the weights dominates each step, it measured no faster than eager
                (`bench/README.md`). Tokens are those of `compile=False` (greedy, sampling,
                beam search).
                torch keeps at most `torch._dynamo.config.recompile_limit` compiled variants
                of the step and runs further shapes eagerly.
        """
        ids, mask, opts = self._prepare_generation(
            input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
            repetition_penalty, no_repeat_ngram_size, min_new_tokens, eos_token_id, pad_token_id,
            stop_strings, tokenizer, num_beams, length_penalty, early_stopping,
            num_return_sequences, seed, compile)
        if opts.num_beams > 1:
            if streamer is not None:
                raise ValueError("`streamer` cannot be used with beam search (num_beams > 1), as "
                                 "in transformers. Received: num_beams="
                                 f"{opts.num_beams}.")
            return beam_search(self, ids, mask, opts)
        if streamer is not None:
            streamer.put(ids.cpu())
        new = []
        for tokens in decode_tokens(self, ids, mask, opts):
            new.append(tokens)
            if streamer is not None:
                streamer.put(tokens.cpu())
        if streamer is not None:
            streamer.end()
        return torch.cat([ids, torch.stack(new, 1)], 1) if new else ids

    @torch.inference_mode()
    def stream_generate(self, input_ids, attention_mask=None, *, max_new_tokens: int = 20,
                        do_sample: bool = False, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None,
                        repetition_penalty: float | None = None,
                        no_repeat_ngram_size: int | None = None, min_new_tokens: int = 0,
                        eos_token_id: int | Sequence[int] | None = None,
                        pad_token_id: int | None = None,
                        stop_strings: str | Sequence[str] | None = None,
                        tokenizer: Tokenizer | None = None,
                        seed: int | None = None, compile: bool = False) -> Iterator[StreamStep]:
        """Yield each step's new tokens (and text, with a tokenizer) as `generate` makes them
        (arguments as `generate`, `compile` included).

        Shapes: input_ids (B, T) -> each step's `token_ids` (B,)."""
        ids, mask, opts = self._prepare_generation(
            input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
            repetition_penalty, no_repeat_ngram_size, min_new_tokens, eos_token_id, pad_token_id,
            stop_strings, tokenizer, 1, 1.0, False, 1, seed, compile)
        rows: list[list[int]] = [[] for _ in range(ids.shape[0])]
        texts = ["" for _ in rows]
        for tokens in decode_tokens(self, ids, mask, opts):
            if tokenizer is None:
                yield StreamStep(tokens)
                continue
            deltas = []
            for b, t in enumerate(tokens.tolist()):
                rows[b].append(t)
                text = tokenizer.decode(rows[b])
                keep = text.endswith("\ufffd")  # an incomplete UTF-8 character: wait for more
                deltas.append("" if keep else text[len(texts[b]):])
                texts[b] = texts[b] if keep else text
            yield StreamStep(tokens, deltas)

    def decode_step(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    write_pos: torch.Tensor, key_mask: torch.Tensor,
                    cache: StaticCache) -> torch.Tensor:
        """One decoding step with static shapes, for `torch.compile(..., fullgraph=True)`.

        Shapes: input_ids, position_ids (B, 1); write_pos (1,) the cache slot to write;
        key_mask (B, max_length) bool, True for filled non-pad slots including `write_pos`
        -> logits (B, V) of the new token. Writes the cache in place.
        """
        allowed = key_mask[:, None, None, :]  # (B, 1, 1, S)
        bias = torch.zeros((), dtype=self.transformer.bias_dtype, device=key_mask.device).masked_fill(
            ~allowed, torch.finfo(self.transformer.bias_dtype).min)
        args = inputs.Inputs(input_ids, None, position_ids, None, None, None, 0, None)
        out = self.transformer.run(args, use_cache=False, static_cache=cache, static_pos=write_pos,
                                   mask=AttnMask(allowed, bias, False))
        return self.lm_logits(out.last_hidden_state[:, -1])

    def _prepare_generation(self, input_ids, attention_mask, max_new_tokens, do_sample, temperature,
                            top_k, top_p, repetition_penalty, no_repeat_ngram_size, min_new_tokens,
                            eos_token_id, pad_token_id, stop_strings, tokenizer, num_beams,
                            length_penalty, early_stopping, num_return_sequences, seed, compile):
        if not isinstance(compile, bool):
            raise TypeError(f"`compile` must be True or False. Received: compile={compile!r} "
                            f"({type(compile).__name__}).")
        ids = inputs.to_tensor(input_ids, "input_ids", self.device)
        if ids.ndim == 1:
            ids = ids[None]
        inputs.check_ids(self.config, ids, 0)
        mask = inputs.to_mask(attention_mask, self.device)
        if mask is not None and mask.ndim == 1:
            mask = mask[None]
        inputs.check_lengths(self.config, ids.shape[0], ids.shape[1], 0, mask)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"`max_new_tokens` must be a non-negative integer. Received: "
                             f"max_new_tokens={max_new_tokens!r}.")
        if ids.shape[1] + max_new_tokens > self.config.n_positions:
            raise ValueError(
                f"prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the "
                f"model's n_positions={self.config.n_positions}. Lower `max_new_tokens` or "
                "truncate the prompt.")
        eos = self.config.eos_token_ids if eos_token_id is None else (
            (eos_token_id,) if isinstance(eos_token_id, int) else tuple(eos_token_id))
        pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else None)
        if isinstance(stop_strings, str):
            stop_strings = (stop_strings,)
        if stop_strings and tokenizer is None:
            raise ValueError("`stop_strings` needs `tokenizer=` to turn tokens into text (as in "
                             "transformers). Received: tokenizer=None.")
        if num_beams < 1 or not 1 <= num_return_sequences <= max(num_beams, 1 if not do_sample else 10**9):
            raise ValueError(
                "`num_return_sequences` must be between 1 and `num_beams` (or any positive number "
                f"when sampling). Received: num_beams={num_beams}, "
                f"num_return_sequences={num_return_sequences}.")
        if num_beams > 1 and do_sample:
            raise ValueError("Beam sampling (num_beams > 1 with do_sample=True) is not "
                             "supported. Use num_beams=1 to sample, or do_sample=False.")
        if early_stopping not in (True, False, "never"):
            raise ValueError("`early_stopping` must be True, False or 'never'. Received: "
                             f"early_stopping={early_stopping!r}.")
        sampling = SamplingConfig(do_sample, temperature, top_k, top_p, repetition_penalty,
                                  no_repeat_ngram_size, min_new_tokens)
        if num_return_sequences > 1 and num_beams == 1:
            ids = ids.repeat_interleave(num_return_sequences, 0)
            mask = None if mask is None else mask.repeat_interleave(num_return_sequences, 0)
        opts = GenerationOptions(max_new_tokens, sampling, eos, pad, num_beams, length_penalty,
                                 early_stopping, num_return_sequences, tuple(stop_strings or ()),
                                 tokenizer, seed, compile)
        return ids, mask, opts


# Compiled decoding rounds the static cache up to a multiple of this many slots, so prompts of
# different lengths share one compiled step (the step's shapes include the cache length).
CACHE_BUCKET = 64

# model -> {(batch, cache length, dtype, device): compiled step}. Weak keys, and a compiled plain
# function that takes the model as an argument (not a bound method), so the cache neither keeps
# a model alive nor ends up in its pickle or deepcopy.
_COMPILED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_bucket(length: int, n_positions: int) -> int:
    """The static cache length compiled decoding uses for `length` slots: the next multiple of
    `CACHE_BUCKET`, at most `n_positions`."""
    return min(-(-length // CACHE_BUCKET) * CACHE_BUCKET, n_positions)


def _decode_step(model, input_ids, position_ids, write_pos, key_mask, cache):
    return model.decode_step(input_ids, position_ids, write_pos, key_mask, cache)


def compiled_decode_step(model, batch_size: int, max_length: int) -> Callable[..., torch.Tensor]:
    """`model.decode_step` under `torch.compile(fullgraph=True, dynamic=False)`, compiled once per
    (batch, cache length, dtype, device) and model; called as `step(model, ...)`."""
    weight = model.transformer.wte.weight
    key = (batch_size, max_length, weight.dtype, weight.device)
    steps = _COMPILED_STEPS.setdefault(model, {})
    if key not in steps:
        steps[key] = torch.compile(_decode_step, fullgraph=True, dynamic=False)
    return steps[key]


class _Decoder:
    """Runs the model over a static cache: `prefill(ids)` then `step(tokens)`; each returns the
    float32 logits of the last position (B, V).

    Eager steps attend over the filled prefix of a `max_length` cache. Compiled steps (`compile`)
    run `decode_step` on a cache of `cache_bucket(max_length)` slots with a key mask, so every
    step of every call in the bucket has the same shapes; the prompt is prefilled eagerly.
    """

    def __init__(self, model, ids: torch.Tensor, mask: torch.Tensor | None, max_length: int,
                 compile: bool = False) -> None:
        B, T0 = ids.shape
        self.model, self.T0 = model, T0
        S = cache_bucket(max_length, model.config.n_positions) if compile else max_length
        self.cache = StaticCache(model.config, B, S, model.transformer.wte.weight.dtype, ids.device)
        self.padded = mask is not None and not bool(mask.all())
        self.full_mask = None
        if self.padded:
            self.full_mask = torch.ones(B, S, dtype=torch.long, device=ids.device)
            self.full_mask[:, :T0] = mask
        self.positions = inputs.default_position_ids(mask if self.padded else None, 0, B, T0, ids.device)
        self.last_pos = self.positions[:, -1:]  # (B, 1)
        self.compiled = compiled_decode_step(model, B, S) if compile else None
        if compile:
            # True for the prompt's non-pad slots, then for each new token as it is written
            self.key_mask = torch.zeros(B, S, dtype=torch.bool, device=ids.device)  # (B, S)
            self.key_mask[:, :T0] = True if mask is None else mask.bool()

    def _run(self, tokens: torch.Tensor, positions: torch.Tensor, start: int) -> torch.Tensor:
        T = tokens.shape[1]
        mask = self.full_mask[:, :start + T] if self.padded else None
        args = inputs.Inputs(tokens, None, positions, None, mask, None, start, None)
        out = self.model.transformer.run(args, use_cache=False, static_cache=self.cache,
                                         static_pos=start)
        self.cache.length = start + T
        return self.model.lm_logits(out.last_hidden_state[:, -1]).float()  # last position only

    def _run_compiled(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = self.cache.length
        self.key_mask[:, pos] = True
        write_pos = torch.tensor([pos], device=tokens.device)
        # contiguous inputs: their strides are part of what the compiled step was built for
        logits = self.compiled(self.model, tokens.reshape(-1, 1).contiguous(),
                               self.last_pos.contiguous(), write_pos, self.key_mask, self.cache)
        self.cache.length = pos + 1
        return logits.float()

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        return self._run(ids, self.positions, 0)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B,) at sequence index `cache.length`."""
        self.last_pos = self.last_pos + 1
        if self.compiled is not None:
            return self._run_compiled(tokens)
        return self._run(tokens[:, None], self.last_pos, self.cache.length)


def decode_tokens(model, ids: torch.Tensor, mask: torch.Tensor | None,
                  opts: GenerationOptions) -> Iterator[torch.Tensor]:
    """Greedy or sampled decoding; yields each step's tokens (B,). Stops when every row hit an
    eos id or a stop string, or after `max_new_tokens`."""
    if opts.max_new_tokens == 0:
        return
    B, T0 = ids.shape
    max_length = T0 + opts.max_new_tokens
    dec = _Decoder(model, ids, mask, max_length, opts.compile)
    seq = torch.empty(B, max_length, dtype=torch.long, device=ids.device)
    seq[:, :T0] = ids
    eos = torch.tensor(opts.eos_token_ids, dtype=torch.long, device=ids.device)
    unfinished = torch.ones(B, dtype=torch.bool, device=ids.device)
    gen = None
    if opts.sampling.do_sample and opts.seed is not None:
        gen = torch.Generator(device=ids.device).manual_seed(opts.seed)
    logits = dec.prefill(ids)
    for step in range(opts.max_new_tokens):
        cur = T0 + step
        scores = processors.process(logits, seq[:, :cur], opts.sampling, step, opts.eos_token_ids)
        if opts.sampling.do_sample:
            tokens = torch.multinomial(scores.softmax(-1), 1, generator=gen)[:, 0]
        else:
            tokens = scores.argmax(-1)
        if opts.pad_token_id is not None:
            tokens = torch.where(unfinished, tokens, opts.pad_token_id)
        seq[:, cur] = tokens
        yield tokens
        if eos.numel():
            unfinished &= ~torch.isin(tokens, eos)
        if opts.stop_strings:
            unfinished &= ~_hit_stop_strings(seq[:, T0:cur + 1], opts)
        if step + 1 == opts.max_new_tokens or not bool(unfinished.any()):
            return
        logits = dec.step(tokens)


def _hit_stop_strings(new_tokens: torch.Tensor, opts: GenerationOptions) -> torch.Tensor:
    hits = [any(s in opts.tokenizer.decode(row) for s in opts.stop_strings)
            for row in new_tokens.tolist()]
    return torch.tensor(hits, dtype=torch.bool, device=new_tokens.device)


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (B, K, ...) rows idx (B, k) along dim 1."""
    while idx.ndim < t.ndim:
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


def beam_search(model, ids: torch.Tensor, mask: torch.Tensor | None,
                opts: GenerationOptions) -> torch.Tensor:
    """transformers' `_beam_search` (v5), step for step, on the static cache."""
    B, T0 = ids.shape
    nb, V = opts.num_beams, model.config.vocab_size
    dev = ids.device
    ids = ids.repeat_interleave(nb, 0)
    mask = None if mask is None else mask.repeat_interleave(nb, 0)
    max_length = T0 + opts.max_new_tokens
    lp, early = opts.length_penalty, opts.early_stopping
    eos = torch.tensor(opts.eos_token_ids, dtype=torch.long, device=dev)
    keep = max(2, 1 + len(opts.eos_token_ids)) * nb
    top_nb = torch.arange(keep, device=dev) < nb
    # transformers: `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`
    fill = (opts.pad_token_id or opts.eos_token_ids[0]) if opts.eos_token_ids else -1
    running = torch.full((B, nb, max_length), fill, dtype=torch.long, device=dev)
    running[:, :, :T0] = ids.view(B, nb, T0)
    sequences = running.clone()
    running_scores = torch.zeros(B, nb, device=dev)
    running_scores[:, 1:] = -1e9
    beam_scores = torch.full((B, nb), -1e9, device=dev)
    finished = torch.zeros(B, nb, dtype=torch.bool, device=dev)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)
    running_idx = torch.full((B, nb, max_length - T0), -1, dtype=torch.int32, device=dev)
    beam_idx = running_idx.clone()
    dec = _Decoder(model, ids, mask, max_length, opts.compile)
    logits = dec.prefill(ids)
    flat = ids
    cur = T0
    while True:
        log_probs = processors.process(F.log_softmax(logits, -1), flat, opts.sampling, cur - T0,
                                       opts.eos_token_ids)
        log_probs = (log_probs.view(B, nb, V) + running_scores[:, :, None]).reshape(B, -1)
        topk_lp, topk_i = torch.topk(log_probs, k=keep)
        src_beam = topk_i // V
        topk_idx = _gather(running_idx, src_beam)
        topk_seq = _gather(running, src_beam)
        topk_seq[:, :, cur] = topk_i % V
        topk_idx[:, :, cur - T0] = (src_beam + torch.arange(B, device=dev)[:, None] * nb).int()
        hits = torch.isin(topk_seq[:, :, cur], eos) | (cur + 1 >= max_length)  # (B, keep)
        # e. the best unfinished continuations keep running
        run_lp = topk_lp + hits.float() * -1.0e9
        nxt = torch.topk(run_lp, k=nb)[1]
        running, running_scores, running_idx = (_gather(topk_seq, nxt), _gather(run_lp, nxt),
                                                _gather(topk_idx, nxt))
        # f. finished candidates among the top nb enter the finished pool, length-normalised
        just = hits & top_nb[None, :]
        fin_lp = topk_lp / ((cur + 1 - T0) ** lp)
        fin_lp = fin_lp + (finished.all(-1, keepdim=True) & (early is True)).float() * -1.0e9
        fin_lp = fin_lp + (~improvable).float() * -1.0e9
        fin_lp = fin_lp + (~just) * -1.0e9
        best = torch.topk(torch.cat([beam_scores, fin_lp], 1), k=nb)[1]
        sequences = _gather(torch.cat([sequences, topk_seq], 1), best)
        beam_scores = _gather(torch.cat([beam_scores, fin_lp], 1), best)
        beam_idx = _gather(torch.cat([beam_idx, topk_idx], 1), best)
        finished = _gather(torch.cat([finished, just], 1), best)
        dec.cache.reorder(running_idx[..., cur - T0].reshape(-1).long())
        cur += 1
        improvable = _early_stop_heuristic(improvable, running_scores, beam_scores, finished, cur,
                                           max_length, T0, early, lp)
        go_on = bool(improvable.any()) and not (bool(finished.all()) and early is True) \
            and not bool(hits.all())
        if not go_on:
            break
        flat = running[:, :, :cur].reshape(B * nb, cur)
        logits = dec.step(flat[:, -1])
    n = opts.num_return_sequences
    sequences = sequences[:, :n].reshape(B * n, -1)
    beam_idx = beam_idx[:, :n].reshape(B * n, -1)
    generated = int((beam_idx + 1).bool().sum(1).max())
    return sequences[:, :T0 + generated]


def _early_stop_heuristic(improvable, running_scores, beam_scores, finished, cur, max_length, T0,
                          early, lp) -> torch.Tensor:
    """Can a running beam still beat the worst finished one? (transformers' heuristic)"""
    if early == "never" and lp > 0.0:
        best_len = max_length - T0
    else:
        best_len = cur - T0
    best_running = running_scores[:, :1] / (best_len ** lp)
    worst_finished = torch.where(finished, beam_scores.min(1, keepdim=True)[0], -1.0e9)
    return improvable & (best_running > worst_finished).any(-1, keepdim=True)
