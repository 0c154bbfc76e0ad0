"""`generate`: `gpt2_core.generation`'s spec on a preallocated KV cache, in `keras.ops`.

The rules (validation, defaults, processor order, finished-row fill, beam bookkeeping, output
fields) come from `gpt2_core`: `merge`/`resolve` give a `GenerationPlan`, the processors follow
`gpt2_core.sampling.PROCESSORS`, the noise is `gpt2_core.threefry` (`gpt2_keras.threefry`), stop
strings run as `StopStringTables` automata. This module is the tensor math of one step and its
loop.

Greedy and sampling run the whole decode loop in one compiled program, a `keras.ops.while_loop`
per cache segment (`segment_ends`: the cache grows by doubling, so attention reads the filled
part rather than the whole buffer); on TensorFlow it is traced once per shape bucket into a
`tf.function(jit_compile=True)` (XLA), on JAX into one `jax.jit`; on PyTorch the same ops run
eagerly. Shape bucketing: the prompt is left-padded (mask 0) to a multiple of `PROMPT_BUCKET`
and the buffer length rounded up to a multiple of `LENGTH_BUCKET`, so a new prompt length
reuses the compiled function (`trace_plan` drops the per-call numbers from the trace key; the
seed, the stop-string tables and the step limit are tensor arguments). The padding changes
nothing: positions come from the mask and masked keys get exactly zero weight. Beam search is
compiled whole in the same way (`gpt2_keras.beam_search`). With a `streamer`, greedy and
sampling run the loop on the host around the same compiled prefill and step (`stream`), since
a compiled loop cannot call back into Python.

Dimensions: B prompt rows, N = B * k expanded rows, P prompt, P_b bucketed prompt, S buffer,
V vocab, n_stop stop strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from gpt2_core.generation import StopStringTables, prepare_inputs
from gpt2_core.generation_config import (
    GenerationConfig,
    GenerationPlan,
    check_streamer,
    check_streaming,
    merge,
    resolve,
)
from gpt2_core.outputs import GenerateDecoderOnlyOutput
from gpt2_keras import processors, threefry
from gpt2_keras.transformer import empty_cache

PROMPT_BUCKET = 32
LENGTH_BUCKET = 64
JIT_COMPILE = True
"""XLA-compile the TensorFlow decode loop (False: a plain graph function, quicker to build; the
tiny-model tests use it, the TensorFlow-only tests cover XLA)."""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def trace_plan(plan: GenerationPlan) -> GenerationPlan:
    """The plan as a compiled loop sees it: the per-call numbers (batch, prompt length, step
    limit, seed) zeroed, so they do not retrace, and `min_length` counted in new tokens (the
    plan of an empty prompt), which is the same for every prompt when `min_new_tokens` is set."""
    return dataclasses.replace(plan, batch_size=0, prompt_length=0, max_new_tokens=0, seed=None,
                               min_length=max(plan.min_length - plan.prompt_length, 0))


class DecodeState(NamedTuple):
    """The greedy/sampling loop's state (transformers' `_sample`)."""

    cur: Any      # () int32: columns of `tokens` filled (bucketed prompt + new tokens)
    tokens: Any   # (N, S) int32: bucket padding, the prompt, the new tokens
    mask: Any     # (N, S) int32: attention mask over the buffer
    cache: Any    # per layer (key, value), each (N, nh, S_c, hs), S_c the segment's length
    logits: Any   # (N, V) float32: the next token's logits
    done: Any     # (N,) bool: rows that produced eos or completed a stop string
    seen: Any     # (N, V) bool: what the repetition penalty reads (`processors.ProcessorInputs`)
    stop: Any     # (N, n_stop) int32: stop-string automaton states
    scores: Any   # (S - P_b, N, V) float32: processed scores per step ((0,) unless output_scores)
    raw: Any      # (S - P_b, N, V) float32: logits per step ((0,) unless output_logits)


class LoopArgs(NamedTuple):
    """The loop's per-call tensors (arguments of the compiled function, not constants)."""

    start: Any        # () int32: first prompt column (bucket padding before it)
    key: Any          # (2,) threefry key words of the seed
    transitions: Any  # (n_stop, M + 1, V) int32 stop-string automata, or None
    hits: Any         # (n_stop, M + 1, V) bool, or None


