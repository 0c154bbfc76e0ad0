"""`generate`, compiled end to end: prefill plus a `lax.while_loop` decode in one `nnx.jit` call.

The rules are `gpt2_core`'s: arguments are merged and resolved by
`gpt2_core.generation_config` (every default and every error), processors run in the order of
`gpt2_core.sampling.active_processors`, sampling is Gumbel-max over `gpt2_core.threefry` noise
(ported bit for bit in `gpt2_flax.threefry`), stop strings are `StopStringTables` automata, and
the loops follow `gpt2_core.generation.sample` and `beam_search` step for step. This module
holds the tensor math of one step and the compiled loops over typed state records.

Static shapes: the prompt is left-padded (mask 0) to a bucket length and the new-token budget
rounded up to a bucket; the prompt length, budget, min length, seed and stop tables are traced
arguments, so a new prompt of nearby length reuses the compiled loop. Bucket padding is exact:
masked keys get probability 0 and positions come from the mask.

Composable: called inside the user's `jit` (`nnx.jit(lambda m, ids: m.generate(ids))`), the same
code traces; the results are device arrays (pytree records with `return_dict_in_generate`).
Traced results cannot be cut at the step where every row finished, so they hold all
`max_new_tokens` positions (finished rows filled as usual) and every step's scores slot (NaN
for steps not taken).

Streaming: a `streamer` (transformers' protocol) gets the prompt rows first, then each step's
tokens from inside the compiled loop through an ordered `io_callback`; without a streamer the
compiled program holds no callback at all.
"""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import io_callback

from gpt2_core.generation import BEAM_NEG, StopStringTables, Streamer, draw_seed, output_fill, prepare_inputs
from gpt2_core.generation_config import GenerationPlan, check_streamer, merge, resolve, start_ids
from gpt2_core.sampling import active_processors
from gpt2_flax import processors, threefry
from gpt2_flax.inputs import is_traced
from gpt2_flax.modeling import KVCache, default_position_ids
from gpt2_flax.outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from gpt2_flax.processors import ProcessorState

Array = jax.Array
TRACE_COUNT = {"sample": 0, "beam_search": 0}
"""Times each compiled loop was traced (tests read it to prove there is no retrace)."""

__all__ = ["Streamer", "bucket", "generate"]

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


# ---- what a compiled loop is traced for, and the per-call numbers ------------------------------
@dataclasses.dataclass(frozen=True)
class Program:
    """The static part of a call (hashable: a static argument of the compiled loops)."""

    plan: GenerationPlan          # the resolved plan, per-call numbers cleared (see `of`)
    processors: tuple[str, ...]   # `active_processors(plan)` names, in table order
    n_bucket: int                 # new-token slots in every buffer
    fill: int                     # the id after a row's end: pad (sampling) or `output_fill` (beams)
    stream: bool                  # call the streamer each step

    @classmethod
    def of(cls, plan: GenerationPlan, stream: bool) -> Program:
        static = dataclasses.replace(plan, batch_size=0, prompt_length=0, max_new_tokens=0,
                                     min_length=0, seed=None, stop_strings=(),
                                     return_dict_in_generate=False)
        fill = output_fill(plan) if plan.num_beams > 1 else plan.pad_token_id
        return cls(static, tuple(p.name for p in active_processors(plan)),
                   bucket(plan.max_new_tokens), fill, stream)


class Call(NamedTuple):
    """The per-call numbers, traced: changing them never retraces."""

    prompt_len: Array          # () int32: T0, the prompt width (the user's own padding included)
    max_new: Array             # () int32: plan.max_new_tokens
    min_new: Array             # () int32: eos banned while step < plan.min_length - T0
    key: Array                 # (2,) uint32: Threefry key words of the seed
    stream_id: Array           # () int32: the `_STREAMERS` entry, 0 without a streamer
    transitions: Array | None  # (n_stop, M + 1, V) int32: `StopStringTables.transitions`
    hits: Array | None         # (n_stop, M + 1, V) bool


