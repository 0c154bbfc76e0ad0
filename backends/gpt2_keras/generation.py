"""`generate`: greedy, sampling and beam search on a preallocated KV cache.

Greedy and sampling run the whole decode loop in one compiled program, a `keras.ops.while_loop`
per cache segment (`segment_ends`: the cache grows by doubling, so attention reads the filled
part rather than the whole buffer); on TensorFlow it is traced once per shape bucket into a
`tf.function(jit_compile=True)` (XLA). Shape bucketing:
the prompt is left-padded (mask 0) to a multiple of `PROMPT_BUCKET` and the buffer length
rounded up to a multiple of `LENGTH_BUCKET`, so a new prompt length reuses the compiled
function. The padding changes nothing: positions come from the mask and masked keys get exactly
zero weight. Beam search is compiled whole in the same way (`gpt2_keras.beam_search`). With a
`streamer`, greedy and sampling run the loop on the host around the same compiled prefill and
step (`stream`), since a compiled loop cannot call back into Python.

Dimensions: B batch, P prompt, P_b bucketed prompt, S buffer, V vocab, nb beams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import keras
import numpy as np
from keras import ops

from gpt2_core.sampling import SamplingConfig
from gpt2_keras import beam_search as beams
from gpt2_keras import processors
from gpt2_keras.transformer import empty_cache

PROMPT_BUCKET = 32
LENGTH_BUCKET = 64
JIT_COMPILE = True
"""XLA-compile the TensorFlow decode loop (False: a plain graph function, quicker to build; the
tiny-model tests use it, the TensorFlow-only tests cover XLA)."""


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Everything that changes the traced graph (one compiled function per distinct spec)."""

    cfg: SamplingConfig
    eos: tuple[int, ...]
    pad: int


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _uniform(shape, seed, step):
    """Stateless U(tiny, 1) noise keyed by (seed, step) with each backend's counter-based RNG."""
    tiny = float(np.finfo(np.float32).tiny)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.random.stateless_uniform(shape, seed=tf.stack([seed, step]), minval=tiny, maxval=1.0)
    if backend == "jax":
        import jax

        key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        return jax.random.uniform(key, shape, minval=tiny, maxval=1.0)
    import torch

    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    return torch.rand(tuple(shape), generator=g).clamp_min(tiny).to(keras.ops.convert_to_tensor(0.0).device)


def choose(scores, do_sample: bool, seed, step):
    """Greedy argmax, or a categorical draw via the Gumbel-max trick (exact sampling from
    softmax(scores); -inf scores are never drawn). Shapes: (B, V) -> (B,) int32."""
    if do_sample:
        scores = scores - ops.log(-ops.log(_uniform(ops.shape(scores), seed, step)))
    return ops.cast(ops.argmax(scores, axis=-1), "int32")


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


def prefill(model, spec: DecodeSpec, head, prompt, mask, length=None):
    """Run the bucketed prompt through a fresh cache of `length` positions (default S).

    Shapes: prompt (B, P_b), mask (B, S) -> the decode state `(cur, tokens (B, S), mask (B, S),
    cache (per layer 2 x (B, nh, length, hs)), logits (B, V), done (B,), seen (B, V))`, with
    cur = P_b.
    """
    c = model.config
    B, P_b = ops.shape(prompt)[0], ops.shape(prompt)[1]
    S = ops.shape(mask)[1]
    length = S if length is None else length
    tokens = ops.concatenate([prompt, ops.full((B, S - P_b), spec.pad, "int32")], axis=1)
    cache = empty_cache(c, B, length, model.transformer.compute_dtype)
    out = model.transformer(prompt, attention_mask=cache_mask(mask, cache), cache=cache,
                            cache_index=0)
    logits, cache = last_logits(model, out["last_hidden_state"], head), out["past_key_values"]
    # transformers (5.x) leaves the left padding out of the repetition penalty
    seen = processors.mark_seen(ops.zeros((B, c.vocab_size), "bool"), prompt, mask[:, :P_b] != 0)
    return (ops.convert_to_tensor(P_b, "int32"), tokens, mask, cache, logits,
            ops.zeros((B,), "bool"), seen)


