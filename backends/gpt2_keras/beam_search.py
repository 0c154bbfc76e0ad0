"""Beam search and beam sampling as one compiled program: prefill, then a `keras.ops.while_loop`
whose body does transformers' (v5, vectorised) beam bookkeeping (the spec's `beam_step`) and one
decode step on the preallocated cache.

On TensorFlow the whole search is one `tf.function(jit_compile=True)` (XLA), traced once per
shape bucket and `trace_plan` (the prompt bucketing of `generation.bucket_prompt`: a new prompt
length or `max_new_tokens` in the same bucket reuses it); on JAX one `jax.jit`; on PyTorch the
same ops run eagerly.

The running hypotheses live in the same bucketed buffer layout as greedy decoding: prompt at
columns `[start, P_b)` (bucket padding before it, which the processors never see), the t-th new
token at column `P_b + t`. Besides transformers' per-step beam indices (kept only for
`return_dict_in_generate`), the finished-hypotheses buffer keeps the generated length of each
hypothesis: that is all the final crop reads.

Dimensions: B batch, nb beams, N = B * nb rows, K = `plan.beams_to_keep` candidates, S buffer,
V vocab, n = S - P_b new-token columns.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from keras import ops

from gpt2_core.generation import BEAM_NEG, StopStringTables, output_fill
from gpt2_core.generation_config import GenerationPlan
from gpt2_core.outputs import GenerateBeamDecoderOnlyOutput
from gpt2_keras import generation, processors, threefry
from gpt2_keras.transformer import empty_cache

# transformers' "impossible" score: added, not assigned, so it is a float32 -1e9 offset as there.
NEG = BEAM_NEG


class Beams(NamedTuple):
    """transformers' `_beam_search` bookkeeping (the spec's `BeamState`), per row b and beam j."""

    running: Any          # (B, nb, S) int32: live beams, later columns the output fill id
    running_scores: Any   # (B, nb) float32: their summed log-probabilities
    sequences: Any        # (B, nb, S) int32: the best finished hypotheses, best first
    scores: Any           # (B, nb) float32: their length-normalised scores, NEG when empty
    lengths: Any          # (B, nb) int32: their generated lengths
    finished: Any         # (B, nb) bool: slot holds a finished hypothesis
    improvable: Any       # (B, 1) bool: a running beam may still beat the worst finished one
    go_on: Any            # () bool: `beams_continue`
    running_indices: Any  # (B, nb, n) int32: flat source beam per step, -1 unused ((B, nb, 0)
    beam_indices: Any     # (B, nb, n) int32    without return_dict_in_generate)
    stop: Any             # (B, nb, n_stop) int32: stop-string automaton states


class BeamLoop(NamedTuple):
    """The while loop's state."""

    t: Any        # () int32: steps taken
    mask: Any     # (N, S) int32
    cache: Any    # per layer (key, value), each (N, nh, S, hs)
    logits: Any   # (N, V) float32: the running beams' next-token logits
    seen: Any     # (N, V) bool: what the repetition penalty reads
    beams: Beams
    scores: Any   # (n, N, V) float32 processed log-probs per step ((0,) unless output_scores)
    raw: Any      # (n, N, V) float32 logits per step ((0,) unless output_logits)


def _gather_beams(x, idx):
    """x (B, M, ...) rows picked per batch by idx (B, K) -> (B, K, ...)."""
    B, M, K = ops.shape(x)[0], ops.shape(x)[1], ops.shape(idx)[1]
    flat = ops.reshape(x, (-1,) + tuple(ops.shape(x)[2:]))
    rows = ops.reshape(idx + ops.arange(B, dtype="int32")[:, None] * M, (-1,))
    return ops.reshape(ops.take(flat, rows, axis=0), (B, K) + tuple(ops.shape(x)[2:]))


def _length_factor(n, length_penalty: float):
    """`n ** length_penalty` as transformers computes it (a Python float, i.e. float64, applied
    to float32 scores), so the normalised scores round the same way."""
    return ops.cast(ops.power(ops.cast(n, "float64"), length_penalty), "float32")


