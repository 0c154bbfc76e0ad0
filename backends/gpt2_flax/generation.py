"""`generate`, compiled end to end: prefill plus a `lax.while_loop` decode in one `jax.jit` call.

Static shapes: the prompt is left-padded (mask 0) to a bucket length and the new-token budget
rounded up to a bucket, so a new prompt, or one of nearby length, reuses the compiled function.
Bucket padding is exact: masked keys get probability 0 and positions come from the mask
(`gpt2_core.reference.default_position_ids`), as for the user's own left padding.

Greedy and sampling follow Hugging Face's `_sample`; beam search follows its vectorised
`_beam_search` (top 2*num_beams continuations, running and finished beams, length penalty,
`early_stopping` True/False/"never").

`num_return_sequences` follows HF too: sampling repeats each prompt row (rows
`[p0, p0, ..., p1, p1, ...]`) and draws every row independently; beam search returns each
prompt's best finished hypotheses, best first.

Streaming: a `streamer` (HF's protocol, `put(prompt)`, `put(tokens)` once per step, `end()`)
is called from inside the compiled loop through an ordered `io_callback`; without a streamer
the compiled program holds no callback at all (`stream` is a static argument).
"""

from __future__ import annotations

import functools
import itertools
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import io_callback

from gpt2_core.reference import check_inputs
from gpt2_core.sampling import SamplingConfig
from gpt2_flax import processors
from gpt2_flax.modeling import KVCache, default_position_ids

Array = jax.Array
TRACE_COUNT = {"generate": 0, "beam_search": 0}
"""Times each compiled function was traced (tests read it to prove there is no retrace)."""


class Streamer(Protocol):
    """Hugging Face's streamer protocol (e.g. `transformers.TextStreamer`).

    `put` gets the prompt (B, T) first, then each step's new tokens (B,) as NumPy arrays;
    `end` is called once generation is over.
    """

    def put(self, value: np.ndarray) -> None: ...

    def end(self) -> None: ...


_STREAMERS: dict[int, Streamer] = {}
_STREAM_IDS = itertools.count(1)
# The compiled loop passes a (traced) stream id, not the streamer: a new streamer object must
# not retrace, and concurrent generate calls (threads) each reach their own streamer.


def _stream_tokens(stream_id: np.ndarray, tokens: np.ndarray) -> None:
    _STREAMERS[int(stream_id)].put(np.asarray(tokens))