# ---- the tensor math of a step ----------------------------------------------------------------
def _head(model, rows: int) -> Array | None:
    """The LM head as a materialised (C, V) matrix when `rows` > 1, made once per call.

    With several rows, XLA CPU's matmul against the plain [in, out] matrix is ~25% faster than
    contracting `wte`'s C axis in place; one row is a matrix-vector product that reads the
    table either way, so it skips the 154 MB (GPT-2) copy. None: `model.logits` decides.
    """
    return model.head_matrix().astype(model.dtype) if rows > 1 else None


def _logits(model, x: Array, head: Array | None) -> Array:
    """(N, C) -> float32 (N, V)."""
    logits = model.logits(x) if head is None else x @ head
    return logits.astype(jnp.float32)


def _prefill(model, ids: Array, key_mask: Array, k: int, head: Array | None):
    """Run the (B, Tb) bucketed prompt once, then repeat every row k times (rows
    `[p0 x k, p1 x k, ...]`; exact: rows never mix). Returns the cache (B * k rows, M slots),
    the last position's float32 logits (B * k, V) and the key mask (B * k, M)."""
    B, Tb = ids.shape
    M = key_mask.shape[1]
    cache = KVCache.zeros(model.config, B, M, model.dtype)
    positions = default_position_ids(key_mask, jnp.zeros((), jnp.int32), B, Tb)
    x, cache, _, _ = model.transformer(ids, positions, cache, key_mask)
    logits = _logits(model, x[:, -1], head)
    if k > 1:
        cache = cache.reorder(jnp.repeat(jnp.arange(B), k))
        logits, key_mask = jnp.repeat(logits, k, 0), jnp.repeat(key_mask, k, 0)
    return cache, logits, key_mask


def _decode_step(model, tokens: Array, cache: KVCache, key_mask: Array, head: Array | None):
    """One token per row: (N,) -> float32 logits (N, V) and the cache."""
    positions = (key_mask.sum(-1, dtype=jnp.int32) - 1)[:, None]  # as HF: cumsum(mask) - 1
    # a pad of -1 (no eos and no pad id) would embed as NaN; finished rows' logits are unused
    x, cache, _, _ = model.transformer(jnp.maximum(tokens, 0)[:, None], positions, cache, key_mask)
    return _logits(model, x[:, -1], head), cache


def _stop_step(call: Call, state: Array, tokens: Array) -> tuple[Array, Array]:
    """`StopStringTables.step`: state (N, n_stop), tokens (N,) -> state, hit (N,)."""
    s = jnp.arange(state.shape[1])[None, :]
    t = tokens[:, None]
    return call.transitions[s, state, t], call.hits[s, state, t].any(-1)


def _stop_init(call: Call, ids: Array, start: Array) -> Array | None:
    """`StopStringTables.initial_state` over each row's prompt slots [start, Tb)."""
    if call.transitions is None:
        return None
    state = jnp.zeros((ids.shape[0], call.transitions.shape[0]), jnp.int32)
    step = lambda j, st: _stop_step(call, st, jax.lax.dynamic_index_in_dim(ids, j, 1, False))[0]  # noqa: E731
    return jax.lax.fori_loop(start, ids.shape[1], step, state)


def _record(buffer: Array | None, value: Array, step: Array) -> Array | None:
    """Write one step's (N, V) into a (n_bucket, N, V) output buffer (None: not requested)."""
    return None if buffer is None else jax.lax.dynamic_update_index_in_dim(buffer, value, step, 0)


def _buffers(program: Program, N: int, V: int) -> tuple[Array | None, Array | None]:
    shape = (program.n_bucket, N, V)
    return (jnp.full(shape, jnp.nan, jnp.float32) if program.plan.output_scores else None,
            jnp.full(shape, jnp.nan, jnp.float32) if program.plan.output_logits else None)


def _bucketed(ids: Array, mask: Array, n_bucket: int) -> tuple[Array, Array, Array]:
    """(B, T0) -> ids (B, Tb) with filler 0 on the left, the key mask (B, Tb + n_bucket) and each
    row's first attended slot (B,). NumPy when concrete: no device ops before the loop."""
    B, T0 = ids.shape
    Tb = bucket(T0)
    xp = jnp if is_traced(ids) or is_traced(mask) else np
    ids = xp.pad(ids, ((0, 0), (Tb - T0, 0)))
    key_mask = xp.pad(mask, ((0, 0), (Tb - T0, n_bucket)))
    padding = xp.maximum(xp.argmax(key_mask != 0, -1), Tb - T0).astype(np.int32)
    return ids, key_mask, padding