def _top(x, k: int):
    """Values and indices of the k largest along axis 1, largest first, ties to the lower index."""
    values, idx = ops.top_k(x, k)
    return values, ops.cast(idx, "int32")


def top_continuations(acc, plan: GenerationPlan, key, t):
    """(B, nb * V) accumulated log-probs -> the `beams_to_keep` candidates (B, K): flat indices
    and scores, best first. Beam sampling draws them by Gumbel-top-k (the spec's)."""
    K = plan.beams_to_keep
    if not plan.do_sample:
        lp, idx = _top(acc, K)
        return idx, lp
    B = ops.shape(acc)[0]
    noise = ops.reshape(threefry.gumbel(key, t, B * plan.num_beams, plan.vocab_size), (B, -1))
    _, idx = _top(acc + noise, K)
    lp, order = _top(ops.take_along_axis(acc, idx, axis=1), K)
    return ops.take_along_axis(idx, order, axis=1), lp


def select(plan: GenerationPlan, P_b: int, beams: Beams, logp, t, max_new, args):
    """One step of bookkeeping on the processed log-probs (N, V) of step `t` (0-based).

    Returns the new `Beams`, the running beams' last tokens (N,) and `beam_idx` (N,), the flat
    beam each of them extends (the cache rows to gather).
    """
    nb, V = plan.num_beams, plan.vocab_size
    B = ops.shape(beams.running)[0]
    acc = ops.reshape(ops.reshape(logp, (B, nb, V)) + beams.running_scores[:, :, None], (B, nb * V))
    idx, topk_lp = top_continuations(acc, plan, args.key, t)
    beam_of, tok = idx // V, idx % V
    K = ops.shape(idx)[1]
    topk_seq = ops.slice_update(_gather_beams(beams.running, beam_of), [0, 0, P_b + t], tok[:, :, None])
    eos = ops.array(plan.eos_token_ids or (-1,), "int32")
    hits = ops.logical_or(ops.any(tok[:, :, None] == eos, axis=-1), t + 1 >= max_new)  # (B, K)
    flat_src = beam_of + ops.arange(B, dtype="int32")[:, None] * nb
    track = plan.return_dict_in_generate
    topk_idx = (ops.slice_update(_gather_beams(beams.running_indices, beam_of), [0, 0, t],
                                 flat_src[:, :, None]) if track else None)
    stop = beams.stop
    if plan.stop_strings:
        flat_stop = ops.reshape(_gather_beams(stop, beam_of), (B * K, -1))
        stop, hit = generation.stop_step(args, flat_stop, ops.reshape(tok, (-1,)))
        stop = ops.reshape(stop, (B, K, -1))
        hits = ops.logical_or(hits, ops.reshape(hit, (B, K)))

    # the best nb continuations that did not stop keep running
    trl = topk_lp + ops.cast(hits, "float32") * NEG
    running_scores, nxt = _top(trl, nb)  # (B, nb)
    beam_idx = ops.reshape(ops.take_along_axis(flat_src, nxt, axis=1), (-1,))

    # the top nb continuations that stopped compete with the finished hypotheses
    just = ops.logical_and(hits, (ops.arange(K) < nb)[None, :])
    s = topk_lp / _length_factor(t + 1, plan.length_penalty)
    if plan.early_stopping is True:
        s = s + ops.cast(ops.all(beams.finished, axis=-1, keepdims=True), "float32") * NEG
    s = s + ops.cast(ops.logical_not(beams.improvable), "float32") * NEG
    s = s + ops.cast(ops.logical_not(just), "float32") * NEG
    merged = ops.concatenate([beams.scores, s], axis=1)  # (B, nb + K)
    scores, top = _top(merged, nb)
    lengths = ops.concatenate([beams.lengths, ops.full((B, K), t + 1, "int32")], axis=1)
    new = Beams(
        running=_gather_beams(topk_seq, nxt), running_scores=running_scores,
        sequences=_gather_beams(ops.concatenate([beams.sequences, topk_seq], axis=1), top),
        scores=scores, lengths=ops.take_along_axis(lengths, top, axis=1),
        finished=ops.take_along_axis(ops.concatenate([beams.finished, just], axis=1), top, axis=1),
        improvable=beams.improvable, go_on=beams.go_on,
        running_indices=_gather_beams(topk_idx, nxt) if track else beams.running_indices,
        beam_indices=(_gather_beams(ops.concatenate([beams.beam_indices, topk_idx], axis=1), top)
                      if track else beams.beam_indices),
        stop=_gather_beams(stop, nxt) if plan.stop_strings else stop)
    improvable, go_on = _keep_going(plan, new, hits, t + 1, max_new)
    return new._replace(improvable=improvable, go_on=go_on), \
        ops.reshape(ops.take_along_axis(tok, nxt, axis=1), (-1,)), beam_idx