def bucket(n: int, minimum: int = 16) -> int:
    """The next power of two >= n (at least `minimum`), then multiples of 256 beyond 256."""
    if n <= 256:
        return max(minimum, 1 << max(n - 1, 0).bit_length())
    return -(-n // 256) * 256


def _head(model, rows: int) -> Array | None:
    """The LM head as a materialised (C, V) matrix when `rows` > 1, made once per call.

    With several rows, XLA CPU's matmul against the plain [in, out] matrix is ~25% faster than
    contracting `wte`'s C axis in place; one row is a matrix-vector product that reads the
    table either way, so it skips the 154 MB (GPT-2) copy. None: `model.logits` decides.
    """
    return model.head_matrix().astype(model.dtype) if rows > 1 else None


def _logits(model, x: Array, head: Array | None) -> Array:
    """(B, C) -> float32 (B, V)."""
    logits = model.logits(x) if head is None else x @ head
    return logits.astype(jnp.float32)


def _prefill(model, ids: Array, key_mask: Array, M: int, head: Array | None):
    """Run the padded prompt; returns the cache and float32 logits of the last position."""
    B, Tb = ids.shape
    cache = KVCache.zeros(model.config, B, M, model.dtype)
    positions = default_position_ids(key_mask, jnp.zeros((), jnp.int32), B, Tb)
    x, cache, _, _ = model.transformer(ids, positions, cache, key_mask)
    return cache, _logits(model, x[:, -1], head)  # (B, V): only the last position


def _decode_step(model, tokens: Array, cache: KVCache, key_mask: Array, head: Array | None):
    """One token per row: (B,) -> float32 logits (B, V) and the cache."""
    positions = (key_mask.sum(-1, dtype=jnp.int32) - 1)[:, None]  # as HF: cumsum(mask) - 1
    x, cache, _, _ = model.transformer(tokens[:, None], positions, cache, key_mask)
    return _logits(model, x[:, -1], head), cache


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "eos", "pad", "n_bucket", "stream"))
def _generate(graphdef, state, ids, key_mask, prompt_len, max_new, key, stream_id, *,
              cfg: SamplingConfig, eos: tuple[int, ...], pad: int, n_bucket: int, stream: bool):
    TRACE_COUNT["generate"] += 1
    model = nnx.merge(graphdef, state)
    B, Tb = ids.shape
    M = Tb + n_bucket
    key_mask = jnp.pad(key_mask, ((0, 0), (0, n_bucket)))  # (B, M)
    seq = jnp.pad(ids, ((0, 0), (0, n_bucket)), constant_values=pad)  # (B, M)
    head = _head(model, B)
    cache, logits = _prefill(model, ids, key_mask, M, head)
    start = Tb - prompt_len  # the user's prompt (their own padding included) starts here
    eos_arr = jnp.asarray(eos if eos else (-1,), jnp.int32)

    def cond(carry):
        step, _, _, _, done, _, _ = carry
        return (step < max_new) & ~jnp.all(done)

    def body(carry):
        step, cache, seq, key_mask, done, key, logits = carry
        slot = Tb + step
        scores = processors.process(logits, seq, start, slot, cfg, step, eos)
        key, sub = jax.random.split(key)
        if cfg.do_sample:
            token = jax.random.categorical(sub, scores, axis=-1).astype(jnp.int32)
        else:
            token = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        # Finished rows emit `pad` but feed the model id 0: `pad` defaults to the eos id, which
        # may lie outside a small vocabulary (an out-of-range id embeds as NaN here).
        feed = jnp.where(done, 0, token)
        token = jnp.where(done, pad, token)
        done = done | jnp.isin(token, eos_arr)
        if stream:  # ordered: the host sees the steps in order, each as soon as it is sampled
            io_callback(_stream_tokens, None, stream_id, token, ordered=True)
        seq = jax.lax.dynamic_update_slice(seq, token[:, None], (0, slot))
        key_mask = jax.lax.dynamic_update_slice(key_mask, jnp.ones((B, 1), key_mask.dtype),
                                                (0, slot))
        logits, cache = _decode_step(model, feed, cache, key_mask, head)
        return step + 1, cache, seq, key_mask, done, key, logits

    carry = (jnp.zeros((), jnp.int32), cache, seq, key_mask, jnp.zeros((B,), bool), key, logits)
    step, _, seq, _, _, _, _ = jax.lax.while_loop(cond, body, carry)
    return seq[:, Tb:], step


