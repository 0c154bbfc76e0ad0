"""`generate`: the spec of `gpt2_core.generation` on a preallocated cache, in torch.

What to do is decided by the spec: arguments by `gpt2_core.generation_config` (`merge`, `resolve`
to a `GenerationPlan`), scores by its processor table (torch functions in `processors.py`), noise
by Threefry (`threefry.py`), stop strings by `StopStringTables`, beams by the spec's vectorised
`_beam_search` bookkeeping. This module holds the tensor math of one step and the loops.

Per step: one forward of the new tokens over the cache record (`cache.KVCache`, passed in and
returned; compiled with `compile=True`, as CUDA graphs on a CUDA device), logits of the last
position only, the active processors, then argmax, Gumbel-max (sampling) or the beam update.

Shapes: B prompt rows, T0 prompt width, N = B * k expanded rows (k = num_return_sequences, or
num_beams in beam search), V vocabulary, n new tokens.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from gpt2_core.generation import BEAM_NEG, StopStringTables, output_fill, prepare_inputs
from gpt2_core.generation_config import (
    GenerationConfig,
    GenerationPlan,
    check_streamer,
    check_streaming,
    merge,
    resolve,
)
from gpt2_core.outputs import output_class
from gpt2_core.threefry import MASK32, key_words
from gpt2_torch import inputs, processors, threefry
from gpt2_torch.cache import KVCache
from gpt2_torch.modeling import AttnMask
from gpt2_torch.processors import ProcessorState

GenerateDecoderOnlyOutput = output_class("GenerateDecoderOnlyOutput", module=__name__)
GenerateBeamDecoderOnlyOutput = output_class("GenerateBeamDecoderOnlyOutput", module=__name__)


class Streamer(Protocol):
    """transformers' streamer protocol: `put` gets the prompt (N, T0), then each step's tokens
    (N,); `end` once at the end."""

    def put(self, value: torch.Tensor) -> None: ...

    def end(self) -> None: ...


class Tokenizer(Protocol):
    def decode(self, ids: list[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class GenerationJob:
    """One `generate` call, resolved: what the loops read."""

    ids: torch.Tensor           # (B, T0) long prompt, left-padded
    mask: torch.Tensor          # (B, T0) long attention mask (all ones when none was given)
    plan: GenerationPlan        # every number decided by `gpt2_core.generation_config.resolve`
    seed: int | None            # the Threefry seed when sampling (drawn when `plan.seed` is None)
    stop: StopStrings | None    # stop-string automata on the device, or None
    compile: bool               # decode steps through `torch.compile`


@dataclasses.dataclass
class StreamStep:
    """One decoding step: the new token of each row (N,), and with a tokenizer the text each
    row gained (held back while a multi-byte character is incomplete)."""

    token_ids: torch.Tensor
    text: list[str] | None = None


class DecodedStep(NamedTuple):
    tokens: torch.Tensor  # (N,) long: the step's tokens, pad in finished rows
    scores: torch.Tensor  # (N, V) float32: the processed scores they were chosen from
    logits: torch.Tensor  # (N, V) float32: the raw logits


class GenerationMixin:
    """`generate`, `stream_generate` and the compilable `decode_step` for `GPT2LMHeadModel`."""

    generation_config: GenerationConfig

    @torch.inference_mode()
    def generate(self, input_ids: Any = None, attention_mask: Any = None,
                 generation_config: Any = None, *, streamer: Streamer | None = None,
                 tokenizer: Any = None, compile: bool = False, **kwargs: Any) -> Any:
        """Continue each prompt, as `transformers`' `generate` does (and as the NumPy reference
        `gpt2_core.generation.generate`, token for token).

        Shapes: input_ids (B, T0) (left-pad rows of different lengths and pass attention_mask
        (B, T0)), or None to start from `bos_token_id` -> sequences (B * k, T0 + n),
        k = num_return_sequences, n <= the resolved max_new_tokens.

        Args:
            generation_config: a `GenerationConfig`, a mapping, or any object with `to_dict()`
                (a `transformers.GenerationConfig`), over `self.generation_config`.
            streamer: an object with `put`/`end` (e.g. transformers' `TextStreamer`): gets the
                prompt, then each step's tokens (not with beam search).
            tokenizer: turns tokens into text for `stop_strings`.
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
                beam search). torch keeps at most `torch._dynamo.config.recompile_limit`
                compiled variants of the step and runs further shapes eagerly. On a CUDA device
                the step runs as a CUDA graph (`mode="reduce-overhead"`), one replay per token,
                and the model keeps one cache per compiled step for it (the graph replays on
                fixed addresses), lent to each call in turn.
            **kwargs: `GenerationConfig` fields (`max_new_tokens`, `do_sample`, `seed`, ...);
                an unknown name raises `TypeError`. `seed=None` with `do_sample` draws the
                seed from torch's global generator, so `torch.manual_seed` repeats a run.

        Returns the sequences, or with `return_dict_in_generate=True` a
        `GenerateDecoderOnlyOutput` (greedy, sampling) or `GenerateBeamDecoderOnlyOutput`.
        """
        job = self._prepare_generation(input_ids, attention_mask, generation_config, tokenizer,
                                       compile, kwargs)
        plan = job.plan
        check_streamer(streamer, plan)
        if plan.num_beams > 1:
            return beam_search(self, job)
        ids = job.ids.repeat_interleave(plan.num_return_sequences, 0)
        if streamer is not None:
            streamer.put(ids.cpu())
        steps = []
        for step in decode_tokens(self, job):
            steps.append(step)
            if streamer is not None:
                streamer.put(step.tokens.cpu())
        if streamer is not None:
            streamer.end()
        sequences = torch.cat([ids, torch.stack([s.tokens for s in steps], 1)], 1)
        if not plan.return_dict_in_generate:
            return sequences
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=tuple(s.scores for s in steps) if plan.output_scores else None,
            logits=tuple(s.logits for s in steps) if plan.output_logits else None)

    @torch.inference_mode()
    def stream_generate(self, input_ids: Any = None, attention_mask: Any = None,
                        generation_config: Any = None, *, tokenizer: Tokenizer | None = None,
                        compile: bool = False, **kwargs: Any) -> Iterator[StreamStep]:
        """Yield each step's new tokens (and text, with a tokenizer) as `generate` makes them
        (arguments as `generate`; greedy or sampling, not beam search).

        Shapes: input_ids (B, T0) -> each step's `token_ids` (B * num_return_sequences,)."""
        job = self._prepare_generation(input_ids, attention_mask, generation_config, tokenizer,
                                       compile, kwargs)
        check_streaming(job.plan)
        rows: list[list[int]] = [[] for _ in range(job.plan.expanded_batch)]
        texts = ["" for _ in rows]
        for step in decode_tokens(self, job):
            if tokenizer is None:
                yield StreamStep(step.tokens)
                continue
            deltas = []
            for b, t in enumerate(step.tokens.tolist()):
                rows[b].append(t)
                text = tokenizer.decode(rows[b])
                keep = text.endswith("\ufffd")  # an incomplete UTF-8 character: wait for more
                deltas.append("" if keep else text[len(texts[b]):])
                texts[b] = texts[b] if keep else text
            yield StreamStep(step.tokens, deltas)

    def decode_step(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    write_pos: torch.Tensor, key_mask: torch.Tensor,
                    keys: tuple[torch.Tensor, ...], values: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One decoding step with static shapes over a `KVCache`'s buffers, for
        `torch.compile(..., fullgraph=True)`.

        Shapes: input_ids, position_ids (B, 1); write_pos (1,) the cache slot to write;
        key_mask (B, max_length) bool, True for filled non-pad slots including `write_pos`;
        keys, values L x (B, nh, max_length, hs) -> logits (B, V) of the new token. Writes slot
        `write_pos` of every buffer in place (`index_copy_`); the caller advances its record
        (`cache.advanced(1)`), so the compiled region never sees the record's int length.
        """
        allowed = key_mask[:, None, None, :]  # (B, 1, 1, S)
        bias = torch.zeros((), dtype=self.transformer.bias_dtype, device=key_mask.device).masked_fill(
            ~allowed, torch.finfo(self.transformer.bias_dtype).min)
        args = inputs.Inputs(input_ids, None, position_ids, None, None, None, 0, None)
        out = self.transformer.run(args, use_cache=False, static_cache=(keys, values),
                                   static_pos=write_pos, mask=AttnMask(allowed, bias, False))
        return self.lm_logits(out.last_hidden_state[:, -1])

    def _prepare_generation(self, input_ids: Any, attention_mask: Any, generation_config: Any,
                            tokenizer: Any, compile: bool, kwargs: dict[str, Any]) -> GenerationJob:
        """Merge and resolve the options and check the prompt, all by the spec's rules."""
        if not isinstance(compile, bool):
            raise TypeError(f"`compile` must be True or False. Received: compile={compile!r} "
                            f"({type(compile).__name__}).")
        gen = merge(getattr(self, "generation_config", None), generation_config, kwargs)
        ids, mask = prepare_inputs(self.config, gen, _numpy(input_ids), _numpy(attention_mask))
        plan = resolve(self.config, gen, ids.shape[0], ids.shape[1], has_tokenizer=tokenizer is not None)
        seed = plan.seed
        if seed is None and plan.do_sample:
            # torch's global generator, so `torch.manual_seed` makes unseeded runs repeatable
            seed = int(torch.randint(0, 2 ** 63 - 1, ()))
        device = self.device
        stop = StopStrings.build(plan, tokenizer, device) if plan.stop_strings else None
        return GenerationJob(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device),
                             plan, seed, stop, compile)