def _keep_going(plan: GenerationPlan, beams: Beams, hits, generated, max_new):
    """The spec's `early_stop_heuristic` and `beams_continue`."""
    lp = plan.length_penalty
    best_len = max_new if plan.early_stopping == "never" and lp > 0 else generated
    best_running = beams.running_scores[:, :1] / _length_factor(best_len, lp)
    worst_finished = ops.where(beams.finished, ops.min(beams.scores, axis=1, keepdims=True), NEG)
    improvable = ops.logical_and(beams.improvable,
                                 ops.any(best_running > worst_finished, axis=-1, keepdims=True))
    go_on = ops.logical_and(ops.any(improvable), ops.logical_not(ops.all(hits)))
    if plan.early_stopping is True:
        go_on = ops.logical_and(go_on, ops.logical_not(ops.all(beams.finished)))
    return improvable, go_on


def _initial_beams(plan: GenerationPlan, prompt, P_b, S, stop0) -> Beams:
    """The spec's `initial_beams` on the bucketed buffers (B, nb, S)."""
    nb = plan.num_beams
    N = ops.shape(prompt)[0]
    B = N // nb
    fill = output_fill(plan)
    seqs = ops.concatenate([prompt, ops.full((N, S - P_b), fill, "int32")], axis=1)
    seqs = ops.reshape(seqs, (B, nb, S))
    first = ops.arange(nb) == 0
    n = (S - P_b) if plan.return_dict_in_generate else 0
    return Beams(
        running=seqs, sequences=seqs,
        running_scores=ops.broadcast_to(ops.cast(ops.where(first, 0.0, NEG), "float32")[None, :], (B, nb)),
        scores=ops.full((B, nb), NEG, "float32"), lengths=ops.zeros((B, nb), "int32"),
        finished=ops.zeros((B, nb), "bool"), improvable=ops.ones((B, 1), "bool"),
        go_on=ops.convert_to_tensor(True),
        running_indices=ops.full((B, nb, n), -1, "int32"), beam_indices=ops.full((B, nb, n), -1, "int32"),
        stop=ops.reshape(ops.cast(stop0, "int32"), (B, nb, stop0.shape[-1])))


