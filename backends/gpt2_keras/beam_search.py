"""Beam search as one compiled program: prefill, then a `keras.ops.while_loop` whose body does
transformers' (v5, vectorised) beam bookkeeping and one decode step on the preallocated cache.

On TensorFlow the whole search is one `tf.function(jit_compile=True)` (XLA), traced once per
shape bucket and `BeamSpec` (the prompt bucketing of `generation.bucket_prompt`: a new prompt
length or `max_new_tokens` in the same bucket reuses it); on JAX one `jax.jit`; on PyTorch the
same ops run eagerly.

The running hypotheses live in the same bucketed buffer layout as greedy decoding: prompt at
columns `[start, P_b)` (bucket padding before it, which the processors never see), the t-th new
token at column `P_b + t`. The finished-hypotheses buffer keeps, instead of transformers'
per-step beam indices, the generated length of each hypothesis: that is all the final crop
reads from them.

Dimensions: B batch, nb beams, K = max(2, 1 + n_eos) * nb candidates, S buffer, V vocab.
"""

from __future__ import annotations

import dataclasses

from keras import ops

from gpt2_core.sampling import SamplingConfig
from gpt2_keras import processors
from gpt2_keras.transformer import empty_cache

# transformers' "impossible" score: added, not assigned, so it is a float32 -1e9 offset as there.
NEG = -1.0e9


@dataclasses.dataclass(frozen=True)
class BeamSpec:
    """Everything that changes the traced graph of a beam search."""

    cfg: SamplingConfig
    eos: tuple[int, ...]
    pad: int
    num_beams: int
    length_penalty: float
    early_stopping: bool | str


def _gather_beams(x, idx):
    """x (B, N, ...) rows picked per batch by idx (B, K) -> (B, K, ...)."""
    B, N, K = ops.shape(x)[0], ops.shape(x)[1], ops.shape(idx)[1]
    flat = ops.reshape(x, (-1,) + tuple(ops.shape(x)[2:]))
    rows = ops.reshape(idx + ops.arange(B, dtype="int32")[:, None] * N, (-1,))
    return ops.reshape(ops.take(flat, rows, axis=0), (B, K) + tuple(ops.shape(x)[2:]))


def _length_factor(n, length_penalty: float):
    """`n ** length_penalty` as transformers computes it (a Python float, i.e. float64, applied
    to float32 scores), so the normalised scores round the same way."""
    return ops.cast(ops.power(ops.cast(n, "float64"), length_penalty), "float32")


def _topk_indices(x, k: int):
    return ops.cast(ops.top_k(x, k)[1], "int32")


def select(spec: BeamSpec, V: int, P_b: int, state: dict, logp, t, max_new):
    """One step of bookkeeping on the processed log-probs (B * nb, V) of step `t` (0-based).

    Returns the new state, the new running beams' last tokens (B * nb,) and `beam_idx`
    (B * nb,), the flat beam each of them extends (the cache rows to gather).
    """
    nb = spec.num_beams
    K = max(2, 1 + len(spec.eos)) * nb
    seqs = state["running"]
    B = ops.shape(seqs)[0]
    logp = ops.reshape(ops.reshape(logp, (B, nb, V)) + state["running_scores"][:, :, None], (B, nb * V))
    topk_lp, idx = ops.top_k(logp, K)  # (B, K): the best continuations over all beams
    idx = ops.cast(idx, "int32")
    beam_of, tok = idx // V, idx % V
    topk_seq = ops.slice_update(_gather_beams(seqs, beam_of), [0, 0, P_b + t], tok[:, :, None])
    eos = ops.array(spec.eos or (-1,), "int32")
    hits = ops.logical_or(ops.any(tok[:, :, None] == eos, axis=-1), t + 1 >= max_new)  # (B, K)

    # the best nb continuations that did not stop keep running
    trl = topk_lp + ops.cast(hits, "float32") * NEG
    nxt = _topk_indices(trl, nb)  # (B, nb)
    running, running_scores = _gather_beams(topk_seq, nxt), ops.take_along_axis(trl, nxt, axis=1)
    beam_idx = ops.reshape(ops.take_along_axis(beam_of, nxt, axis=1)
                           + ops.arange(B, dtype="int32")[:, None] * nb, (-1,))

    # the top nb continuations that stopped compete with the finished hypotheses
    just = ops.logical_and(hits, (ops.arange(K) < nb)[None, :])
    s = topk_lp / _length_factor(t + 1, spec.length_penalty)
    if spec.early_stopping is True:
        s = s + ops.cast(ops.all(state["finished"], axis=-1, keepdims=True), "float32") * NEG
    s = s + ops.cast(ops.logical_not(state["open"]), "float32") * NEG
    s = s + ops.cast(ops.logical_not(just), "float32") * NEG
    merged = ops.concatenate([state["scores"], s], axis=1)  # (B, nb + K)
    top = _topk_indices(merged, nb)
    lengths = ops.concatenate([state["lengths"], ops.full((B, K), t + 1, "int32")], axis=1)
    new = {
        "running": running, "running_scores": running_scores,
        "sequences": _gather_beams(ops.concatenate([state["sequences"], topk_seq], axis=1), top),
        "scores": ops.take_along_axis(merged, top, axis=1),
        "lengths": ops.take_along_axis(lengths, top, axis=1),
        "finished": ops.take_along_axis(ops.concatenate([state["finished"], just], axis=1), top, axis=1),
    }
    new["open"], new["go_on"] = _keep_going(spec, state["open"], new, hits, t + 1, max_new)
    return new, ops.reshape(ops.take_along_axis(tok, nxt, axis=1), (-1,)), beam_idx