def _numpy(x: Any) -> Any:
    """Tensors -> NumPy for the spec's input checks (one copy of the prompt)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def left_padding_lengths(mask: torch.Tensor) -> torch.Tensor:
    """(N,) index of each row's first attended position (`gpt2_core.sampling`)."""
    return (mask != 0).long().argmax(-1)


@dataclasses.dataclass(frozen=True)
class StopStrings:
    """`gpt2_core.generation.StopStringTables` on the device: two gathers a step."""

    transitions: torch.Tensor  # (n_stop, M + 1, V) long: state after token t from state q
    hits: torch.Tensor         # (n_stop, M + 1, V) bool: token t completes the stop string

    @classmethod
    def build(cls, plan: GenerationPlan, tokenizer: Any, device: torch.device) -> StopStrings:
        tables = StopStringTables.cached(plan.stop_strings, tokenizer, plan.vocab_size)
        return cls(torch.from_numpy(tables.transitions).long().to(device),
                   torch.from_numpy(tables.hits).to(device))

    def step(self, state: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """state (N, n_stop), tokens (N,) -> new state (N, n_stop), hit (N,)."""
        s = torch.arange(self.transitions.shape[0], device=state.device)[None, :]
        t = tokens[:, None]
        return self.transitions[s, state, t], self.hits[s, state, t].any(-1)

    def initial_state(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, n_stop) states after each prompt row, left padding included (as transformers)."""
        state = torch.zeros(ids.shape[0], self.transitions.shape[0], dtype=torch.long, device=ids.device)
        for j in range(ids.shape[1]):
            state, _ = self.step(state, ids[:, j])
        return state


class GumbelNoise:
    """The step's Threefry Gumbel noise of `gpt2_core.threefry`, for rows (N, V)."""

    def __init__(self, seed: int, rows: int, vocab_size: int, device: torch.device) -> None:
        self.key, self.V = key_words(seed), vocab_size
        self.row_base = torch.arange(rows, dtype=torch.int64, device=device)[:, None] * vocab_size
        self._full: torch.Tensor | None = None

    def full(self, step: int) -> torch.Tensor:
        """(N, V) float32 noise of every token."""
        if self._full is None:
            self._full = threefry.counters(self.row_base.shape[0], self.V, self.row_base.device)
        return threefry.gumbel_at(self.key, step, self._full)

    def at(self, step: int, tokens: torch.Tensor) -> torch.Tensor:
        """(N, K) float32 noise of the tokens (N, K): the same bits as `full` there."""
        return threefry.gumbel_at(self.key, step, (self.row_base + tokens) & MASK32)

    def sample(self, scores: torch.Tensor, step: int, top_k: int) -> torch.Tensor:
        """Gumbel-max: argmax(scores + noise) (N,), ties to the lower token id.

        With top-k on (the default when sampling) only the k best tokens can win, so the noise
        is drawn for those alone (Threefry over all V tokens costs more than a small model's
        step); when boundary ties leave more than k finite scores, all V are drawn."""
        if 0 < top_k < self.V:
            values, idx = torch.topk(scores, top_k + 1, dim=-1)
            if bool(torch.isneginf(values[:, top_k]).all()):
                noisy = values[:, :top_k] + self.at(step, idx[:, :top_k])
                best = noisy.amax(-1, keepdim=True)
                return torch.where(noisy == best, idx[:, :top_k], self.V).amin(-1)
        return (scores + self.full(step)).argmax(-1)


# Compiled decoding rounds the static cache up to a multiple of this many slots, so prompts of
# different lengths share one compiled step (the step's shapes include the cache length).
CACHE_BUCKET = 64

# model -> {(batch, cache length, dtype, device): CompiledStep}. Weak keys, and a compiled plain
# function that takes the model as an argument (not a bound method), so the cache neither keeps
# a model alive nor ends up in its pickle or deepcopy.
_COMPILED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_bucket(length: int, n_positions: int) -> int:
    """The static cache length compiled decoding uses for `length` slots: the next multiple of
    `CACHE_BUCKET`, at most `n_positions`."""
    return min(-(-length // CACHE_BUCKET) * CACHE_BUCKET, n_positions)


def _decode_step(model, input_ids, position_ids, write_pos, key_mask, keys, values):
    return model.decode_step(input_ids, position_ids, write_pos, key_mask, keys, values)


def _compile_options(device: torch.device) -> dict[str, Any]:
    """`torch.compile` options of the decode step on `device`. On CUDA, `reduce-overhead`:
    CUDA graphs (cudagraph trees), so a step is one graph replay instead of a launch per kernel,
    which is what bounds a small model's step on a GPU. Elsewhere the default mode."""
    options: dict[str, Any] = {"fullgraph": True, "dynamic": False}
    if device.type == "cuda":
        options["mode"] = "reduce-overhead"
    return options


@dataclasses.dataclass
class CompiledStep:
    """A compiled `decode_step` for one (batch, cache length, dtype, device), and with CUDA
    graphs the cache buffers it replays on.

    A CUDA graph reads and writes fixed addresses: buffers at new addresses make cudagraph trees
    record the graph again (and after `cudagraph_unexpected_rerecord_limit` recordings run
    without graphs). So one set of buffers, marked static, is kept per compiled step and lent to
    each call in turn (zeroed: it looks freshly allocated); a call that overlaps another (two
    `stream_generate` iterators at once) gets buffers of its own, correct but recorded anew."""

    fn: Callable[..., torch.Tensor]
    cudagraphs: bool
    pooled: KVCache | None = None  # the buffers lent to calls (CUDA graphs only)
    lent: bool = False

    def new_cache(self, config, batch_size: int, max_length: int, dtype: torch.dtype,
                  device: torch.device) -> KVCache:
        if not self.cudagraphs:
            return KVCache.allocate(config, batch_size, max_length, dtype, device)
        if self.lent:
            return KVCache.allocate(config, batch_size, max_length, dtype, device, static_address=True)
        if self.pooled is None:
            self.pooled = KVCache.allocate(config, batch_size, max_length, dtype, device,
                                           static_address=True)
        self.lent = True
        return self.pooled.reset()

    def release(self, cache: KVCache) -> None:
        if self.pooled is not None and cache.keys[0] is self.pooled.keys[0]:
            self.lent = False

    def __call__(self, *args: Any) -> torch.Tensor:
        if self.cudagraphs:
            # a new step: the outputs of the previous replay may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        return self.fn(*args)


def compiled_decode_step(model, batch_size: int, max_length: int) -> CompiledStep:
    """`model.decode_step` under `torch.compile` (`_compile_options`: fullgraph, static shapes,
    CUDA graphs on CUDA), compiled once per (batch, cache length, dtype, device) and model;
    called as `step(model, ...)`."""
    weight = model.transformer.wte.weight
    key = (batch_size, max_length, weight.dtype, weight.device)
    steps = _COMPILED_STEPS.setdefault(model, {})
    if key not in steps:
        options = _compile_options(weight.device)
        steps[key] = CompiledStep(torch.compile(_decode_step, **options),
                                  options.get("mode") == "reduce-overhead")
    return steps[key]


def forward_cached(model, tokens: torch.Tensor, positions: torch.Tensor,
                   mask: torch.Tensor | None, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
    """The eager forward of `tokens` (B, T) at slots `cache.length ...` (positions (B, T), mask
    (B, cache.length + T) or None) -> float32 logits of the last position (B, V), and the record
    with those T slots filled."""
    start = cache.length
    args = inputs.Inputs(tokens, None, positions, None, mask, None, start, None)
    out = model.transformer.run(args, use_cache=False, static_cache=cache.buffers, static_pos=start)
    logits = model.lm_logits(out.last_hidden_state[:, -1]).float()  # last position only
    return logits, cache.advanced(tokens.shape[1])


class _Decoder:
    """Runs the model over a `KVCache`: `prefill(ids) -> (logits, cache)`, then
    `step(tokens, cache) -> (logits, cache)`; logits are float32 of the last position (B, V).
    Used as a context manager, so that buffers lent by a compiled step go back at the end.

    Eager steps attend over the filled prefix of a `max_length` cache. Compiled steps (`compile`)
    run `decode_step` on a cache of `cache_bucket(max_length)` slots with a key mask, so every
    step of every call in the bucket has the same shapes; the prompt is prefilled eagerly.
    """

    def __init__(self, model, ids: torch.Tensor, mask: torch.Tensor, max_length: int,
                 compile: bool = False) -> None:
        B, T0 = ids.shape
        self.model, self.T0 = model, T0
        self.S = cache_bucket(max_length, model.config.n_positions) if compile else max_length
        self.padded = not bool(mask.all())
        self.full_mask = None
        if self.padded:
            self.full_mask = torch.ones(B, self.S, dtype=torch.long, device=ids.device)
            self.full_mask[:, :T0] = mask
        self.positions = inputs.default_position_ids(mask if self.padded else None, 0, B, T0, ids.device)
        self.last_pos = self.positions[:, -1:]  # (B, 1)
        self.compiled = compiled_decode_step(model, B, self.S) if compile else None
        self._lent: KVCache | None = None
        if compile:
            # True for the prompt's non-pad slots, then for each new token as it is written
            self.key_mask = torch.zeros(B, self.S, dtype=torch.bool, device=ids.device)  # (B, S)
            self.key_mask[:, :T0] = mask.bool()

    def __enter__(self) -> _Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lent is not None:
            self.compiled.release(self._lent)
            self._lent = None

    def _mask(self, end: int) -> torch.Tensor | None:
        return self.full_mask[:, :end] if self.padded else None

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        B = ids.shape[0]
        weight = self.model.transformer.wte.weight
        if self.compiled is None:
            cache = KVCache.allocate(self.model.config, B, self.S, weight.dtype, ids.device)
        else:
            cache = self._lent = self.compiled.new_cache(self.model.config, B, self.S, weight.dtype,
                                                         ids.device)
        return forward_cached(self.model, ids, self.positions, self._mask(self.T0), cache)

    def step(self, tokens: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """tokens (B,) at sequence index `cache.length`."""
        self.last_pos = self.last_pos + 1
        if self.compiled is None:
            return forward_cached(self.model, tokens[:, None], self.last_pos,
                                  self._mask(cache.length + 1), cache)
        pos = cache.length
        self.key_mask[:, pos] = True
        write_pos = torch.tensor([pos], device=tokens.device)
        # contiguous inputs: their strides are part of what the compiled step was built for
        logits = self.compiled(self.model, tokens.reshape(-1, 1).contiguous(), self.last_pos.contiguous(),
                               write_pos, self.key_mask, cache.keys, cache.values)
        # a CUDA graph's output is overwritten by its next replay: copy it before it is kept
        # (`.float()` alone returns the same tensor for float32 models)
        return logits.to(torch.float32, copy=self.compiled.cudagraphs), cache.advanced(1)


@dataclasses.dataclass
class SampleState:
    """The greedy/sampling loop's state (transformers' `_sample`)."""

    seq: torch.Tensor                # (N, T0 + n) long: prompt, then each step's tokens
    unfinished: torch.Tensor         # (N,) bool: rows still generating; the others get pad
    stop_state: torch.Tensor | None  # (N, n_stop) long: stop-string automaton states


def decode_tokens(model, job: GenerationJob) -> Iterator[DecodedStep]:
    """Greedy or sampled decoding of the rows repeated `num_return_sequences` times; yields each
    step. Stops when every row hit an eos id or a stop string, or after `max_new_tokens`."""
    plan = job.plan
    k = plan.num_return_sequences
    ids, mask = job.ids.repeat_interleave(k, 0), job.mask.repeat_interleave(k, 0)
    N, T0 = ids.shape
    dev = ids.device
    st = SampleState(torch.empty(N, plan.max_length, dtype=torch.long, device=dev),
                     torch.ones(N, dtype=torch.bool, device=dev),
                     None if job.stop is None else job.stop.initial_state(ids))
    st.seq[:, :T0] = ids
    padding = left_padding_lengths(mask)
    eos = torch.tensor(plan.eos_token_ids, dtype=torch.long, device=dev)
    fns = processors.active(plan)
    noise = GumbelNoise(job.seed, N, plan.vocab_size, dev) if plan.do_sample else None
    with _Decoder(model, ids, mask, plan.max_length, job.compile) as dec:
        logits, cache = dec.prefill(ids)
        for step in range(plan.max_new_tokens):
            cur = T0 + step
            scores = processors.apply(logits, ProcessorState(st.seq[:, :cur], padding, step,
                                                             plan.eos_token_ids), plan, fns)
            tokens = scores.argmax(-1) if noise is None else noise.sample(scores, step, plan.top_k)
            if eos.numel():  # finished rows are padded when eos ends rows, as in transformers
                tokens = torch.where(st.unfinished, tokens, plan.pad_token_id)
            st.seq[:, cur] = tokens
            yield DecodedStep(tokens, scores, logits)
            st.unfinished &= ~torch.isin(tokens, eos)
            if st.stop_state is not None:
                st.stop_state, hit = job.stop.step(st.stop_state, tokens)
                st.unfinished &= ~hit
            if step + 1 == plan.max_new_tokens or not bool(st.unfinished.any()):
                return
            logits, cache = dec.step(tokens, cache)


# ---- beam search and beam sampling ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BeamState:
    """transformers' `_beam_search` bookkeeping per prompt row b and beam j
    (`gpt2_core.generation.BeamState`)."""

    running: torch.Tensor          # (B, nb, T0 + n) long: live beams, filled with the output fill id
    running_scores: torch.Tensor   # (B, nb) float: their summed log-probabilities
    running_indices: torch.Tensor  # (B, nb, n) long: flat source beam of each step, -1 unused
    sequences: torch.Tensor        # (B, nb, T0 + n) long: the best finished hypotheses
    beam_scores: torch.Tensor      # (B, nb) float: their length-normalised scores, BEAM_NEG empty
    beam_indices: torch.Tensor     # (B, nb, n) long
    finished: torch.Tensor         # (B, nb) bool: slot holds a finished hypothesis
    improvable: torch.Tensor       # (B, 1) bool: a running beam may still beat the worst finished
    stop_state: torch.Tensor | None  # (B, nb, n_stop) stop-string automaton states


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (B, K, ...) rows idx (B, k) along dim 1."""
    return torch.take_along_dim(t, idx.reshape(idx.shape + (1,) * (t.ndim - 2)), dim=1)


def _top(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest along dim 1, largest first (torch.topk, as transformers)."""
    return torch.topk(x, k, dim=1).indices


def initial_beams(ids: torch.Tensor, plan: GenerationPlan, stop: StopStrings | None) -> BeamState:
    B, T0 = ids.shape
    nb, n, dev = plan.num_beams, plan.max_new_tokens, ids.device
    running = torch.full((B, nb, T0 + n), output_fill(plan), dtype=torch.long, device=dev)
    running[:, :, :T0] = ids[:, None]
    scores = torch.zeros(B, nb, device=dev)
    scores[:, 1:] = BEAM_NEG
    indices = torch.full((B, nb, n), -1, dtype=torch.long, device=dev)
    stop_state = None if stop is None else stop.initial_state(ids)[:, None].repeat(1, nb, 1)
    return BeamState(running, scores, indices, running.clone(), torch.full((B, nb), BEAM_NEG, device=dev),
                     indices.clone(), torch.zeros(B, nb, dtype=torch.bool, device=dev),
                     torch.ones(B, 1, dtype=torch.bool, device=dev), stop_state)


def top_continuations(acc: torch.Tensor, plan: GenerationPlan, noise: GumbelNoise | None,
                      step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, nb * V) accumulated log-probs -> the `beams_to_keep` candidates (B, K): flat indices
    and scores, best first. Beam sampling draws them without replacement by Gumbel-top-k."""
    K = plan.beams_to_keep
    if noise is None:
        scores, idx = torch.topk(acc, K, dim=1)
        return idx, scores
    idx = _top(acc + noise.full(step).reshape(acc.shape), K)
    picked = acc.gather(1, idx)
    picked, order = torch.sort(picked, dim=1, descending=True, stable=True)
    return idx.gather(1, order), picked


def beam_step(st: BeamState, logp: torch.Tensor, plan: GenerationPlan, noise: GumbelNoise | None,
              step: int, stop: StopStrings | None) -> tuple[BeamState, torch.Tensor]:
    """One step of transformers' `_beam_search` on processed log-probs (B * nb, V)
    (`gpt2_core.generation.beam_step`). Returns the new state and the candidates' stop flags
    (B, K)."""
    B, nb = st.running_scores.shape
    V, T0, dev = plan.vocab_size, plan.prompt_length, logp.device
    cur = T0 + step
    acc = (logp.view(B, nb, V) + st.running_scores[:, :, None]).reshape(B, nb * V)
    idx, top_lp = top_continuations(acc, plan, noise, step)
    src, tokens = idx // V, idx % V                                    # (B, K)
    top_seq = _gather(st.running, src)
    top_seq[:, :, cur] = tokens
    top_idx = _gather(st.running_indices, src)
    top_idx[:, :, step] = src + torch.arange(B, device=dev)[:, None] * nb
    eos = torch.tensor(plan.eos_token_ids, dtype=torch.long, device=dev)
    hits = torch.isin(tokens, eos) | (cur + 1 >= plan.max_length)
    stop_state = None
    if stop is not None:
        K = src.shape[1]
        flat, hit = stop.step(_gather(st.stop_state, src).reshape(B * K, -1), tokens.reshape(-1))
        stop_state, hits = flat.view(B, K, -1), hits | hit.view(B, K)
    # the best candidates that did not stop keep running
    run_lp = top_lp + hits * BEAM_NEG
    nxt = _top(run_lp, nb)
    # the stopped ones among the best nb enter the finished pool, length-normalised
    just = hits & (torch.arange(hits.shape[1], device=dev) < nb)[None, :]
    fin_lp = top_lp / float(cur + 1 - T0) ** plan.length_penalty
    fin_lp = fin_lp + (st.finished.all(-1, keepdim=True) & (plan.early_stopping is True)) * BEAM_NEG
    fin_lp = fin_lp + (~st.improvable) * BEAM_NEG
    fin_lp = fin_lp + (~just) * BEAM_NEG
    merged = torch.cat([st.beam_scores, fin_lp], 1)
    best = _top(merged, nb)
    new = BeamState(
        running=_gather(top_seq, nxt), running_scores=_gather(run_lp, nxt),
        running_indices=_gather(top_idx, nxt),
        sequences=_gather(torch.cat([st.sequences, top_seq], 1), best),
        beam_scores=_gather(merged, best),
        beam_indices=_gather(torch.cat([st.beam_indices, top_idx], 1), best),
        finished=_gather(torch.cat([st.finished, just], 1), best),
        improvable=st.improvable,
        stop_state=None if stop_state is None else _gather(stop_state, nxt))
    return dataclasses.replace(new, improvable=early_stop_heuristic(new, cur + 1, plan)), hits


def early_stop_heuristic(st: BeamState, cur: int, plan: GenerationPlan) -> torch.Tensor:
    """Can the best running beam still beat the worst finished one? (transformers' heuristic)"""
    if plan.early_stopping == "never" and plan.length_penalty > 0.0:
        best_len = plan.max_new_tokens
    else:
        best_len = cur - plan.prompt_length
    best_running = st.running_scores[:, :1] / float(best_len) ** plan.length_penalty
    worst_finished = torch.where(st.finished, st.beam_scores.amin(1, keepdim=True), BEAM_NEG)
    return st.improvable & (best_running > worst_finished).any(-1, keepdim=True)


def beams_continue(st: BeamState, hits: torch.Tensor, plan: GenerationPlan) -> bool:
    """transformers' `_beam_search_has_unfinished_sequences`."""
    return bool(st.improvable.any()) and not (bool(st.finished.all()) and plan.early_stopping is True) \
        and not bool(hits.all())


def beam_search(model, job: GenerationJob) -> Any:
    """transformers' `_beam_search` (v5), step for step, on the static cache; with `do_sample`,
    beam sampling."""
    plan = job.plan
    B, T0 = job.ids.shape
    nb = plan.num_beams
    flat, flat_mask = job.ids.repeat_interleave(nb, 0), job.mask.repeat_interleave(nb, 0)
    padding = left_padding_lengths(flat_mask)
    st = initial_beams(job.ids, plan, job.stop)
    fns = processors.active(plan)
    noise = GumbelNoise(job.seed, B * nb, plan.vocab_size, flat.device) if plan.do_sample else None
    scores, raw = [], []
    step = 0
    with _Decoder(model, flat, flat_mask, plan.max_length, job.compile) as dec:
        logits, cache = dec.prefill(flat)
        while True:
            logp = processors.apply(F.log_softmax(logits, -1),
                                    ProcessorState(flat, padding, step, plan.eos_token_ids), plan, fns)
            scores.append(logp)
            raw.append(logits)
            st, hits = beam_step(st, logp, plan, noise, step, job.stop)
            cache = cache.reorder(st.running_indices[:, :, step].reshape(-1))
            step += 1
            if not beams_continue(st, hits, plan):
                break
            flat = st.running[:, :, :T0 + step].reshape(B * nb, T0 + step)
            logits, cache = dec.step(flat[:, -1], cache)
    return beam_outputs(st, plan, tuple(scores), tuple(raw))


def beam_outputs(st: BeamState, plan: GenerationPlan, scores: tuple, logits: tuple) -> Any:
    """The best `num_return_sequences` hypotheses of each row, cropped to the longest one."""
    k, T0 = plan.num_return_sequences, plan.prompt_length
    B = st.sequences.shape[0]
    sequences = st.sequences[:, :k].reshape(B * k, -1)
    indices = st.beam_indices[:, :k].reshape(B * k, -1)
    generated = int((indices + 1).bool().sum(1).max())
    sequences, indices = sequences[:, :T0 + generated], indices[:, :generated]
    if not plan.return_dict_in_generate:
        return sequences
    return GenerateBeamDecoderOnlyOutput(
        sequences=sequences,
        sequences_scores=st.beam_scores[:, :k].reshape(-1) if plan.output_scores else None,
        scores=scores if plan.output_scores else None,
        logits=logits if plan.output_logits else None, beam_indices=indices)