def beam_loop(model, plan: GenerationPlan, prompt, mask, max_new, args, stop0) -> BeamLoop:
    """The compiled body: prefill the bucketed prompt (each row repeated nb times), then search.

    Shapes: prompt (N, P_b), mask (N, S), stop0 (N, n_stop) -> the final `BeamLoop`.
    """
    model._generate_traces += 1  # runs at trace time only: counts compilations
    c, V = model.config, model.config.vocab_size
    N, P_b, S = ops.shape(prompt)[0], prompt.shape[1], mask.shape[1]
    cache = empty_cache(c, N, S, model.transformer.compute_dtype)
    head = generation.loop_head(model, N if isinstance(N, int) else None)
    out = model.transformer(prompt, attention_mask=mask, cache=cache, cache_index=0)
    logits, cache = generation.last_logits(model, out["last_hidden_state"], head), out["past_key_values"]
    track_seen = processors.tracks_seen(plan)
    seen = (processors.prompt_seen(V, prompt, mask[:, :P_b], args.start) if track_seen
            else ops.zeros((N, V), "bool"))

    def cond(st):
        return st.beams.go_on

    def body(st):
        flat = ops.reshape(st.beams.running, (N, S))
        inputs = processors.ProcessorInputs(flat, args.start, P_b + st.t, st.t, st.seen)
        logp = processors.process(ops.log_softmax(st.logits, axis=-1), plan, inputs)
        beams, tok, beam_idx = select(plan, P_b, st.beams, logp, st.t, max_new, args)
        tok = tok[:, None]  # (N, 1)
        seen = st.seen
        if track_seen:  # only the repetition penalty reads `seen`
            seen = processors.mark_seen(ops.take(seen, beam_idx, axis=0), tok, ops.ones((N, 1), "bool"))
        cache = tuple((ops.take(k, beam_idx, axis=0), ops.take(v, beam_idx, axis=0)) for k, v in st.cache)
        mask = ops.slice_update(st.mask, [0, P_b + st.t], ops.ones((N, 1), "int32"))
        scores, raw = st.scores, st.raw
        if plan.output_scores:
            scores = ops.slice_update(scores, [st.t, 0, 0], logp[None])
        if plan.output_logits:
            raw = ops.slice_update(raw, [st.t, 0, 0], st.logits[None])
        # The step after the last selection is wasted work (one token per beam), kept so the
        # loop body stays branch-free.
        out = model.transformer(tok, attention_mask=mask, cache=cache, cache_index=P_b + st.t)
        return (BeamLoop(st.t + 1, mask, out["past_key_values"],
                         generation.last_logits(model, out["last_hidden_state"], head), seen, beams,
                         scores, raw),)

    n = S - P_b
    st = BeamLoop(ops.convert_to_tensor(0, "int32"), mask, cache, logits, seen,
                  _initial_beams(plan, prompt, P_b, S, stop0),
                  ops.zeros((n, N, V) if plan.output_scores else (0,), "float32"),
                  ops.zeros((n, N, V) if plan.output_logits else (0,), "float32"))
    (st,) = ops.while_loop(cond, body, (st,))
    return st


def _np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def beam_search(model, ids: np.ndarray, mask: np.ndarray, plan: GenerationPlan, seed: int | None,
                tables: StopStringTables | None):
    """transformers' `_beam_search` (v5, vectorised), compiled whole; with `do_sample`, beam
    sampling. Shapes: (B, P) -> sequences (B * k, P + n), k = num_return_sequences, or the
    output record (the spec's `beam_outputs`)."""
    if not hasattr(model, "_generate_traces"):
        model._generate_traces = 0
    nb, k = plan.num_beams, plan.num_return_sequences
    flat_ids, flat_mask = np.repeat(ids, nb, 0), np.repeat(mask, nb, 0)
    prompt, mask_buf, offset = generation.bucket_prompt(flat_ids, flat_mask, plan.max_new_tokens)
    args = generation.loop_args(offset, seed, tables)
    tp = generation.trace_plan(plan)
    fn = generation._compile(model, ("beam", tp), lambda *a: beam_loop(model, tp, *a))
    st = fn(ops.convert_to_tensor(prompt), ops.convert_to_tensor(mask_buf),
            ops.convert_to_tensor(plan.max_new_tokens, "int32"), args,
            ops.convert_to_tensor(generation.stop_initial(flat_ids, tables)))
    B, P_b = ids.shape[0], prompt.shape[1]
    generated = int(_np(st.beams.lengths)[:, :k].max())
    sequences = _np(st.beams.sequences)[:, :k].reshape(B * k, -1)[:, offset:P_b + generated]
    if not plan.return_dict_in_generate:
        return sequences
    steps = int(_np(st.t))
    return GenerateBeamDecoderOnlyOutput(
        sequences=sequences,
        sequences_scores=_np(st.beams.scores)[:, :k].reshape(-1) if plan.output_scores else None,
        scores=generation.per_step(st.scores, plan.output_scores, steps),
        logits=generation.per_step(st.raw, plan.output_logits, steps),
        beam_indices=_np(st.beams.beam_indices)[:, :k].reshape(B * k, -1)[:, :generated])