def choose(scores, plan: GenerationPlan, key, step):
    """(N, V) processed scores -> (N,) int32: argmax, or Gumbel-max with the step's threefry
    noise (the spec's `choose`)."""
    if plan.do_sample:
        N, V = ops.shape(scores)[0], ops.shape(scores)[1]
        return first_argmax(scores + threefry.gumbel(key, step, N, V))
    return ops.cast(ops.argmax(scores, axis=-1), "int32")


def first_argmax(x):
    """(N, V) -> (N,) int32: the first index of each row's maximum, as `argmax`, computed as a
    max and then a min over the indices holding it. XLA:CPU on TensorFlow fuses the Threefry
    noise into `argmax`'s (value, index) reduction and its compile then runs for minutes; two
    single-output reductions compile in a second (measured with TF 2.21)."""
    V = ops.shape(x)[1]
    top = ops.max(x, axis=-1, keepdims=True)
    index = ops.where(x == top, ops.arange(V, dtype="int32")[None, :], V)
    return ops.min(index, axis=-1)


def stop_step(args: LoopArgs, state, tokens):
    """`StopStringTables.step` as two gathers: state (N, n_stop), tokens (N,) -> new state, hit (N,)."""
    n_stop, M1, V = (ops.shape(args.transitions)[i] for i in range(3))
    flat = (ops.arange(n_stop, dtype="int32")[None, :] * (M1 * V) + state * V
            + ops.cast(tokens, "int32")[:, None])
    new = ops.take(ops.reshape(args.transitions, (-1,)), flat)
    hit = ops.take(ops.reshape(args.hits, (-1,)), flat)
    return new, ops.any(hit, axis=-1)


def last_logits(model, hidden, head=None):
    """(B, T, C) -> (B, V) float32 at the last position, through `head` (C, V) when given."""
    if head is None:
        return model.lm_logits(hidden[:, -1, :])
    return ops.cast(ops.matmul(hidden[:, -1, :], head), "float32")


def loop_head(model, B):
    """The tied LM head as a (C, V) matrix in the compute dtype, built once per call outside
    the decode loop for a static batch > 1 (None otherwise: `lm_logits` then).

    At batch > 1 a GEMM against the (C, V) matrix is faster on XLA:CPU than one contracting
    `wte`'s rows (about 20% of the head's time for GPT-2 small at B=8); the copy costs one
    read of the table per call instead of per step. At batch 1 the GEMV against `wte`'s rows
    is already at memory bandwidth and the transposed copy would only add memory.
    """
    if not isinstance(B, int) or B == 1 or model.lm_head is not None:
        return None  # a symbolic batch (the SavedModel signature) keeps `lm_logits`
    wte = model.transformer.wte.weight
    return ops.cast(ops.transpose(wte), model.transformer.compute_dtype)  # (C, V)


def _record_buffer(on: bool, N, n, V):
    return ops.zeros((n, N, V) if on else (0,), "float32")


def prefill(model, plan: GenerationPlan, head, prompt, mask, args: LoopArgs, stop0, length=None):
    """Run the bucketed prompt through a fresh cache of `length` positions (default S).

    Shapes: prompt (N, P_b), mask (N, S), stop0 (N, n_stop) -> a `DecodeState` with cur = P_b.
    """
    c = model.config
    N, P_b = ops.shape(prompt)[0], ops.shape(prompt)[1]
    S = ops.shape(mask)[1]
    length = S if length is None else length
    tokens = ops.concatenate([prompt, ops.zeros((N, S - P_b), "int32")], axis=1)
    cache = empty_cache(c, N, length, model.transformer.compute_dtype)
    out = model.transformer(prompt, attention_mask=cache_mask(mask, cache), cache=cache,
                            cache_index=0)
    logits, cache = last_logits(model, out["last_hidden_state"], head), out["past_key_values"]
    seen = (processors.prompt_seen(c.vocab_size, prompt, mask[:, :P_b], args.start)
            if processors.tracks_seen(plan) else ops.zeros((N, c.vocab_size), "bool"))
    n, V = S - P_b, c.vocab_size
    return DecodeState(ops.convert_to_tensor(P_b, "int32"), tokens, mask, cache, logits,
                       ops.zeros((N,), "bool"), seen, ops.cast(stop0, "int32"),
                       _record_buffer(plan.output_scores, N, n, V),
                       _record_buffer(plan.output_logits, N, n, V))