# ---- greedy decoding and sampling ------------------------------------------------------------
class SampleState(NamedTuple):
    """The carry of `gpt2_core.generation.sample`'s loop."""

    step: Array                # () int32: new tokens so far
    cache: KVCache             # L x (N, nh, M, hs)
    logits: Array              # (N, V) float32: raw logits of the next token
    seq: Array                 # (N, M) int32: filler, each row so far, then `fill`
    key_mask: Array            # (N, M) int32: 1 = attended slot
    unfinished: Array          # (N,) bool
    stop: Array | None         # (N, n_stop) int32: stop-string automaton states
    scores: Array | None       # (n_bucket, N, V) float32: processed scores (output_scores)
    raw: Array | None          # (n_bucket, N, V) float32: raw logits (output_logits)


def _choose(scores: Array, plan: GenerationPlan, key: Array, step: Array) -> Array:
    """`gpt2_core.generation.choose`: argmax, or Gumbel-max with the step's noise."""
    if plan.do_sample:
        scores = scores + threefry.gumbel(key, step, scores.shape[0], scores.shape[1])
    return jnp.argmax(scores, -1).astype(jnp.int32)


@nnx.jit(static_argnames=("program",))
def _sample(model, ids: Array, key_mask: Array, padding: Array, call: Call, *, program: Program):
    """Shapes: ids (B, Tb), key_mask (B, Tb + n_bucket), padding (B,) (`_bucketed`)."""
    TRACE_COUNT["sample"] += 1
    plan = program.plan
    k = plan.num_return_sequences
    Tb = ids.shape[1]
    start = Tb - call.prompt_len
    N = ids.shape[0] * k
    head = _head(model, N)
    cache, logits, key_mask = _prefill(model, ids, key_mask, k, head)
    ids, padding = jnp.repeat(ids, k, 0), jnp.repeat(padding, k, 0)
    seq = jnp.pad(ids, ((0, 0), (0, program.n_bucket)), constant_values=program.fill)  # (N, M)
    eos = jnp.asarray(plan.eos_token_ids, jnp.int32)

    def body(st: SampleState) -> SampleState:
        state = ProcessorState(st.seq, start, Tb + st.step, padding, st.step, call.min_new)
        scores = processors.apply(st.logits, state, plan, program.processors)
        tokens = _choose(scores, plan, call.key, st.step)
        if plan.eos_token_ids:  # finished rows are padded when eos ends rows, as in transformers
            tokens = jnp.where(st.unfinished, tokens, program.fill)
        if program.stream:  # ordered: the host sees the steps in order, each as it is chosen
            io_callback(_stream_tokens, None, call.stream_id, tokens, ordered=True)
        unfinished = st.unfinished & ~jnp.isin(tokens, eos) if plan.eos_token_ids else st.unfinished
        stop = st.stop
        if stop is not None:
            stop, hit = _stop_step(call, stop, tokens)
            unfinished = unfinished & ~hit
        seq = jax.lax.dynamic_update_slice(st.seq, tokens[:, None], (0, Tb + st.step))
        key_mask = jax.lax.dynamic_update_slice(st.key_mask, jnp.ones((N, 1), st.key_mask.dtype),
                                                (0, Tb + st.step))
        new_logits, cache = _decode_step(model, tokens, st.cache, key_mask, head)
        return SampleState(st.step + 1, cache, new_logits, seq, key_mask, unfinished, stop,
                           _record(st.scores, scores, st.step), _record(st.raw, st.logits, st.step))

    init = SampleState(jnp.zeros((), jnp.int32), cache, logits, seq, key_mask, jnp.ones((N,), bool),
                       _stop_init(call, ids, start), *_buffers(program, N, logits.shape[1]))
    st = jax.lax.while_loop(lambda st: (st.step < call.max_new) & st.unfinished.any(), body, init)
    return st.seq, st.step, st.scores, st.raw


