"""The public boundary: turn Hugging Face-style arguments into the core's static-shape inputs.

Validation happens here, on concrete values, with `gpt2_core.reference.check_inputs`' messages:
JAX would silently clamp an out-of-range id inside a compiled gather. Arguments that are traced
(the caller's own `jit`/`grad`) cannot be inspected: their shapes and dtypes are still checked
(through zero placeholders of the same shape), and their values are checked by `checked_call`
under `jax.experimental.checkify`, or show up as NaN logits (the embedding gather fills
out-of-range rows with NaN instead of clamping). Under `jax.export` with symbolic shapes
(`jax.export.symbolic_shape("b, t")`) the same shape rules are checked on the dimension
expressions; the `n_positions` bound must then be provable from the symbolic scope's
constraints (e.g. `constraints=("t <= 1024",)`), which the exported function enforces at call time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.errors import InconclusiveDimensionOperation
from jax.export import is_symbolic_dim

from gpt2_core.checks import check_label_range, check_past_shapes
from gpt2_core.config import GPT2Config
from gpt2_core.reference import check_inputs
from gpt2_flax.modeling import KVCache, default_position_ids

Array = jax.Array


class CoreInputs(NamedTuple):
    """Everything the compiled forward pass needs; all arrays, static shapes."""

    input_ids: Array | None        # (B, T) int32; None when `inputs_embeds` replaces them
    position_ids: Array            # (B, T) int32
    token_type_ids: Array | None   # (B, T) int32
    key_mask: Array | None         # (B, M)
    cache: KVCache                 # L x (B, nh, M, hs)
    head_mask: Array | None        # (L, nh)
    inputs_embeds: Array | None = None  # (B, T, C), used instead of wte(input_ids)


def is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _as_array(x: Any, name: str) -> Array | None:
    if x is None or is_traced(x) or isinstance(x, jax.Array):
        return x
    try:
        return jnp.asarray(np.asarray(x))
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be an array (NumPy or JAX). Received: {type(x).__name__}."
                        ) from e


class _SymbolicShape(NamedTuple):
    """Stands in for a traced array whose shape holds `jax.export` dimension expressions, so
    `check_inputs` compares shapes symbolically. `size` 0 skips its value checks: traced values
    cannot be read (as the zeros stand-in of a concrete shape, which pass them)."""

    shape: tuple[Any, ...]
    dtype: Any
    size: int = 0

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _for_check(x: Array | None) -> np.ndarray | _SymbolicShape | None:
    """A NumPy value to validate: the value itself when concrete, zeros of its shape when traced
    (so shape and dtype rules still apply), a `_SymbolicShape` when that shape is symbolic."""
    if x is None:
        return None
    if is_traced(x):
        if any(is_symbolic_dim(d) for d in x.shape):
            return _SymbolicShape(tuple(x.shape), x.dtype)
        return np.zeros(x.shape, x.dtype)
    return np.asarray(x)


def _n_positions_bound_message(config: GPT2Config, past_len, T) -> str:
    total = past_len + T
    return (f"The sequence length is symbolic ({total}) and cannot be shown to fit the model's "
            f"`n_positions`={config.n_positions}. Declare the bound when building the symbolic "
            f"shapes, e.g. `jax.export.symbolic_shape(..., constraints=(\"{total} <= "
            f"{config.n_positions}\",))`; the exported function then refuses longer inputs.")


def validate(config: GPT2Config, input_ids, attention_mask, position_ids, token_type_ids,
             past_len, labels) -> None:
    """`gpt2_core.reference.check_inputs` on concrete values (shape checks only when traced,
    on dimension expressions when the shapes are symbolic)."""
    ids = _for_check(input_ids)
    if ids is not None and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"`input_ids` must hold integers. Received dtype {ids.dtype}.")
    try:
        check_inputs(config, ids, _for_check(attention_mask), _for_check(position_ids),
                     _for_check(token_type_ids), past_len, _for_check(labels))
    except InconclusiveDimensionOperation as e:
        # the only order comparison in check_inputs is past + seq > n_positions
        raise ValueError(_n_positions_bound_message(config, past_len, ids.shape[1])) from e


def check_one_source(config: GPT2Config, input_ids, inputs_embeds) -> None:
    """Exactly one of `input_ids` / `inputs_embeds` (B, T, n_embd), as Hugging Face."""
    if input_ids is not None and inputs_embeds is not None:
        raise ValueError("Pass either `input_ids` or `inputs_embeds` (which replaces "
                         "wte(input_ids)), not both. Received both.")
    if input_ids is None and inputs_embeds is None:
        raise ValueError(f"Pass `input_ids` (batch, seq) or `inputs_embeds` (batch, seq, "
                         f"n_embd={config.n_embd}). Received neither.")
    if inputs_embeds is None:
        return
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != config.n_embd:
        raise ValueError(f"`inputs_embeds` must have shape (batch, seq, n_embd={config.n_embd}). "
                         f"Received shape {tuple(inputs_embeds.shape)}.")
    if not jnp.issubdtype(inputs_embeds.dtype, jnp.floating):
        raise TypeError(f"`inputs_embeds` must hold floats. Received dtype {inputs_embeds.dtype}.")


def check_labels(labels, upper: int, name: str = "labels", bound: str = "vocab_size",
                 hint: str = "") -> None:
    """`gpt2_core.checks.check_label_range` on concrete labels. Traced labels (the caller's own
    `jit`/`grad`) cannot be read: an out-of-range one there gives a NaN loss."""
    if labels is not None and not is_traced(labels):
        check_label_range(np.asarray(labels), upper, name, bound, hint)


def _has_symbolic_dims(pairs: Any) -> bool:
    try:
        return any(is_symbolic_dim(d) for k, v in pairs for d in (*k.shape, *v.shape))
    except (TypeError, ValueError, AttributeError):  # not pairs of arrays: check_past_shapes says
        return False


def _constant_dims(x: Array) -> _SymbolicShape:
    """`x` as `check_past_shapes` should read it: symbolic dimensions as None (not compared)."""
    return _SymbolicShape(tuple(None if is_symbolic_dim(d) else d for d in x.shape), x.dtype)


def check_past(config: GPT2Config, pairs: Any, B, length_name: str = "past"):
    """`gpt2_core.checks.check_past_shapes`, also on `jax.export` symbolic shapes: there the
    constant dimensions are checked by it and the symbolic ones compared here as expressions.
    Returns the past length (a dimension expression when symbolic)."""
    if not _has_symbolic_dims(pairs):
        return check_past_shapes(config, pairs, B, length_name)
    view = tuple((_constant_dims(k), _constant_dims(v)) for k, v in pairs)
    check_past_shapes(config, view, None if is_symbolic_dim(B) else B, length_name)
    want = (B, config.n_head, pairs[0][0].shape[2], config.head_dim)
    for i, pair in enumerate(pairs):
        for part, x in zip(("key", "value"), pair):
            if tuple(x.shape) != want:
                raise ValueError(
                    f"`past_key_values[{i}]` {part} must have shape (batch={B}, n_head="
                    f"{config.n_head}, {length_name}={want[2]}, head_dim={config.head_dim}), with "
                    f"one {length_name} length for every key and value. Received shape "
                    f"{tuple(x.shape)}. Give every key and value the same symbolic shape.")
    return want[2]


def check_cache(config: GPT2Config, cache: KVCache, B: int) -> None:
    """A `KVCache` passed as `past_key_values`: its buffers' static shapes, traced or not."""
    if len(cache.keys) != len(cache.values):
        raise ValueError(f"`past_key_values` (a KVCache) must hold as many value buffers as key "
                         f"buffers. Received {len(cache.keys)} keys and {len(cache.values)} values."
                         " Build it with `model.init_cache(batch_size, max_length)`.")
    check_past(config, tuple(zip(cache.keys, cache.values)), B, "max_length")