def decode_step(model, plan: GenerationPlan, head, P_b, args: LoopArgs, st: DecodeState) -> DecodeState:
    """Choose one token per row from `logits`, write it at `cur` and run it through the model
    (one iteration of the spec's `sample`)."""
    N = ops.shape(st.tokens)[0]
    step = st.cur - P_b
    inputs = processors.ProcessorInputs(st.tokens, args.start, st.cur, step, st.seen)
    scores = processors.process(st.logits, plan, inputs)
    tok = choose(scores, plan, args.key, step)
    if plan.eos_token_ids:  # finished rows are padded when eos ends rows, as in transformers
        tok = ops.where(st.done, plan.pad_token_id, tok)
    tokens = ops.slice_update(st.tokens, [0, st.cur], tok[:, None])
    mask = ops.slice_update(st.mask, [0, st.cur], ops.ones((N, 1), "int32"))
    eos = ops.array(plan.eos_token_ids or (-1,), "int32")
    done = ops.logical_or(st.done, ops.any(tok[:, None] == eos[None, :], axis=-1))
    stop = st.stop
    if plan.stop_strings:
        stop, hit = stop_step(args, stop, tok)
        done = ops.logical_or(done, hit)
    seen = st.seen
    if processors.tracks_seen(plan):  # its only reader
        seen = processors.mark_seen(seen, tok[:, None], ops.ones((N, 1), "bool"))
    rec_scores, raw = st.scores, st.raw
    if plan.output_scores:
        rec_scores = ops.slice_update(rec_scores, [step, 0, 0], scores[None])
    if plan.output_logits:
        raw = ops.slice_update(raw, [step, 0, 0], st.logits[None])
    # a finished row's pad may be -1 (no eos, no pad id): feed a valid id, its logits are unused
    fed = tok if plan.pad_token_id >= 0 else ops.maximum(tok, 0)
    out = model.transformer(fed[:, None], attention_mask=cache_mask(mask, st.cache), cache=st.cache,
                            cache_index=st.cur)
    return DecodeState(st.cur + 1, tokens, mask, out["past_key_values"],
                       last_logits(model, out["last_hidden_state"], head), done, seen, stop,
                       rec_scores, raw)


def segment_ends(P_b, S) -> list:
    """The cache length of each segment of the decode loop: the first holds the prompt and one
    more position (rounded up to `LENGTH_BUCKET`), each next one doubles, up to S.

    At batch > 1 a decode step reads the whole cache in attention (for GPT-2 small at B=8 and
    S=192 about 110 MB, a fifth of the step), so attending over a cache that grows with the
    text instead of the full bucket saves a third of that read in a typical call; doubling
    keeps the number of compiled loop bodies (one per segment) logarithmic in S. One segment
    where the shapes are symbolic.
    """
    if not (isinstance(P_b, int) and isinstance(S, int)):
        return [S]
    ends = [min(S, _round_up(P_b + 1, LENGTH_BUCKET))]
    while ends[-1] < S:
        ends.append(min(S, 2 * ends[-1]))
    return ends


def cache_mask(mask, cache):
    """The attention mask's first columns, as many as the cache holds positions.

    Shapes: mask (B, S), cache buffers (B, nh, S_c, hs) -> (B, S_c).
    """
    S_c = ops.shape(cache[0][0])[2]
    if isinstance(S_c, int) and S_c == ops.shape(mask)[1]:
        return mask
    return mask[:, :S_c]


def grow_cache(cache, length):
    """Zero-pad every `(key, value)` buffer to `length` positions (one copy per segment).

    Shapes: per layer 2 x (B, nh, S_c, hs) -> 2 x (B, nh, length, hs).
    """
    extra = length - ops.shape(cache[0][0])[2]
    if isinstance(extra, int) and extra == 0:
        return cache
    widths = [[0, 0], [0, 0], [0, extra], [0, 0]]
    return tuple(tuple(ops.pad(t, widths) for t in layer) for layer in cache)