def decode_step(model, spec: DecodeSpec, head, P_b, start, seed, state):
    """Choose one token per row from `logits`, write it at `cur` and run it through the model.

    `P_b` is the bucketed prompt length, `start` the first prompt column (bucket padding
    before it). Shapes: the state of `prefill` -> the same state, one position further.
    """
    cur, tokens, mask, cache, logits, done, seen = state
    B = ops.shape(tokens)[0]
    scores = processors.process(logits, spec.cfg, spec.eos, tokens=tokens, start=start, cur=cur,
                                seen=seen, new_tokens=cur - P_b)
    tok = choose(scores, spec.cfg.do_sample, seed, cur)
    tok = ops.where(done, spec.pad, tok)  # finished rows are padded, as in transformers
    tokens = ops.slice_update(tokens, [0, cur], tok[:, None])
    mask = ops.slice_update(mask, [0, cur], ops.ones((B, 1), "int32"))
    eos = ops.array(spec.eos or (-1,), "int32")
    done = ops.logical_or(done, ops.any(tok[:, None] == eos[None, :], axis=-1))
    if spec.cfg.repetition_penalty is not None and spec.cfg.repetition_penalty != 1.0:
        seen = processors.mark_seen(seen, tok[:, None], ops.ones((B, 1), "bool"))  # its only reader
    out = model.transformer(tok[:, None], attention_mask=cache_mask(mask, cache), cache=cache,
                            cache_index=cur)
    return (cur + 1, tokens, mask, out["past_key_values"],
            last_logits(model, out["last_hidden_state"], head), done, seen)


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


def decode_loop(model, spec: DecodeSpec, prompt, mask, start, stop, seed):
    """The compiled body: prefill the bucketed prompt, then decode until `stop` or every row
    has produced an EOS, in segments of growing cache length (`segment_ends`).

    Shapes: prompt (B, P_b), mask (B, S) -> tokens (B, S), cur (number of filled positions).
    """
    model._generate_traces += 1  # runs at trace time only: counts compilations
    B, P_b = ops.shape(prompt)[0], ops.shape(prompt)[1]
    ends = segment_ends(P_b, ops.shape(mask)[1])
    head = loop_head(model, B)  # loop-invariant: built once, outside the while loops

    def body(*state):
        return decode_step(model, spec, head, P_b, start, seed, state)

    state = prefill(model, spec, head, prompt, mask, ends[0])
    for end in ends:
        cur, tokens, mask, cache, *rest = state
        state = (cur, tokens, mask, grow_cache(cache, end), *rest)

        def cond(cur, tokens, mask, cache, logits, done, seen, end=end):
            return ops.logical_and(cur < ops.minimum(stop, end), ops.logical_not(ops.all(done)))

        state = ops.while_loop(cond, body, state)
    return state[1], state[0]


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


def _compiled(model, spec: DecodeSpec):
    return _compile(model, ("loop", spec), lambda *args: decode_loop(model, spec, *args))


def bucket_prompt(ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, pad: int):
    """Left-pad the prompt to the prompt bucket; a mask buffer of the length bucket."""
    B, P = ids.shape
    P_b = _round_up(max(P, 1), PROMPT_BUCKET)
    S = _round_up(P_b + max_new_tokens, LENGTH_BUCKET)
    prompt = np.full((B, P_b), pad, np.int32)
    prompt[:, P_b - P:] = ids
    mask_buf = np.zeros((B, S), np.int32)
    mask_buf[:, P_b - P:P_b] = mask
    return prompt, mask_buf, P_b - P


def sample(model, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, spec: DecodeSpec,
           seed: int) -> np.ndarray:
    """Greedy or sampled decoding. Shapes: (B, P) -> (B, P + generated)."""
    if not hasattr(model, "_generate_traces"):
        model._generate_traces = 0
    prompt, mask_buf, offset = bucket_prompt(ids, mask, max_new_tokens, spec.pad)
    P_b = prompt.shape[1]
    tokens, cur = _compiled(model, spec)(
        ops.convert_to_tensor(prompt), ops.convert_to_tensor(mask_buf),
        ops.convert_to_tensor(offset, "int32"), ops.convert_to_tensor(P_b + max_new_tokens, "int32"),
        ops.convert_to_tensor(seed, "int32"))
    return np.asarray(ops.convert_to_numpy(tokens))[:, offset:int(ops.convert_to_numpy(cur))]


def stream(model, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, spec: DecodeSpec,
           seed: int) -> Iterator[np.ndarray]:
    """Greedy or sampled decoding with the loop on the host: the compiled loop's own `prefill`
    and `decode_step` (each compiled once per bucket) on the same preallocated cache, so the
    tokens are the compiled loop's. Yields each step's tokens (B,) int32, `pad` for finished rows.
    """
    prompt, mask_buf, offset = bucket_prompt(ids, mask, max_new_tokens, spec.pad)
    B, P_b = prompt.shape
    head = loop_head(model, B)
    first = _compile(model, ("prefill", spec), lambda h, p, m: prefill(model, spec, h, p, m))
    step = _compile(model, ("step", spec), lambda h, p, s, seed_, state: decode_step(
        model, spec, h, p, s, seed_, state))
    state = first(head, ops.convert_to_tensor(prompt), ops.convert_to_tensor(mask_buf))
    consts = [ops.convert_to_tensor(v, "int32") for v in (P_b, offset, seed)]
    for cur in range(P_b, P_b + max_new_tokens):
        state = step(head, *consts, state)
        yield np.asarray(ops.convert_to_numpy(state[1][:, cur]), np.int32)
        if np.asarray(ops.convert_to_numpy(state[5])).all():
            return