def prepare(config: GPT2Config, dtype, input_ids, attention_mask=None, position_ids=None,
            token_type_ids=None, past_key_values=None, labels=None, head_mask=None,
            inputs_embeds=None) -> tuple[CoreInputs, Array | None, str]:
    """Validate and build `CoreInputs`. Returns `(core, labels, past_kind)` where past_kind is
    "none", "tuple" (HF-shaped pairs in, pairs out) or "cache" (a `KVCache` in and out)."""
    input_ids = _as_array(input_ids, "input_ids")
    inputs_embeds = _as_array(inputs_embeds, "inputs_embeds")
    check_one_source(config, input_ids, inputs_embeds)
    given_ids = input_ids
    if inputs_embeds is not None:
        # in-range stand-in ids of the embeddings' (B, T): every shape rule below still applies
        input_ids = jnp.zeros(inputs_embeds.shape[:2], jnp.int32)
    attention_mask = _as_array(attention_mask, "attention_mask")
    position_ids = _as_array(position_ids, "position_ids")
    token_type_ids = _as_array(token_type_ids, "token_type_ids")
    labels = _as_array(labels, "labels")
    if input_ids is None or input_ids.ndim != 2:
        raise ValueError("`input_ids` must have shape (batch, seq). Received shape "
                         f"{None if input_ids is None else input_ids.shape}.")
    B, T = input_ids.shape
    if isinstance(past_key_values, KVCache):
        kind, cache = "cache", past_key_values
        check_cache(config, cache, B)
        M = cache.max_length
        past_len = None if is_traced(cache.index) else int(cache.index)
        if past_len is not None and past_len + T > M:
            raise ValueError(f"The `KVCache` has {M} slots; {past_len} are filled and `input_ids` "
                             f"adds {T}. Allocate a larger cache with `KVCache.zeros`.")
        mask_full = attention_mask
        if attention_mask is not None and attention_mask.shape[-1] != M and past_len is not None:
            validate(config, input_ids, attention_mask, position_ids, token_type_ids, past_len,
                     labels)
            mask_full = jnp.pad(attention_mask, ((0, 0), (0, M - attention_mask.shape[-1])))
        else:
            check_mask = (None if attention_mask is None or past_len is None
                          else attention_mask[:, :past_len + T])
            validate(config, input_ids, check_mask, position_ids, token_type_ids,
                     past_len or 0, labels)
        attention_mask = mask_full
    else:
        past_len = 0
        # an empty tuple is no cache (as None); an array is not truth-tested but named below
        given_past = past_key_values is not None and not (
            isinstance(past_key_values, (tuple, list)) and not past_key_values)
        if given_past:
            past_len = check_past(config, past_key_values, B)
        validate(config, input_ids, attention_mask, position_ids, token_type_ids, past_len, labels)
        if given_past:
            kind, cache = "tuple", KVCache.from_past(past_key_values, T, dtype)
        else:
            kind, cache = "none", KVCache.zeros(config, B, T, dtype)
    input_ids = input_ids.astype(jnp.int32)
    if position_ids is None:
        position_ids = default_position_ids(attention_mask, cache.index, B, T)
    hm = None if head_mask is None else jnp.broadcast_to(
        jnp.asarray(head_mask, dtype), (config.n_layer, config.n_head))
    core = CoreInputs(None if given_ids is None else input_ids, position_ids.astype(jnp.int32),
                      None if token_type_ids is None else token_type_ids.astype(jnp.int32),
                      attention_mask, cache, hm, inputs_embeds)
    return core, labels, kind


def finish_past(cache: KVCache, kind: str, use_cache: bool):
    """The `past_key_values` field users get back."""
    if not use_cache:
        return None
    if kind == "cache":
        return cache
    return cache.to_past()


def checkify_input_ids(config: GPT2Config, input_ids: Array) -> None:
    """Range-check traced ids with `jax.experimental.checkify` (inside a function the caller
    wraps with `checkify.checkify`; `err.throw()` then raises the message below)."""
    from jax.experimental import checkify

    ok = jnp.all((input_ids >= 0) & (input_ids < config.vocab_size))
    checkify.check(ok, f"`input_ids` must lie in [0, vocab_size={config.vocab_size}). "
                   "Received out-of-range ids.")