def decode_loop(model, plan: GenerationPlan, prompt, mask, stop, args: LoopArgs, stop0) -> DecodeState:
    """The compiled body: prefill the bucketed prompt, then decode until column `stop` or
    every row has finished, in segments of growing cache length (`segment_ends`).

    Shapes: prompt (N, P_b), mask (N, S) -> the final `DecodeState`.
    """
    model._generate_traces += 1  # runs at trace time only: counts compilations
    N, P_b = ops.shape(prompt)[0], ops.shape(prompt)[1]
    ends = segment_ends(P_b, ops.shape(mask)[1])
    head = loop_head(model, N)  # loop-invariant: built once, outside the while loops

    def body(st):
        return (decode_step(model, plan, head, P_b, args, st),)

    st = prefill(model, plan, head, prompt, mask, args, stop0, ends[0])
    for end in ends:
        st = st._replace(cache=grow_cache(st.cache, end))

        def cond(st, end=end):
            return ops.logical_and(st.cur < ops.minimum(stop, end), ops.logical_not(ops.all(st.done)))

        (st,) = ops.while_loop(cond, body, (st,))
    return st


def _compile(model, key, fn):
    """`fn` compiled for the active Keras backend, cached on the model under `key`."""
    fns = model.__dict__.setdefault("_generate_fns", {})
    key = (key, JIT_COMPILE)
    if key not in fns:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            fn = tf.function(fn, jit_compile=JIT_COMPILE, reduce_retracing=False)
        elif keras.backend.backend() == "jax":
            import jax

            fn = jax.jit(fn)  # the weights enter as constants of the compiled loop
        fns[key] = fn
    return fns[key]


def bucket_prompt(ids: np.ndarray, mask: np.ndarray, max_new_tokens: int):
    """Left-pad the prompt to the prompt bucket (id 0, mask 0); a mask buffer of the length
    bucket. Returns prompt (N, P_b), mask (N, S) and the offset P_b - P."""
    B, P = ids.shape
    P_b = _round_up(max(P, 1), PROMPT_BUCKET)
    S = _round_up(P_b + max_new_tokens, LENGTH_BUCKET)
    prompt = np.zeros((B, P_b), np.int32)
    prompt[:, P_b - P:] = ids
    mask_buf = np.zeros((B, S), np.int32)
    mask_buf[:, P_b - P:P_b] = mask
    return prompt, mask_buf, P_b - P


def loop_args(offset: int, seed: int | None, tables: StopStringTables | None) -> LoopArgs:
    return LoopArgs(ops.convert_to_tensor(offset, "int32"), threefry.key_tensor(seed or 0),
                    None if tables is None else ops.convert_to_tensor(tables.transitions, "int32"),
                    None if tables is None else ops.convert_to_tensor(tables.hits))


def stop_initial(ids: np.ndarray, tables: StopStringTables | None) -> np.ndarray:
    """(N, n_stop) automaton states after each prompt row ((N, 0) without stop strings)."""
    return np.zeros((len(ids), 0), np.int32) if tables is None else tables.initial_state(ids)


def per_step(buf, on: bool, steps: int):
    """The record buffer (n, N, V) as transformers' tuple of one (N, V) array per step taken."""
    if not on:
        return None
    buf = np.asarray(ops.convert_to_numpy(buf))
    return tuple(buf[i] for i in range(steps))


def sample_inputs(ids: np.ndarray, mask: np.ndarray, plan: GenerationPlan, seed: int | None,
                  tables: StopStringTables | None):
    """Rows repeated `num_return_sequences` times ([p0, p0, ..., p1, p1, ...]), bucketed, and the
    loop's tensors: (expanded ids (N, P), prompt (N, P_b), mask (N, S), offset, LoopArgs, stop0)."""
    k = plan.num_return_sequences
    ids, mask = np.repeat(ids, k, 0), np.repeat(mask, k, 0)
    prompt, mask_buf, offset = bucket_prompt(ids, mask, plan.max_new_tokens)
    return ids, prompt, mask_buf, offset, loop_args(offset, seed, tables), stop_initial(ids, tables)