def _keep_going(spec: BeamSpec, is_open, state, hits, generated, max_new):
    """transformers' early-stop heuristic and `_beam_search_has_unfinished_sequences`."""
    lp = spec.length_penalty
    best_len = max_new if spec.early_stopping == "never" and lp > 0 else generated
    best_running = state["running_scores"][:, :1] / _length_factor(best_len, lp)
    worst_finished = ops.where(state["finished"], ops.min(state["scores"], axis=1, keepdims=True), NEG)
    is_open = ops.logical_and(is_open, ops.any(best_running > worst_finished, axis=-1, keepdims=True))
    go_on = ops.logical_and(ops.any(is_open), ops.logical_not(ops.all(hits)))
    if spec.early_stopping is True:
        go_on = ops.logical_and(go_on, ops.logical_not(ops.all(state["finished"])))
    return is_open, go_on


def _initial_state(spec: BeamSpec, prompt, P_b, S):
    """Running and finished buffers (B, nb, S): the prompt, then transformers' fill value."""
    nb, eos = spec.num_beams, spec.eos
    # transformers writes `pad_token_id or eos_token_id[0]`: a pad id of 0 falls back to EOS.
    fill = (spec.pad or eos[0]) if eos else -1
    B = ops.shape(prompt)[0] // nb
    seqs = ops.concatenate([prompt, ops.full((ops.shape(prompt)[0], S - P_b), fill, "int32")], axis=1)
    seqs = ops.reshape(seqs, (B, nb, S))
    first = ops.arange(nb) == 0
    return {
        "running": seqs, "sequences": seqs,
        "running_scores": ops.broadcast_to(ops.cast(ops.where(first, 0.0, NEG), "float32")[None, :], (B, nb)),
        "scores": ops.full((B, nb), NEG, "float32"),
        "lengths": ops.zeros((B, nb), "int32"),
        "finished": ops.zeros((B, nb), "bool"),
        "open": ops.ones((B, 1), "bool"),
        "go_on": ops.convert_to_tensor(True),
    }


def beam_loop(model, spec: BeamSpec, prompt, mask, start, max_new):
    """The compiled body: prefill the bucketed prompt (each row repeated nb times), then search.

    Shapes: prompt (B * nb, P_b), mask (B * nb, S) -> sequences (B, nb, S) (the finished
    hypotheses, best first), lengths (B, nb) (their generated lengths).
    """
    from gpt2_keras.generation import last_logits, loop_head

    model._generate_traces += 1  # runs at trace time only: counts compilations
    c, V = model.config, model.config.vocab_size
    N, P_b, S = ops.shape(prompt)[0], prompt.shape[1], mask.shape[1]
    cache = empty_cache(c, N, S, model.transformer.compute_dtype)
    head = loop_head(model, N if isinstance(N, int) else None)
    out = model.transformer(prompt, attention_mask=mask, cache=cache, cache_index=0)
    logits, cache = last_logits(model, out["last_hidden_state"], head), out["past_key_values"]
    # transformers (5.x) leaves the left padding out of the repetition penalty
    seen = processors.mark_seen(ops.zeros((N, V), "bool"), prompt, mask[:, :P_b] != 0)
    track_seen = spec.cfg.repetition_penalty is not None and spec.cfg.repetition_penalty != 1.0
    cfg = dataclasses.replace(spec.cfg, do_sample=False)

    def cond(t, mask, cache, logits, seen, state):
        return state["go_on"]

    def body(t, mask, cache, logits, seen, state):
        flat = ops.reshape(state["running"], (N, S))
        logp = processors.process(ops.log_softmax(logits, axis=-1), cfg, spec.eos, tokens=flat,
                                  start=start, cur=P_b + t, seen=seen, new_tokens=t)
        state, tok, beam_idx = select(spec, V, P_b, state, logp, t, max_new)
        tok = tok[:, None]  # (N, 1)
        if track_seen:  # only the repetition penalty reads `seen`
            seen = processors.mark_seen(ops.take(seen, beam_idx, axis=0), tok, ops.ones((N, 1), "bool"))
        cache = tuple((ops.take(k, beam_idx, axis=0), ops.take(v, beam_idx, axis=0)) for k, v in cache)
        mask = ops.slice_update(mask, [0, P_b + t], ops.ones((N, 1), "int32"))
        # The step after the last selection is wasted work (one token per beam), kept so the
        # loop body stays branch-free.
        out = model.transformer(tok, attention_mask=mask, cache=cache, cache_index=P_b + t)
        return (t + 1, mask, out["past_key_values"], last_logits(model, out["last_hidden_state"], head),
                seen, state)

    state = _initial_state(spec, prompt, P_b, S)
    loop_state = (ops.convert_to_tensor(0, "int32"), mask, cache, logits, seen, state)
    *_, state = ops.while_loop(cond, body, loop_state)
    return state["sequences"], state["lengths"]
