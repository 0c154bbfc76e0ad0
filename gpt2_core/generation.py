"""The reference `generate`: greedy, sampling, beam search and beam sampling in NumPy (float64),
with transformers' algorithms, on `gpt2_core.reference` and its cache. The oracle every backend's
`generate` is compared against.

What a backend ports from here, and nothing else decides:
- arguments: `GenerationConfig` (`gpt2_core.generation_config`), resolved to a `GenerationPlan`;
- scores: `gpt2_core.sampling.PROCESSORS`, in table order;
- noise: `gpt2_core.threefry` (Gumbel-max sampling; Gumbel-top-k for beam sampling);
- stop strings: `StopStringTables`, an automaton per stop string over the tokens' bytes, so a
  compiled loop runs them with two gathers a step;
- finished rows: filled with `plan.pad_token_id` (transformers' `_sample`);
- beams: transformers' vectorised `_beam_search` (`beam_step`, `early_stop_heuristic`);
- outputs: `gpt2_core.outputs` records.

Shapes: B prompt rows, T0 prompt width, N = B * k expanded rows (k = num_return_sequences, or
num_beams in beam search), V vocabulary, n new tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from gpt2_core import reference, threefry
from gpt2_core.config import GPT2Config
from gpt2_core.generation_config import (
    GenerationConfig,
    GenerationPlan,
    bos_token_id,
    check_streamer,
    merge,
    resolve,
    start_ids,
)
from gpt2_core.outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from gpt2_core.sampling import ProcessorState, apply_processors, left_padding_lengths

BEAM_NEG = -1.0e9
"""transformers' stand-in for -inf in the beam bookkeeping (it adds it; it never multiplies it)."""


class Streamer(Protocol):
    """transformers' streamer protocol: `put` gets the prompt (B, T0) first, then each step's
    tokens (N,); `end` once at the end."""

    def put(self, value: Any) -> None: ...

    def end(self) -> None: ...


def draw_seed() -> int:
    """A fresh 64-bit seed, for `seed=None` where a framework has no global generator."""
    return secrets.randbits(64)


# ---- stop strings ---------------------------------------------------------------------------
_TOKEN_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_STOP_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_bytes(tokenizer: Any, vocab_size: int) -> list[bytes]:
    """Each id's bytes: from a byte-level `encoder` (gpt2_tokenizer's and transformers' GPT-2
    tokenizers: 256 lookups, then a table walk), else `decode_bytes([i])`,
    `decode_single_token_bytes(i)` (tiktoken) or the UTF-8 of `decode([i])` (lossy for a partial
    character) per id. Ids past the tokenizer's vocabulary decode to nothing. Kept per tokenizer
    object (a tokenizer changed in place after a call keeps its old table)."""
    try:
        cached = _TOKEN_BYTES.get(tokenizer, {})
    except TypeError:  # not weak-referenceable: no cache
        cached = {}
    if vocab_size not in cached:
        cached[vocab_size] = _byte_level_table(tokenizer, vocab_size) or _per_id_bytes(tokenizer, vocab_size)
        with contextlib.suppress(TypeError):
            _TOKEN_BYTES[tokenizer] = cached
    return cached[vocab_size]


def _byte_level_table(tokenizer: Any, vocab_size: int) -> list[bytes] | None:
    """Token bytes of a byte-level BPE vocabulary (one character per byte), or None."""
    encoder = getattr(tokenizer, "encoder", None)
    one = getattr(tokenizer, "decode_bytes", None)
    if not isinstance(encoder, Mapping) or not callable(one):
        return None
    chars = {c for token in encoder for c in token}
    if len(chars) > 256 or any(c not in encoder for c in chars):
        return None
    byte_of = {c: one([encoder[c]]) for c in chars}
    if any(len(b) != 1 for b in byte_of.values()):
        return None
    out = [b""] * vocab_size
    for token, i in encoder.items():
        if i < vocab_size:
            out[i] = b"".join(byte_of[c] for c in token)
    known = set(encoder.values())
    for i in range(min(vocab_size, len(tokenizer))):
        if i not in known:  # special tokens
            out[i] = one([i])
    return out