def sample(model, ids: np.ndarray, mask: np.ndarray, plan: GenerationPlan, seed: int | None,
           tables: StopStringTables | None, streamer=None):
    """transformers' `_sample` (the spec's `sample`): each row repeated `num_return_sequences`
    times, greedy or Gumbel-max decoding, finished rows filled with pad.

    Shapes: (B, P) -> sequences (B * k, P + n), or the output record.
    """
    if not hasattr(model, "_generate_traces"):
        model._generate_traces = 0
    ids, prompt, mask_buf, offset, args, stop0 = sample_inputs(ids, mask, plan, seed, tables)
    P_b = prompt.shape[1]
    if streamer is None:
        tp = trace_plan(plan)
        fn = _compile(model, ("loop", tp), lambda *a: decode_loop(model, tp, *a))
        st = fn(ops.convert_to_tensor(prompt), ops.convert_to_tensor(mask_buf),
                ops.convert_to_tensor(P_b + plan.max_new_tokens, "int32"), args,
                ops.convert_to_tensor(stop0))
    else:
        st = _streamed(model, plan, prompt, mask_buf, args, stop0, streamer, ids)
    cur = int(ops.convert_to_numpy(st.cur))
    sequences = np.asarray(ops.convert_to_numpy(st.tokens))[:, offset:cur]
    if not plan.return_dict_in_generate:
        return sequences
    return GenerateDecoderOnlyOutput(sequences=sequences,
                                     scores=per_step(st.scores, plan.output_scores, cur - P_b),
                                     logits=per_step(st.raw, plan.output_logits, cur - P_b))


def stream(model, plan: GenerationPlan, prompt, mask_buf, args: LoopArgs, stop0) -> Iterator:
    """The decode loop on the host: the compiled loop's own `prefill` and `decode_step` (each
    compiled once per bucket) on the same preallocated cache, so the tokens are the compiled
    loop's. Yields (state, tokens (N,) int32) per step, pad for finished rows."""
    N, P_b = prompt.shape
    head = loop_head(model, N)
    tp = trace_plan(plan)
    first = _compile(model, ("prefill", tp), lambda h, p, m, a, s0: prefill(model, tp, h, p, m, a, s0))
    step = _compile(model, ("step", tp), lambda h, p, a, st: decode_step(model, tp, h, p, a, st))
    st = first(head, ops.convert_to_tensor(prompt), ops.convert_to_tensor(mask_buf), args,
               ops.convert_to_tensor(stop0))
    P_b_t = ops.convert_to_tensor(P_b, "int32")
    for cur in range(P_b, P_b + plan.max_new_tokens):
        st = step(head, P_b_t, args, st)
        yield st, np.asarray(ops.convert_to_numpy(st.tokens[:, cur]), np.int32)
        if np.asarray(ops.convert_to_numpy(st.done)).all():
            return


def _streamed(model, plan, prompt, mask_buf, args, stop0, streamer, ids) -> DecodeState:
    """`stream`, handing the prompt and each step's tokens to the streamer in transformers'
    order (`put(prompt)`, `put(tokens)` per step, `end()`)."""
    streamer.put(ids.copy())
    last = None
    for last, tok in stream(model, plan, prompt, mask_buf, args, stop0):  # noqa: B007 - kept after
        streamer.put(tok)
    streamer.end()
    return last


# ---- the public entry point ------------------------------------------------------------------
def _draw_seed() -> int:
    """`seed=None`: a seed from NumPy's global generator (seeded by `keras.utils.set_random_seed`)."""
    return int(np.random.randint(0, 2 ** 64, dtype=np.uint64))


def _string_prompts(input_ids) -> bool:
    return isinstance(input_ids, str) or (
        isinstance(input_ids, (list, tuple)) and bool(input_ids) and isinstance(input_ids[0], str))


def _encode_prompts(prompts, tokenizer, config, gen: GenerationConfig):
    """Strings -> left-padded ids and mask (the pad id the plan resolves to)."""
    if tokenizer is None:
        raise ValueError("String prompts need a tokenizer. Received: tokenizer=None. Pass "
                         "tokenizer=gpt2_tokenizer.GPT2Tokenizer.from_pretrained().")
    rows = [tokenizer.encode(p) for p in ([prompts] if isinstance(prompts, str) else prompts)]
    P = max(len(r) for r in rows)
    pad = max(resolve(config, gen, len(rows), max(P, 1), has_tokenizer=True).pad_token_id, 0)
    ids = np.full((len(rows), P), pad, np.int64)
    mask = np.zeros((len(rows), P), np.int64)
    for i, r in enumerate(rows):  # left padding: every row's next token lands in the same column
        ids[i, P - len(r):], mask[i, P - len(r):] = r, 1
    return ids, mask