# ---- beam search ------------------------------------------------------------------------------
def beam_search(model, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int,
                spec: beams.BeamSpec) -> np.ndarray:
    """transformers' `_beam_search` (v5, vectorised), compiled whole (see `gpt2_keras.beam_search`).

    Shapes: (B, P) -> (B, P + n).
    """
    if not hasattr(model, "_generate_traces"):
        model._generate_traces = 0
    nb = spec.num_beams
    prompt, mask_buf, offset = bucket_prompt(np.repeat(ids, nb, 0), np.repeat(mask, nb, 0),
                                             max_new_tokens, spec.pad)
    fn = _compile(model, ("beam", spec), lambda *args: beams.beam_loop(model, spec, *args))
    sequences, lengths = fn(
        ops.convert_to_tensor(prompt), ops.convert_to_tensor(mask_buf),
        ops.convert_to_tensor(offset, "int32"), ops.convert_to_tensor(max_new_tokens, "int32"))
    best = np.asarray(ops.convert_to_numpy(sequences))[:, 0]  # (B, S)
    generated = int(np.asarray(ops.convert_to_numpy(lengths))[:, 0].max())
    return best[:, offset:prompt.shape[1] + generated]


# ---- the public entry point ------------------------------------------------------------------
def _encode_prompts(prompts, tokenizer, pad: int):
    if tokenizer is None:
        raise ValueError("String prompts need a tokenizer. Received: tokenizer=None. Pass "
                         "tokenizer=gpt2_tokenizer.GPT2Tokenizer.from_pretrained().")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    rows = [tokenizer.encode(p) for p in prompts]
    P = max(len(r) for r in rows)
    ids = np.full((len(rows), P), pad, np.int32)
    mask = np.zeros((len(rows), P), np.int32)
    for i, r in enumerate(rows):  # left padding: every row's next token lands in the same column
        ids[i, P - len(r):], mask[i, P - len(r):] = r, 1
    return ids, mask


def _stop_string_ends(tokens: np.ndarray, P: int, stop_strings: Sequence[str], tokenizer) -> list:
    """Per row, the index of the first generated token after which the text ends with a stop
    string (transformers' StopStringCriteria checks each new token), or None."""
    ends = []
    for row in tokens:
        end = None
        for t in range(P, len(row)):
            text = tokenizer.decode(row[:t + 1].tolist())
            if any(text.endswith(s) for s in stop_strings):
                end = t
                break
        ends.append(end)
    return ends


def apply_stop_strings(tokens, P, stop_strings, tokenizer, eos, pad) -> np.ndarray:
    """Cut each row after its first stop string (the rest becomes `pad`), and drop the columns
    no row needs, as transformers stops once every row is finished."""
    if tokenizer is None:
        raise ValueError("`stop_strings` need a tokenizer to decode the text. Received: "
                         "tokenizer=None.")
    tokens = tokens.copy()
    ends = _stop_string_ends(tokens, P, stop_strings, tokenizer)
    row_end = []
    for b, end in enumerate(ends):
        eos_at = [t for t in range(P, tokens.shape[1]) if tokens[b, t] in eos]
        stops = [t for t in (end, eos_at[0] if eos_at else None) if t is not None]
        if stops:
            tokens[b, min(stops) + 1:] = pad
        row_end.append(min(stops) if stops else None)
    if all(e is not None for e in row_end):
        tokens = tokens[:, :max(row_end) + 1]
    return tokens