def _per_id_bytes(tokenizer: Any, vocab_size: int) -> list[bytes]:
    if callable(getattr(tokenizer, "decode_bytes", None)):
        one = lambda i: tokenizer.decode_bytes([i])  # noqa: E731
    elif callable(getattr(tokenizer, "decode_single_token_bytes", None)):
        one = tokenizer.decode_single_token_bytes
    else:
        one = lambda i: tokenizer.decode([i]).encode("utf-8")  # noqa: E731
    n = len(tokenizer) if hasattr(tokenizer, "__len__") else vocab_size
    return [one(i) if i < n else b"" for i in range(vocab_size)]


def _kmp_automaton(pattern: bytes) -> np.ndarray:
    """(m + 1, 256) transitions of the automaton whose state is the longest prefix of `pattern`
    that ends the text so far; state m (a match) moves on as its longest proper border."""
    m = len(pattern)
    delta = np.zeros((m + 1, 256), np.int32)
    delta[0, pattern[0]] = 1
    border = 0
    for q in range(1, m + 1):
        delta[q] = delta[border]
        if q < m:
            delta[q, pattern[q]] = q + 1
            border = delta[border, pattern[q]]
    return delta


@dataclasses.dataclass(frozen=True)
class StopStringTables:
    """transformers' `StopStringCriteria` as automata over token bytes.

    A row stops when a stop string ends inside its newest token (it may start in an earlier one,
    or in the prompt; the token may run past its end), exactly the matches transformers'
    criterion accepts. Bytes, not characters, are matched: for ASCII stop strings the two agree,
    and a multi-byte character split across tokens still matches here.

    `transitions[s, q, t]` is stop string s's state after token t from state q;
    `hits[s, q, t]` whether token t completes it. Shapes (n_stop, M + 1, V), M the longest.
    """

    transitions: np.ndarray  # (n_stop, M + 1, V) int32
    hits: np.ndarray         # (n_stop, M + 1, V) bool

    @classmethod
    def build(cls, stop_strings: Sequence[str], tokenizer: Any, vocab_size: int) -> StopStringTables:
        pieces = token_bytes(tokenizer, vocab_size)
        width = max(1, max(len(p) for p in pieces))
        table = np.full((vocab_size, width), -1, np.int32)  # (V, Lmax) bytes, -1 past the end
        for i, p in enumerate(pieces):
            table[i, :len(p)] = np.frombuffer(p, np.uint8)
        patterns = [s.encode("utf-8") for s in stop_strings]
        M = max(len(p) for p in patterns)
        transitions = np.zeros((len(patterns), M + 1, vocab_size), np.int32)
        hits = np.zeros((len(patterns), M + 1, vocab_size), bool)
        for s, pattern in enumerate(patterns):
            delta, m = _kmp_automaton(pattern), len(pattern)
            state = np.repeat(np.arange(m + 1, dtype=np.int32)[:, None], vocab_size, 1)  # (m+1, V)
            hit = np.zeros_like(state, bool)
            for j in range(width):
                byte = table[:, j]
                nxt = delta[state, np.maximum(byte, 0)]
                valid = (byte >= 0)[None, :]
                state = np.where(valid, nxt, state)
                hit |= valid & (nxt == m)
            transitions[s, :m + 1], hits[s, :m + 1] = state, hit
        return cls(transitions, hits)

    @classmethod
    def cached(cls, stop_strings: Sequence[str], tokenizer: Any, vocab_size: int) -> StopStringTables:
        """`build`, kept per tokenizer object and (stop strings, V): a generate call reuses the
        tables of the last calls with the same tokenizer (a tokenizer changed in place keeps its
        old tables)."""
        key = (tuple(stop_strings), vocab_size)
        try:
            known = _STOP_TABLES.setdefault(tokenizer, {})
        except TypeError:  # not weak-referenceable: build each time
            return cls.build(stop_strings, tokenizer, vocab_size)
        if key not in known:
            if len(known) >= 8:
                known.pop(next(iter(known)))
            known[key] = cls.build(stop_strings, tokenizer, vocab_size)
        return known[key]

    def step(self, state: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """state (N, n_stop), tokens (N,) -> new state (N, n_stop), hit (N,)."""
        s = np.arange(self.transitions.shape[0])[None, :]
        t = tokens[:, None]
        return self.transitions[s, state, t], self.hits[s, state, t].any(-1)

    def initial_state(self, ids: np.ndarray) -> np.ndarray:
        """(N, n_stop) states after each prompt row (left padding included, as transformers
        reads the whole row); a match inside the prompt does not stop the row."""
        state = np.zeros((ids.shape[0], self.transitions.shape[0]), np.int32)
        for j in range(ids.shape[1]):
            state, _ = self.step(state, ids[:, j])
        return state


# ---- the reference model with its cache -------------------------------------------------------
class _Model:
    """`gpt2_core.reference.forward` with its cache: `prefill` then `step`, each returning the
    last position's float64 logits (N, V)."""

    def __init__(self, config: GPT2Config, params: Mapping[str, np.ndarray]) -> None:
        self.config = config
        self.params = {k: np.asarray(v, np.float64) for k, v in params.items()}
        self.past: tuple | None = None
        self.mask: np.ndarray | None = None

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.mask = mask
        out = reference.forward(self.config, self.params, ids, attention_mask=mask)
        self.past = out.past_key_values
        return out.logits[:, -1]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        self.mask = np.concatenate([self.mask, np.ones((len(tokens), 1), self.mask.dtype)], 1)
        out = reference.forward(self.config, self.params, tokens[:, None], attention_mask=self.mask,
                                past_key_values=self.past)
        self.past = out.past_key_values
        return out.logits[:, -1]

    def reorder(self, rows: np.ndarray) -> None:
        """Beam search: row i of the cache becomes row `rows[i]`."""
        self.past = tuple((k[rows], v[rows]) for k, v in self.past)
        self.mask = self.mask[rows]


# ---- public entry point -------------------------------------------------------------------------
def generate(config: GPT2Config, params: Mapping[str, np.ndarray], input_ids: Any = None,
             attention_mask: Any = None, generation_config: Any = None, *,
             model_generation_config: GenerationConfig | None = None, tokenizer: Any = None,
             streamer: Streamer | None = None, **kwargs: Any) -> Any:
    """Continue each prompt, as every backend's `model.generate` does.

    Shapes: input_ids (B, T0) (left-pad rows of different lengths and pass attention_mask
    (B, T0)) -> sequences (B * k, T0 + n), n <= the plan's max_new_tokens.

    Returns the sequences, or with `return_dict_in_generate=True` a `GenerateDecoderOnlyOutput`
    (greedy, sampling) or `GenerateBeamDecoderOnlyOutput` (beams).
    """
    gen = merge(model_generation_config or GenerationConfig.from_model_config(config),
                generation_config, kwargs)
    ids, mask = prepare_inputs(config, gen, input_ids, attention_mask)
    plan = resolve(config, gen, ids.shape[0], ids.shape[1], has_tokenizer=tokenizer is not None)
    seed = plan.seed if plan.seed is not None or not plan.do_sample else draw_seed()
    tables = (StopStringTables.cached(plan.stop_strings, tokenizer, config.vocab_size)
              if plan.stop_strings else None)
    model = _Model(config, params)
    check_streamer(streamer, plan)
    if plan.num_beams > 1:
        return beam_search(model, ids, mask, plan, seed, tables)
    return sample(model, ids, mask, plan, seed, tables, streamer)


def prepare_inputs(config: GPT2Config, gen: GenerationConfig, input_ids: Any,
                   attention_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """(B, T0) int64 ids and mask: the bos row when `input_ids` is None, a 1-D prompt as one row,
    the mask all ones when not given. Checks as `reference.check_inputs` does."""
    if input_ids is None:
        ids = np.asarray(start_ids(bos_token_id(config, gen), config.vocab_size), np.int64)
    else:
        ids = np.asarray(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
    if ids.ndim == 2 and ids.shape[1] == 0:
        raise ValueError(
            f"`input_ids` must hold at least one token per row. Received shape {ids.shape}. "
            "Pass input_ids=None to start each row from `bos_token_id`.")
    mask = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask)
    if mask.ndim == 1:
        mask = mask[None]
    reference.check_inputs(config, ids, mask, None, None, 0, None)
    return ids.astype(np.int64), mask.astype(np.int64)


# ---- greedy and sampling ----------------------------------------------------------------------
def choose(scores: np.ndarray, plan: GenerationPlan, seed: int | None, step: int) -> np.ndarray:
    """(N, V) processed scores -> (N,) tokens: argmax, or Gumbel-max with the step's noise."""
    if plan.do_sample:
        noise = threefry.gumbel(seed, step, scores.shape[0], scores.shape[1])
        return np.argmax(scores + noise.astype(scores.dtype), -1)
    return np.argmax(scores, -1)


def sample(model: _Model, ids: np.ndarray, mask: np.ndarray, plan: GenerationPlan, seed: int | None,
           tables: StopStringTables | None, streamer: Streamer | None = None) -> Any:
    """transformers' `_sample`: greedy or sampled decoding, finished rows filled with pad."""
    k = plan.num_return_sequences
    ids, mask = np.repeat(ids, k, 0), np.repeat(mask, k, 0)  # rows [p0, p0, ..., p1, p1, ...]
    N = ids.shape[0]
    padding = left_padding_lengths(mask)
    unfinished = np.ones(N, bool)
    eos = np.asarray(plan.eos_token_ids, np.int64)
    stop_state = None if tables is None else tables.initial_state(ids)
    scores_out, logits_out = [], []
    if streamer is not None:
        streamer.put(ids.copy())
    logits = model.prefill(ids, mask)
    for step in range(plan.max_new_tokens):
        state = ProcessorState(ids, padding, step, plan.eos_token_ids)
        scores = apply_processors(logits, state, plan)
        tokens = choose(scores, plan, seed, step)
        if eos.size:  # transformers fills finished rows only when eos ends rows
            tokens = np.where(unfinished, tokens, plan.pad_token_id)
        ids = np.concatenate([ids, tokens[:, None]], 1)
        scores_out.append(scores)
        logits_out.append(logits)
        if streamer is not None:
            streamer.put(tokens.copy())
        unfinished &= ~np.isin(tokens, eos)
        if stop_state is not None:
            stop_state, hit = tables.step(stop_state, tokens)
            unfinished &= ~hit
        if not unfinished.any() or step + 1 == plan.max_new_tokens:
            break
        logits = model.step(tokens)
    if streamer is not None:
        streamer.end()
    if not plan.return_dict_in_generate:
        return ids
    return GenerateDecoderOnlyOutput(
        sequences=ids, scores=tuple(scores_out) if plan.output_scores else None,
        logits=tuple(logits_out) if plan.output_logits else None)


# ---- beam search and beam sampling -----------------------------------------------------------
@dataclasses.dataclass
class BeamState:
    """transformers' `_beam_search` bookkeeping, per prompt row b and beam j."""

    running: np.ndarray          # (B, nb, T0 + n) int: live beams, filled with the output fill id
    running_scores: np.ndarray   # (B, nb) float: their summed log-probabilities
    running_indices: np.ndarray  # (B, nb, n) int: flat source beam of each step, -1 unused
    sequences: np.ndarray        # (B, nb, T0 + n) int: the best finished hypotheses
    beam_scores: np.ndarray      # (B, nb) float: their length-normalised scores, BEAM_NEG empty
    beam_indices: np.ndarray     # (B, nb, n) int
    finished: np.ndarray         # (B, nb) bool: slot holds a finished hypothesis
    improvable: np.ndarray       # (B, 1) bool: a running beam may still beat the worst finished
    stop_state: np.ndarray | None  # (B, nb, n_stop) stop-string automaton states


def _gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x (B, K, ...) rows idx (B, k) along axis 1."""
    return np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), 1)


def _top(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest along axis 1, largest first, exact ties to the lower index.
    (transformers uses `torch.topk`, whose order among exact ties is unspecified; in float64 the
    reference's candidates do not tie, and the -1e9 slots that do are never returned.)"""
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def initial_beams(ids: np.ndarray, plan: GenerationPlan, fill: int,
                  tables: StopStringTables | None) -> BeamState:
    B, T0 = ids.shape
    nb, n = plan.num_beams, plan.max_new_tokens
    running = np.full((B, nb, T0 + n), fill, np.int64)
    running[:, :, :T0] = ids[:, None]
    scores = np.zeros((B, nb))
    scores[:, 1:] = BEAM_NEG
    stop = None if tables is None else np.repeat(tables.initial_state(ids)[:, None], nb, 1)
    return BeamState(running, scores, np.full((B, nb, n), -1, np.int64), running.copy(),
                     np.full((B, nb), BEAM_NEG), np.full((B, nb, n), -1, np.int64),
                     np.zeros((B, nb), bool), np.ones((B, 1), bool), stop)


def top_continuations(logp: np.ndarray, plan: GenerationPlan, seed: int | None,
                      step: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, nb * V) accumulated log-probs -> the `beams_to_keep` candidates (B, K): their flat
    indices and scores, best score first. Beam sampling draws them without replacement by
    Gumbel-top-k (transformers: `multinomial(softmax(.), K)`, then sorted by score)."""
    K = plan.beams_to_keep
    if plan.do_sample:
        B = logp.shape[0]
        noise = threefry.gumbel(seed, step, B * plan.num_beams, plan.vocab_size).reshape(B, -1)
        idx = _top(logp + noise.astype(logp.dtype), K)
        picked = np.take_along_axis(logp, idx, 1)
        order = np.argsort(-picked, axis=1, kind="stable")
        return np.take_along_axis(idx, order, 1), np.take_along_axis(picked, order, 1)
    idx = _top(logp, K)
    return idx, np.take_along_axis(logp, idx, 1)


def beam_step(st: BeamState, logp: np.ndarray, plan: GenerationPlan, seed: int | None, step: int,
              tables: StopStringTables | None) -> tuple[BeamState, np.ndarray]:
    """One step of transformers' `_beam_search` on processed log-probs (B * nb, V). Returns the
    new state and the candidates' stop flags (B, K)."""
    B, nb = st.running_scores.shape
    V, T0 = plan.vocab_size, plan.prompt_length
    cur = T0 + step
    acc = (logp.reshape(B, nb, V) + st.running_scores[:, :, None]).reshape(B, nb * V)
    idx, top_lp = top_continuations(acc, plan, seed, step)
    src = idx // V                                                    # (B, K) source beam
    tokens = idx % V
    top_seq = _gather(st.running, src)
    top_seq[:, :, cur] = tokens
    top_idx = _gather(st.running_indices, src)
    top_idx[:, :, step] = src + np.arange(B)[:, None] * nb
    hits = np.isin(tokens, plan.eos_token_ids) | (cur + 1 >= plan.max_length)
    stop_state = None
    if tables is not None:
        K = src.shape[1]
        flat, hit = tables.step(_gather(st.stop_state, src).reshape(B * K, -1), tokens.reshape(-1))
        stop_state = flat.reshape(B, K, -1)
        hits = hits | hit.reshape(B, K)
    # the best candidates that did not stop keep running
    run_lp = top_lp + hits * BEAM_NEG
    nxt = _top(run_lp, nb)
    running, running_scores = _gather(top_seq, nxt), _gather(run_lp, nxt)
    running_indices = _gather(top_idx, nxt)
    # the stopped ones among the best nb enter the finished pool, length-normalised
    just = hits & (np.arange(hits.shape[1]) < nb)[None, :]
    fin_lp = top_lp / float(cur + 1 - T0) ** plan.length_penalty
    fin_lp = fin_lp + (st.finished.all(-1, keepdims=True) & (plan.early_stopping is True)) * BEAM_NEG
    fin_lp = fin_lp + (~st.improvable) * BEAM_NEG
    fin_lp = fin_lp + (~just) * BEAM_NEG
    merged = np.concatenate([st.beam_scores, fin_lp], 1)
    best = _top(merged, nb)
    new = BeamState(
        running=running, running_scores=running_scores, running_indices=running_indices,
        sequences=_gather(np.concatenate([st.sequences, top_seq], 1), best),
        beam_scores=_gather(merged, best),
        beam_indices=_gather(np.concatenate([st.beam_indices, top_idx], 1), best),
        finished=_gather(np.concatenate([st.finished, just], 1), best),
        improvable=st.improvable,
        stop_state=None if stop_state is None else _gather(stop_state, nxt))
    new.improvable = early_stop_heuristic(new, cur + 1, plan)
    return new, hits


def early_stop_heuristic(st: BeamState, cur: int, plan: GenerationPlan) -> np.ndarray:
    """transformers' `_check_early_stop_heuristic`: can the best running beam still beat the worst
    finished one? With `early_stopping="never"` and a positive length penalty it assumes the
    beam grows to `max_length`."""
    if plan.early_stopping == "never" and plan.length_penalty > 0.0:
        best_len = plan.max_new_tokens
    else:
        best_len = cur - plan.prompt_length
    best_running = st.running_scores[:, :1] / float(best_len) ** plan.length_penalty
    worst_finished = np.where(st.finished, st.beam_scores.min(1, keepdims=True), BEAM_NEG)
    return st.improvable & (best_running > worst_finished).any(-1, keepdims=True)


def beams_continue(st: BeamState, hits: np.ndarray, plan: GenerationPlan) -> bool:
    """transformers' `_beam_search_has_unfinished_sequences`."""
    return bool(st.improvable.any()) and not (bool(st.finished.all()) and plan.early_stopping is True) \
        and not bool(hits.all())


def output_fill(plan: GenerationPlan) -> int:
    """The id unused beam positions hold. transformers writes
    `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`, so a pad id of 0
    falls through to the eos id; followed as written."""
    if not plan.eos_token_ids:
        return -1
    return plan.pad_token_id or plan.eos_token_ids[0]


def beam_search(model: _Model, ids: np.ndarray, mask: np.ndarray, plan: GenerationPlan,
                seed: int | None, tables: StopStringTables | None) -> Any:
    """transformers' `_beam_search` (v5), step for step; with `do_sample`, beam sampling."""
    B, T0 = ids.shape
    nb = plan.num_beams
    st = initial_beams(ids, plan, output_fill(plan), tables)
    flat, flat_mask = np.repeat(ids, nb, 0), np.repeat(mask, nb, 0)
    padding = left_padding_lengths(flat_mask)
    scores_out, logits_out = [], []
    logits = model.prefill(flat, flat_mask)
    step = 0
    while True:
        logp = _log_softmax(logits)
        logp = apply_processors(logp, ProcessorState(flat, padding, step, plan.eos_token_ids), plan)
        scores_out.append(logp)
        logits_out.append(logits)
        st, hits = beam_step(st, logp, plan, seed, step, tables)
        model.reorder(st.running_indices[:, :, step].reshape(-1))
        step += 1
        if not beams_continue(st, hits, plan):
            break
        flat = st.running[:, :, :T0 + step].reshape(B * nb, T0 + step)
        logits = model.step(flat[:, -1])
    return beam_outputs(st, plan, tuple(scores_out), tuple(logits_out))


def beam_outputs(st: BeamState, plan: GenerationPlan, scores: tuple, logits: tuple) -> Any:
    """The best `num_return_sequences` hypotheses of each row, cropped to the longest one."""
    k, T0 = plan.num_return_sequences, plan.prompt_length
    B = st.sequences.shape[0]
    sequences = st.sequences[:, :k].reshape(B * k, -1)
    indices = st.beam_indices[:, :k].reshape(B * k, -1)
    generated = int((indices + 1).astype(bool).sum(1).max())
    sequences, indices = sequences[:, :T0 + generated], indices[:, :generated]
    if not plan.return_dict_in_generate:
        return sequences
    return GenerateBeamDecoderOnlyOutput(
        sequences=sequences,
        sequences_scores=st.beam_scores[:, :k].reshape(-1) if plan.output_scores else None,
        scores=scores if plan.output_scores else None,
        logits=logits if plan.output_logits else None, beam_indices=indices)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