def prepare(model, input_ids, attention_mask, generation_config, tokenizer, kwargs):
    """The spec's argument handling: merge the configs, read the prompt, resolve the plan, pick
    the seed, build the stop-string tables. Returns (ids (B, P) int32, mask, plan, seed, tables)."""
    config = model.config
    model_gen = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(config)
    gen = merge(model_gen, generation_config, kwargs)
    if _string_prompts(input_ids):
        input_ids, attention_mask = _encode_prompts(input_ids, tokenizer, config, gen)
    else:
        input_ids = None if input_ids is None else np.asarray(ops.convert_to_numpy(input_ids))
        if attention_mask is not None:
            attention_mask = np.asarray(ops.convert_to_numpy(attention_mask))
    ids, mask = prepare_inputs(config, gen, input_ids, attention_mask)
    plan = resolve(config, gen, ids.shape[0], ids.shape[1], has_tokenizer=tokenizer is not None)
    seed = plan.seed if plan.seed is not None or not plan.do_sample else _draw_seed()
    tables = (StopStringTables.cached(plan.stop_strings, tokenizer, config.vocab_size)
              if plan.stop_strings else None)
    return ids.astype(np.int32), mask.astype(np.int32), plan, seed, tables


def stream_tokens(model, input_ids=None, attention_mask=None, generation_config=None, *,
                  tokenizer=None, **kwargs) -> Iterator[np.ndarray]:
    """`generate`'s greedy or sampled tokens one step at a time, (N,) int32 each (pad for
    finished rows); stops when every row has finished. For command-line streaming."""
    ids, mask, plan, seed, tables = prepare(model, input_ids, attention_mask, generation_config,
                                            tokenizer, kwargs)
    check_streaming(plan)
    _, prompt, mask_buf, _, args, stop0 = sample_inputs(ids, mask, plan, seed, tables)
    for _, tok in stream(model, plan, prompt, mask_buf, args, stop0):
        yield tok


def generate(model, input_ids=None, attention_mask=None, generation_config=None, *, streamer=None,
             tokenizer=None, **kwargs):
    """Continue each prompt, with transformers' `generate` semantics (`gpt2_core.generation`).

    Shapes: input_ids (B, P) int, attention_mask (B, P) (left padding) -> sequences
    (B * k, P + n) int32 NumPy, k = num_return_sequences, n <= the plan's max_new_tokens. With
    `return_dict_in_generate=True`, a `GenerateDecoderOnlyOutput` (greedy, sampling) or
    `GenerateBeamDecoderOnlyOutput` (beams). With strings as `input_ids` and a `tokenizer`,
    the decoded texts (prompt included, eos and padding left out).

    Args:
        generation_config: a `GenerationConfig` (or a mapping, or a transformers one) merged
            over `model.generation_config`; `kwargs` (its fields only) override both.
        streamer: transformers' protocol, `put(prompt ids (B, P))`, `put(tokens (N,))` per step,
            `end()`. The decode loop then runs on the host around the compiled step (same tokens;
            a compiled XLA loop cannot call back into Python). Not with beam search.
        tokenizer: decodes tokens for `stop_strings`, and encodes string prompts.
    """
    from gpt2_keras import beam_search

    strings = _string_prompts(input_ids)
    ids, mask, plan, seed, tables = prepare(model, input_ids, attention_mask, generation_config,
                                            tokenizer, kwargs)
    check_streamer(streamer, plan)
    if plan.num_beams > 1:
        out = beam_search.beam_search(model, ids, mask, plan, seed, tables)
    else:
        out = sample(model, ids, mask, plan, seed, tables, streamer)
    if strings:
        return _decode(out if isinstance(out, np.ndarray) else out.sequences, mask, plan, tokenizer)
    return out


def _decode(rows: np.ndarray, mask: np.ndarray, plan: GenerationPlan, tokenizer) -> list[str]:
    """Each row's text: the prompt's attended tokens, then the new ones up to the first eos."""
    P, k = mask.shape[1], len(rows) // len(mask)
    texts = []
    for i, row in enumerate(rows.tolist()):
        new = row[P:]
        ends = [j for j, t in enumerate(new) if t in plan.eos_token_ids]
        keep = [t for t, m in zip(row[:P], mask[i // k]) if m] + new[:ends[0] if ends else len(new)]
        texts.append(tokenizer.decode(keep))
    return texts