def generate(model, input_ids=None, attention_mask=None, *, max_new_tokens: int = 20,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float | None = None,
             no_repeat_ngram_size: int | None = None, min_new_tokens: int = 0, eos_token_id=None,
             pad_token_id: int | None = None, num_beams: int = 1, length_penalty: float = 1.0,
             early_stopping: bool | str = False, stop_strings=None, tokenizer=None,
             seed: int | None = None, prompts=None, streamer=None):
    """Prompt plus new tokens, with transformers' `generate` semantics.

    Shapes: input_ids (B, P) int, attention_mask (B, P) (left padding) -> (B, P + n) int32
    NumPy, n <= max_new_tokens (shorter when every row has finished). With string `prompts` (or
    strings as `input_ids`) and a `tokenizer`, returns the decoded texts (prompt included).

    Args:
        eos_token_id: an id or a list of ids; None uses `config.eos_token_ids`.
        pad_token_id: fills finished rows; None uses `config.pad_token_id`, else the first EOS.
        num_beams: > 1 runs beam search (deterministic; `do_sample` must be False).
        stop_strings: finish a row once its text ends with any of these (needs `tokenizer`).
        seed: the sampling seed (stateless: the same seed gives the same tokens).
        streamer: an object with `put(value)` and `end()` (transformers' `BaseStreamer`): gets
            the prompt ids (B, P), then each step's new tokens (B,), then `end()`. The decode loop
            then runs on the host around the compiled step (same tokens; a compiled XLA loop
            cannot call back into Python). Not with beam search.
    """
    c = model.config
    eos = tuple(c.eos_token_ids if eos_token_id is None else
                ([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id))
    pad = pad_token_id if pad_token_id is not None else (
        c.pad_token_id if c.pad_token_id is not None else (eos[0] if eos else 0))
    strings_in = prompts is not None or isinstance(input_ids, str) or (
        isinstance(input_ids, (list, tuple)) and input_ids and isinstance(input_ids[0], str))
    if strings_in:
        ids, mask = _encode_prompts(prompts if prompts is not None else input_ids, tokenizer, pad)
    else:
        if input_ids is None:
            raise ValueError("`input_ids` (or string `prompts` with a tokenizer) is required.")
        ids = np.asarray(ops.convert_to_numpy(input_ids))
        if ids.ndim == 1:
            ids = ids[None]
        mask = (np.ones_like(ids) if attention_mask is None
                else np.asarray(ops.convert_to_numpy(attention_mask)).reshape(ids.shape))
    _check_generate_args(c, ids, max_new_tokens, num_beams, do_sample)
    _check_streamer(streamer, num_beams)
    ids, mask = ids.astype(np.int32), mask.astype(np.int32)
    cfg = SamplingConfig(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                         repetition_penalty=repetition_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens)
    if num_beams > 1:
        out = beam_search(model, ids, mask, max_new_tokens,
                          beams.BeamSpec(cfg, eos, pad, num_beams, float(length_penalty), early_stopping))
    else:
        seed = int(np.random.default_rng().integers(2**31 - 1)) if seed is None else seed
        spec = DecodeSpec(cfg, eos, pad)
        out = (sample(model, ids, mask, max_new_tokens, spec, seed) if streamer is None
               else _streamed(model, ids, mask, max_new_tokens, spec, seed, streamer))
    if stop_strings:
        stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        out = apply_stop_strings(out, ids.shape[1], stop_strings, tokenizer, eos, pad)
    out = out.astype(np.int32)
    if strings_in:
        return [tokenizer.decode([t for t, m in zip(row, np.concatenate(
            [mask_row, np.ones(len(row) - len(mask_row), np.int32)])) if m and t not in eos])
            for row, mask_row in zip(out, mask)]
    return out


def _streamed(model, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, spec: DecodeSpec,
              seed: int, streamer) -> np.ndarray:
    """`sample` through `stream`, handing the prompt and each step's tokens to the streamer in
    transformers' order. Shapes: (B, P) -> (B, P + generated)."""
    streamer.put(ids)
    steps = []
    for tok in stream(model, ids, mask, max_new_tokens, spec, seed):
        streamer.put(tok)
        steps.append(tok)
    streamer.end()
    return np.concatenate([ids, np.stack(steps, axis=1)], axis=1)


def _check_streamer(streamer, num_beams: int) -> None:
    if streamer is None:
        return
    if not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise TypeError("`streamer` must have `put(value)` and `end()` methods, like transformers' "
                        f"TextStreamer. Received: {type(streamer).__name__}.")
    if num_beams > 1:
        raise ValueError("`streamer` cannot be used with beam search: beams are reordered until "
                         f"the end, so no token is final earlier. Received: num_beams={num_beams}; "
                         "use num_beams=1 or streamer=None.")


def _check_generate_args(config, ids: np.ndarray, max_new_tokens: int, num_beams: int,
                         do_sample: bool) -> None:
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"`input_ids` must be integer ids of shape (batch, seq). Received "
                         f"shape {ids.shape}, dtype {ids.dtype}.")
    if ids.size and (ids.min() < 0 or ids.max() >= config.vocab_size):
        raise ValueError(f"`input_ids` must lie in [0, vocab_size={config.vocab_size}). "
                         f"Received range [{ids.min()}, {ids.max()}].")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive integer. Received: {max_new_tokens!r}.")
    if ids.shape[1] + max_new_tokens > config.n_positions:
        raise ValueError(
            f"prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"`n_positions`={config.n_positions}. Shorten the prompt or lower max_new_tokens.")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"`num_beams` must be a positive integer. Received: {num_beams!r}.")
    if num_beams > 1 and do_sample:
        raise ValueError("Beam sampling is not supported: use num_beams=1 with do_sample=True, or "
                         "do_sample=False with beams. Received: num_beams="
                         f"{num_beams}, do_sample=True.")