# ---- beam search and beam sampling -----------------------------------------------------------
class BeamState(NamedTuple):
    """The carry of `gpt2_core.generation.beam_search` (its `BeamState`, plus the model's)."""

    step: Array                # () int32: steps taken
    go: Array                  # () bool: `beams_continue`
    cache: KVCache             # L x (B * nb, nh, M, hs), rows in beam order
    logits: Array              # (B * nb, V) float32: raw logits of the running beams' next token
    key_mask: Array            # (B * nb, M) int32
    running: Array             # (B, nb, M) int32: live beams, `fill` after their end
    running_scores: Array      # (B, nb) float32: their summed log-probabilities
    running_indices: Array     # (B, nb, n_bucket) int32: flat source beam of each step, -1 unused
    sequences: Array           # (B, nb, M) int32: the best finished hypotheses
    beam_scores: Array         # (B, nb) float32: their length-normalised scores, BEAM_NEG empty
    beam_indices: Array        # (B, nb, n_bucket) int32
    finished: Array            # (B, nb) bool: slot holds a finished hypothesis
    improvable: Array          # (B, 1) bool: a running beam may still beat the worst finished
    stop: Array | None         # (B, nb, n_stop) int32: stop-string automaton states
    scores: Array | None       # (n_bucket, B * nb, V) float32: processed log-probs (output_scores)
    raw: Array | None          # (n_bucket, B * nb, V) float32: raw logits (output_logits)