def _beam_gather(x: Array, idx: Array) -> Array:
    """x (B, K, ...), idx (B, k) -> (B, k, ...)."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "eos", "pad", "n_bucket",
                                             "num_beams", "length_penalty", "early_stopping"))
def _beam_search(graphdef, state, ids, key_mask, prompt_len, max_new, *, cfg: SamplingConfig,
                 eos: tuple[int, ...], pad: int, n_bucket: int, num_beams: int,
                 length_penalty: float, early_stopping):
    TRACE_COUNT["beam_search"] += 1
    model = nnx.merge(graphdef, state)
    B, Tb = ids.shape
    nb, M = num_beams, Tb + n_bucket
    K = max(2, 1 + len(eos)) * nb
    key_mask = jnp.pad(key_mask, ((0, 0), (0, n_bucket)))
    head = _head(model, B * nb)
    cache, logits = _prefill(model, ids, key_mask, M, head)
    # every beam starts from the prompt: repeat rows (exact; HF prefills the repeated rows)
    cache = cache.reorder(jnp.repeat(jnp.arange(B), nb))
    logits = jnp.repeat(logits, nb, axis=0)  # (B*nb, V)
    key_mask = jnp.repeat(key_mask, nb, axis=0)
    seq0 = jnp.pad(ids, ((0, 0), (0, n_bucket)), constant_values=pad)
    running = jnp.repeat(seq0[:, None], nb, axis=1)  # (B, nb, M)
    running_scores = jnp.zeros((B, nb)).at[:, 1:].set(-1e9)
    start = Tb - prompt_len
    eos_arr = jnp.asarray(eos if eos else (-1,), jnp.int32)
    top_mask = jnp.arange(K) < nb
    carry = dict(step=jnp.zeros((), jnp.int32), cache=cache, logits=logits, key_mask=key_mask,
                 running=running, running_scores=running_scores, seqs=running,
                 scores=jnp.full((B, nb), -1e9), lengths=jnp.zeros((B, nb), jnp.int32),
                 finished=jnp.zeros((B, nb), bool), unsat=jnp.ones((B, 1), bool),
                 go=jnp.ones((), bool))

    def body(c):
        step, slot = c["step"], Tb + c["step"]
        flat = c["running"].reshape(B * nb, M)
        log_probs = jax.nn.log_softmax(c["logits"], axis=-1)
        log_probs = processors.process(log_probs, flat, start, slot, cfg, step, eos)
        V = log_probs.shape[-1]
        acc = (log_probs.reshape(B, nb, V) + c["running_scores"][:, :, None]).reshape(B, nb * V)
        topk_lp, topk_idx = jax.lax.top_k(acc, K)  # (B, K)
        src, tok = topk_idx // V, (topk_idx % V).astype(jnp.int32)
        topk_seq = _beam_gather(c["running"], src).at[:, :, slot].set(tok)  # (B, K, M)
        hits = jnp.isin(tok, eos_arr) | (step + 1 >= max_new)
        # the best num_beams unfinished continuations keep running
        run_lp = topk_lp + hits * -1e9
        nxt = jax.lax.top_k(run_lp, nb)[1]
        running, running_scores = _beam_gather(topk_seq, nxt), _beam_gather(run_lp, nxt)
        rows = (jnp.arange(B)[:, None] * nb + _beam_gather(src, nxt)).reshape(-1)
        # finished hypotheses: merge the new ones with the kept ones, keep the best num_beams
        fin_lp = topk_lp / jnp.power((step + 1).astype(jnp.float32), length_penalty)
        full = jnp.all(c["finished"], axis=-1, keepdims=True) & (early_stopping is True)
        fin_lp = fin_lp + full * -1e9 + (~c["unsat"]) * -1e9
        did = hits & top_mask[None, :]
        fin_lp = fin_lp + (~did) * -1e9
        merged_scores = jnp.concatenate([c["scores"], fin_lp], axis=1)
        best = jax.lax.top_k(merged_scores, nb)[1]
        seqs = _beam_gather(jnp.concatenate([c["seqs"], topk_seq], axis=1), best)
        scores = _beam_gather(merged_scores, best)
        lengths = _beam_gather(jnp.concatenate(
            [c["lengths"], jnp.full((B, K), step + 1, jnp.int32)], axis=1), best)
        finished = _beam_gather(jnp.concatenate([c["finished"], did], axis=1), best)
        # early-stop heuristic, with the length counted after this step
        new_len = step + 1
        best_len = (max_new if (early_stopping == "never" and length_penalty > 0.0) else new_len)
        best_running = running_scores[:, :1] / jnp.power(
            jnp.asarray(best_len, jnp.float32), length_penalty)
        worst = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), -1e9)
        unsat = c["unsat"] & jnp.any(best_running > worst, axis=-1, keepdims=True)
        go = (jnp.any(unsat) & ~(jnp.all(finished) & (early_stopping is True))
              & ~jnp.all(hits))
        key_mask = c["key_mask"].at[:, slot].set(1)
        logits, cache = _decode_step(model, running.reshape(B * nb, M)[:, slot],
                                     c["cache"].reorder(rows), key_mask, head)
        return dict(step=new_len, cache=cache, logits=logits, key_mask=key_mask, running=running,
                    running_scores=running_scores, seqs=seqs, scores=scores, lengths=lengths,
                    finished=finished, unsat=unsat, go=go)

    c = jax.lax.while_loop(lambda c: c["go"] & (c["step"] < max_new), body, carry)
    # every kept hypothesis, best first (B, nb, n_bucket): the caller takes num_return_sequences
    return c["seqs"][:, :, Tb:], c["lengths"]


def _prompt(model, input_ids, attention_mask, max_new_tokens: int):
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    mask = np.ones(ids.shape, np.int32) if attention_mask is None else np.asarray(attention_mask)
    if mask.ndim == 1:
        mask = mask[None]
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive integer. Received: {max_new_tokens!r}.")
    check_inputs(model.config, ids, mask, None, None, 0, None)
    T = ids.shape[1]
    if T + max_new_tokens > model.config.n_positions:
        raise ValueError(
            f"The prompt length {T} + `max_new_tokens`={max_new_tokens} exceeds the model's "
            f"`n_positions`={model.config.n_positions}. Shorten the prompt or lower max_new_tokens.")
    return ids, mask


def _check_counts(num_beams, num_return_sequences, do_sample: bool, streamer) -> None:
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"`num_beams` must be a positive integer. Received: {num_beams!r}.")
    n = num_return_sequences
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"`num_return_sequences` must be a positive integer. Received: "
                         f"num_return_sequences={n!r}.")
    if num_beams > 1:
        if do_sample:
            raise ValueError("Beam sampling is not supported: pass `do_sample=False` with "
                             f"`num_beams`={num_beams}, or `num_beams=1` to sample.")
        if n > num_beams:
            raise ValueError(f"`num_return_sequences` must be at most `num_beams` with beam "
                             f"search. Received: num_return_sequences={n}, num_beams={num_beams}. "
                             "Raise num_beams or lower num_return_sequences.")
        if streamer is not None:
            raise ValueError("`streamer` cannot be used with beam search (num_beams > 1), as in "
                             "transformers: beams are reordered until the end. Use num_beams=1 "
                             "to stream.")
    elif n > 1 and not do_sample:
        raise ValueError("Greedy decoding gives one sequence per prompt: `num_return_sequences` "
                         f"> 1 needs `do_sample=True` or `num_beams` >= {n}. Received: "
                         f"num_return_sequences={n}, do_sample=False, num_beams=1.")


def _eos_and_pad(model, eos_token_id, pad_token_id) -> tuple[tuple[int, ...], int]:
    eos = model.config.eos_token_ids if eos_token_id is None else (
        (eos_token_id,) if isinstance(eos_token_id, int) else tuple(eos_token_id))
    pad = pad_token_id if pad_token_id is not None else model.config.pad_token_id
    pad = pad if pad is not None else (eos[0] if eos else 0)
    return eos, pad


def _to_bucket(ids: np.ndarray, mask: np.ndarray) -> tuple[Array, Array]:
    """Left-pad (B, T) to (B, bucket(T)) with masked id 0 (a filler must be a valid id)."""
    B, T = ids.shape
    Tb = bucket(T)
    padded = np.zeros((B, Tb), np.int32)
    padded[:, Tb - T:] = ids
    padded_mask = np.zeros((B, Tb), np.int32)
    padded_mask[:, Tb - T:] = mask
    return jnp.asarray(padded), jnp.asarray(padded_mask)


def _sample(model, ids, mask, max_new_tokens: int, key, streamer: Streamer | None, **static
            ) -> np.ndarray:
    """Greedy or sampled new tokens (B, n), streamed to `streamer` as they are produced."""
    graphdef, state = nnx.split(model)
    stream_id = 0
    if streamer is not None:
        stream_id = next(_STREAM_IDS)
        _STREAMERS[stream_id] = streamer
    try:
        new, n = _generate(graphdef, state, *_to_bucket(ids, mask), ids.shape[1], max_new_tokens,
                           key, stream_id, stream=streamer is not None, **static)
        new = np.asarray(new)[:, :int(n)]
        if streamer is not None:
            jax.effects_barrier()  # every ordered callback has run before `end`
    finally:
        _STREAMERS.pop(stream_id, None)
    return new


def _beams(model, ids, mask, max_new_tokens: int, num_return_sequences: int, **static
           ) -> np.ndarray:
    """The best `num_return_sequences` hypotheses per prompt: (B * num_return_sequences, n)."""
    graphdef, state = nnx.split(model)
    seqs, lengths = _beam_search(graphdef, state, *_to_bucket(ids, mask), ids.shape[1],
                                 max_new_tokens, **static)
    keep = num_return_sequences
    n = int(np.max(np.asarray(lengths)[:, :keep]))  # HF: the longest returned hypothesis
    seqs = np.asarray(seqs)[:, :keep, :n]  # (B, keep, n)
    return seqs.reshape(-1, n)


def generate(model, input_ids, attention_mask=None, *, max_new_tokens: int = 20,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float | None = None,
             no_repeat_ngram_size: int | None = None, min_new_tokens: int = 0,
             num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
             num_return_sequences: int = 1, eos_token_id: int | list[int] | None = None,
             pad_token_id: int | None = None, key: Array | None = None,
             streamer: Streamer | None = None) -> np.ndarray:
    """Prompt plus new tokens, as Hugging Face's `generate` returns them.

    Shapes: input_ids (B, T) (left-padded, with `attention_mask`, for prompts of different
    lengths) -> (B * num_return_sequences, T + n), n <= max_new_tokens (generation stops when
    every row has hit an end-of-sequence id; finished rows are filled with `pad_token_id`).

    Args:
        num_return_sequences: sequences per prompt, in rows `[p0, p0, ..., p1, ...]`. Sampling
            draws each independently; beam search returns the best hypotheses, best first
            (at most `num_beams`). Greedy decoding allows only 1.
        eos_token_id: one id or several; default `config.eos_token_ids`.
        pad_token_id: fill after EOS; default `config.pad_token_id`, else the first EOS id.
        key: PRNG key for sampling (`jax.random.key(seed)`); the same key gives the same tokens.
            Default `jax.random.key(0)`.
        streamer: Hugging Face-style streamer: `put(prompt)`, then `put(tokens)` with the (B,)
            new tokens of each step while the compiled loop runs, then `end()`. Not with beams.
    """
    ids, mask = _prompt(model, input_ids, attention_mask, max_new_tokens)
    _check_counts(num_beams, num_return_sequences, do_sample, streamer)
    cfg = SamplingConfig(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                         repetition_penalty=repetition_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens)
    eos, pad = _eos_and_pad(model, eos_token_id, pad_token_id)
    static = dict(cfg=cfg, eos=eos, pad=pad, n_bucket=bucket(max_new_tokens))
    if num_beams > 1:
        new = _beams(model, ids, mask, max_new_tokens, num_return_sequences, num_beams=num_beams,
                     length_penalty=float(length_penalty), early_stopping=early_stopping,
                     **static)
        ids = np.repeat(ids, num_return_sequences, axis=0)
        return np.concatenate([ids.astype(new.dtype), new], axis=1)
    if streamer is not None:
        streamer.put(ids)  # the prompt first, as HF (before rows are repeated)
    ids, mask = np.repeat(ids, num_return_sequences, 0), np.repeat(mask, num_return_sequences, 0)
    key = jax.random.key(0) if key is None else key
    new = _sample(model, ids, mask, max_new_tokens, key, streamer, **static)
    if streamer is not None:
        streamer.end()
    return np.concatenate([ids.astype(new.dtype), new], axis=1)