def _gather(x: Array, idx: Array) -> Array:
    """x (B, K, ...) rows idx (B, k) along axis 1."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def _top(x: Array, k: int) -> Array:
    """Indices of the k largest along axis 1, largest first, ties to the lower index."""
    return jax.lax.top_k(x, k)[1]


def _top_continuations(acc: Array, plan: GenerationPlan, key: Array, step: Array):
    """`gpt2_core.generation.top_continuations`: (B, nb * V) -> flat indices and scores (B, K),
    best score first; beam sampling draws them by Gumbel-top-k."""
    K = plan.beams_to_keep
    if plan.do_sample:
        B = acc.shape[0]
        noise = threefry.gumbel(key, step, B * plan.num_beams, plan.vocab_size).reshape(B, -1)
        idx = _top(acc + noise, K)
        picked = jnp.take_along_axis(acc, idx, 1)
        order = jnp.argsort(-picked, axis=1, stable=True)
        return jnp.take_along_axis(idx, order, 1), jnp.take_along_axis(picked, order, 1)
    idx = _top(acc, K)
    return idx, jnp.take_along_axis(acc, idx, 1)


def _early_stop_heuristic(improvable: Array, running_scores: Array, beam_scores: Array,
                          finished: Array, new_len: Array, call: Call, plan: GenerationPlan):
    """`gpt2_core.generation.early_stop_heuristic`, `new_len` new tokens after this step."""
    if plan.early_stopping == "never" and plan.length_penalty > 0.0:
        new_len = call.max_new
    best_running = running_scores[:, :1] / jnp.power(new_len.astype(jnp.float32), plan.length_penalty)
    worst_finished = jnp.where(finished, beam_scores.min(1, keepdims=True), BEAM_NEG)
    return improvable & (best_running > worst_finished).any(-1, keepdims=True)


def _beam_step(st: BeamState, logp: Array, call: Call, plan: GenerationPlan, Tb: int) -> BeamState:
    """`gpt2_core.generation.beam_step` on processed log-probs (B * nb, V); the model's fields
    (cache, logits, key mask) are left to the caller."""
    B, nb, _ = st.running.shape
    V, step = plan.vocab_size, st.step
    cur = Tb + step  # the buffer slot of this step's token
    acc = (logp.reshape(B, nb, V) + st.running_scores[:, :, None]).reshape(B, nb * V)
    idx, top_lp = _top_continuations(acc, plan, call.key, step)
    src, tokens = idx // V, (idx % V).astype(jnp.int32)  # (B, K) source beam, token
    top_seq = _gather(st.running, src).at[:, :, cur].set(tokens)
    top_idx = _gather(st.running_indices, src).at[:, :, step].set(
        (src + jnp.arange(B)[:, None] * nb).astype(jnp.int32))
    hits = step + 1 >= call.max_new
    if plan.eos_token_ids:
        hits = hits | jnp.isin(tokens, jnp.asarray(plan.eos_token_ids, jnp.int32))
    hits = jnp.broadcast_to(hits, tokens.shape)
    stop = None
    if st.stop is not None:
        K = src.shape[1]
        flat, hit = _stop_step(call, _gather(st.stop, src).reshape(B * K, -1), tokens.reshape(-1))
        stop = flat.reshape(B, K, -1)
        hits = hits | hit.reshape(B, K)
    # the best candidates that did not stop keep running
    run_lp = top_lp + hits * BEAM_NEG
    nxt = _top(run_lp, nb)
    running_scores = _gather(run_lp, nxt)
    # the stopped ones among the best nb enter the finished pool, length-normalised
    just = hits & (jnp.arange(hits.shape[1]) < nb)[None, :]
    fin_lp = top_lp / jnp.power((step + 1).astype(jnp.float32), plan.length_penalty)
    fin_lp = fin_lp + (st.finished.all(-1, keepdims=True) & (plan.early_stopping is True)) * BEAM_NEG
    fin_lp = fin_lp + (~st.improvable) * BEAM_NEG + (~just) * BEAM_NEG
    merged = jnp.concatenate([st.beam_scores, fin_lp], 1)
    best = _top(merged, nb)
    beam_scores = _gather(merged, best)
    finished = _gather(jnp.concatenate([st.finished, just], 1), best)
    improvable = _early_stop_heuristic(st.improvable, running_scores, beam_scores, finished,
                                       step + 1, call, plan)
    go = (improvable.any() & ~(finished.all() & (plan.early_stopping is True)) & ~hits.all())
    return st._replace(
        step=step + 1, go=go, running=_gather(top_seq, nxt), running_scores=running_scores,
        running_indices=_gather(top_idx, nxt),
        sequences=_gather(jnp.concatenate([st.sequences, top_seq], 1), best),
        beam_scores=beam_scores,
        beam_indices=_gather(jnp.concatenate([st.beam_indices, top_idx], 1), best),
        finished=finished, improvable=improvable,
        stop=None if stop is None else _gather(stop, nxt))


@nnx.jit(static_argnames=("program",))
def _beam_search(model, ids: Array, key_mask: Array, padding: Array, call: Call, *,
                 program: Program):
    """Shapes: ids (B, Tb), key_mask (B, Tb + n_bucket), padding (B,) (`_bucketed`)."""
    TRACE_COUNT["beam_search"] += 1
    plan = program.plan
    nb, n = plan.num_beams, program.n_bucket
    B, Tb = ids.shape
    start = Tb - call.prompt_len
    head = _head(model, B * nb)
    cache, logits, key_mask = _prefill(model, ids, key_mask, nb, head)
    padding = jnp.repeat(padding, nb, 0)
    running = jnp.repeat(jnp.pad(ids, ((0, 0), (0, n)), constant_values=program.fill)[:, None], nb, 1)
    stop = _stop_init(call, ids, start)
    scores, raw = _buffers(program, B * nb, logits.shape[1])
    init = BeamState(
        step=jnp.zeros((), jnp.int32), go=jnp.ones((), bool), cache=cache, logits=logits,
        key_mask=key_mask, running=running,
        running_scores=jnp.zeros((B, nb), jnp.float32).at[:, 1:].set(BEAM_NEG),
        running_indices=jnp.full((B, nb, n), -1, jnp.int32), sequences=running,
        beam_scores=jnp.full((B, nb), BEAM_NEG, jnp.float32),
        beam_indices=jnp.full((B, nb, n), -1, jnp.int32), finished=jnp.zeros((B, nb), bool),
        improvable=jnp.ones((B, 1), bool),
        stop=None if stop is None else jnp.repeat(stop[:, None], nb, 1), scores=scores, raw=raw)

    def body(st: BeamState) -> BeamState:
        step, cur = st.step, Tb + st.step
        flat = st.running.reshape(B * nb, -1)
        state = ProcessorState(flat, start, cur, padding, step, call.min_new)
        logp = processors.apply(jax.nn.log_softmax(st.logits, -1), state, plan, program.processors)
        st = _beam_step(st, logp, call, plan, Tb)
        st = st._replace(scores=_record(st.scores, logp, step), raw=_record(st.raw, st.logits, step))
        key_mask = st.key_mask.at[:, cur].set(1)
        rows = st.running_indices[:, :, step].reshape(-1)  # each running beam's source row
        tokens = st.running.reshape(B * nb, -1)[:, cur]
        logits, cache = _decode_step(model, tokens, st.cache.reorder(rows), key_mask, head)
        return st._replace(cache=cache, logits=logits, key_mask=key_mask)

    st = jax.lax.while_loop(lambda st: st.go & (st.step < call.max_new), body, init)
    return st.sequences, st.beam_indices, st.beam_scores, st.step, st.scores, st.raw


# ---- the public entry point ------------------------------------------------------------------
def _prompt(model, gen, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
    """(B, T0) int32 ids and mask (NumPy, or traced JAX arrays). Concrete inputs are checked by
    `gpt2_core.generation.prepare_inputs` (values included); traced ones (the caller's `jit`) by
    shape only, on zero placeholders: their values cannot be read (an out-of-range id embeds as
    NaN)."""
    if not (is_traced(input_ids) or is_traced(attention_mask)):
        ids, mask = prepare_inputs(model.config, gen, input_ids, attention_mask)
        return ids.astype(np.int32), mask.astype(np.int32)
    if input_ids is None:
        input_ids = start_ids(gen.bos_token_id if gen.bos_token_id is not None
                              else model.config.bos_token_id, model.config.vocab_size)
    ids = jnp.asarray(input_ids)
    ids = ids[None] if ids.ndim == 1 else ids
    mask = jnp.ones(ids.shape, jnp.int32) if attention_mask is None else jnp.asarray(attention_mask)
    mask = mask[None] if mask.ndim == 1 else mask
    prepare_inputs(model.config, gen, np.zeros(ids.shape, ids.dtype), np.zeros(mask.shape, mask.dtype))
    return ids.astype(jnp.int32), mask.astype(jnp.int32)


_TABLES: dict[tuple, tuple[weakref.ref, tuple[Array, Array]]] = {}


def _stop_tables(plan: GenerationPlan, tokenizer: Any) -> tuple[Array, Array] | None:
    """`StopStringTables` on the device, built once per (tokenizer, stop strings): building reads
    every token's bytes, which takes seconds for GPT-2's 50,257 tokens."""
    if not plan.stop_strings:
        return None
    key = (id(tokenizer), len(tokenizer) if hasattr(tokenizer, "__len__") else None,
           plan.stop_strings, plan.vocab_size)
    if key in _TABLES and _TABLES[key][0]() is tokenizer:
        return _TABLES[key][1]
    built = StopStringTables.cached(plan.stop_strings, tokenizer, plan.vocab_size)
    tables = (jnp.asarray(built.transitions), jnp.asarray(built.hits))
    try:
        _TABLES[key] = (weakref.ref(tokenizer), tables)
    except TypeError:  # a tokenizer without weak references is not cached
        return tables
    while len(_TABLES) > 8:
        _TABLES.pop(next(iter(_TABLES)))
    return tables


def _call(plan: GenerationPlan, tables: tuple[Array, Array] | None, stream_id: int) -> Call:
    seed = (plan.seed if plan.seed is not None else draw_seed()) if plan.do_sample else 0
    return Call(
        prompt_len=jnp.asarray(plan.prompt_length, jnp.int32),
        max_new=jnp.asarray(plan.max_new_tokens, jnp.int32),
        min_new=jnp.asarray(plan.min_length - plan.prompt_length, jnp.int32),
        key=threefry.key_words(seed), stream_id=jnp.asarray(stream_id, jnp.int32),
        transitions=None if tables is None else tables[0], hits=None if tables is None else tables[1])


def _concrete(*values: Array, default: int) -> list[int]:
    """Host ints of traced-free scalars (one transfer), or `default` for each under tracing."""
    if any(is_traced(v) for v in values):
        return [default] * len(values)
    return [int(v) for v in jax.device_get(values)]


def _steps(buffer: Array | None, n: int) -> tuple[Array, ...] | None:
    """A (n_bucket, N, V) buffer as transformers' tuple of one (N, V) array per step taken."""
    return None if buffer is None else tuple(buffer[i] for i in range(n))


def generate(model, input_ids: Any = None, attention_mask: Any = None, generation_config: Any = None,
             *, streamer: Streamer | None = None, tokenizer: Any = None, **kwargs: Any) -> Any:
    """Continue each prompt, as transformers' `generate` (and `gpt2_core.generation.generate`).

    Shapes: input_ids (B, T0) (left-pad rows of different lengths and pass attention_mask
    (B, T0)) -> sequences (B * k, T0 + n) int32, k = num_return_sequences, n <= the resolved
    max_new_tokens (all of it when traced).

    Args:
        generation_config: a `GenerationConfig`, a mapping, or any object with `to_dict()`;
            merged over `model.generation_config`, and `kwargs` (GenerationConfig fields) over it.
        streamer: transformers' protocol: `put(prompt rows)`, `put(tokens)` each step from the
            compiled loop, `end()`. Not with beam search, nor inside the caller's `jit`.
        tokenizer: turns tokens into bytes for `stop_strings`.

    `seed=None` with `do_sample=True` takes a fresh seed (`gpt2_core.generation.draw_seed`); under
    the caller's `jit` it is drawn once, when tracing.

    Returns the sequences, or with `return_dict_in_generate=True` a `GenerateDecoderOnlyOutput`
    (greedy, sampling) or `GenerateBeamDecoderOnlyOutput` (beams); all device arrays.
    """
    gen = merge(model.generation_config, generation_config, kwargs)
    ids, mask = _prompt(model, gen, input_ids, attention_mask)
    B, T0 = ids.shape
    plan = resolve(model.config, gen, B, T0, has_tokenizer=tokenizer is not None)
    check_streamer(streamer, plan)
    if streamer is not None and is_traced(ids):
        raise ValueError("`streamer` needs concrete `input_ids`: its callbacks cannot outlive a "
                         "trace. Call generate outside `jit` to stream.")
    tables = _stop_tables(plan, tokenizer)
    program = Program.of(plan, stream=streamer is not None)
    Tb = bucket(T0)
    bucketed = _bucketed(ids, mask, program.n_bucket)  # outside the jit: one trace per bucket
    if plan.num_beams > 1:
        seqs, indices, beam_scores, steps, scores, raw = _beam_search(
            model, *bucketed, _call(plan, tables, 0), program=program)
        k = plan.num_return_sequences
        seqs, indices = seqs[:, :k].reshape(B * k, -1), indices[:, :k].reshape(B * k, -1)
        generated, steps = _concrete((indices >= 0).sum(1).max(), steps, default=plan.max_new_tokens)
        sequences = seqs[:, Tb - T0:Tb + generated]
        if not plan.return_dict_in_generate:
            return sequences
        return GenerateBeamDecoderOnlyOutput(
            sequences=sequences, beam_indices=indices[:, :generated],
            sequences_scores=beam_scores[:, :k].reshape(-1) if plan.output_scores else None,
            scores=_steps(scores, steps), logits=_steps(raw, steps))
    stream_id = 0
    if streamer is not None:
        stream_id = next(_STREAM_IDS)
        _STREAMERS[stream_id] = streamer
        streamer.put(np.repeat(np.asarray(ids), plan.num_return_sequences, 0))  # as the reference
    try:
        seqs, steps, scores, raw = _sample(model, *bucketed, _call(plan, tables, stream_id),
                                           program=program)
        (steps,) = _concrete(steps, default=plan.max_new_tokens)
        if streamer is not None:
            jax.effects_barrier()  # every ordered callback has run before `end`
            streamer.end()
    finally:
        _STREAMERS.pop(stream_id, None)
    sequences = seqs[:, Tb - T0:Tb + steps]
    if not plan.return_dict_in_generate:
        return sequences
    return GenerateDecoderOnlyOutput(sequences=sequences, scores=_steps(scores, steps),
                                     logits=_steps(raw, steps))
