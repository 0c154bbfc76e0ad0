"""GPT-2's transformer in Flax NNX: attention, MLP, block, and the `GPT2Model` core.

Attribute names equal the canonical checkpoint names (`h[0].attn.c_attn`), so loading is the
literal table in `weights.py`. The matrices are `nnx.Linear` kernels `[in, out]`, the same
layout as GPT-2's `Conv1D`, so they load without a transpose.

The KV cache is an explicit pytree (`KVCache`), passed in and returned: per layer a
preallocated `(B, nh, M, hs)` key and value buffer plus the number of filled slots. New keys go
in with `lax.dynamic_update_slice`, so every shape is static under `jit`; attention always spans
the whole buffer and masks the slots not yet written.

Matmul precision: on GPU/TPU, XLA runs float32 matmuls in reduced precision (TF32/bf16 passes)
by default. The conformance tests run with `jax.config.update("jax_default_matmul_precision",
"highest")`; on CPU float32 matmuls are full precision either way.

Dimension names: B batch, T new tokens, M cache slots, C n_embd, nh heads, hs head_dim,
I inner width, V vocab, L layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gpt2_core.activations import (
    ACTIVATION_KIND,
    GELU_FAST_SQRT_2_OVER_PI,
    GELU_TANH_COEFF,
    QUICK_GELU_ALPHA,
    SQRT_2_OVER_PI,
)
from gpt2_core.config import GPT2Config
from gpt2_core.constants import mask_value

Array = jax.Array


def masked_score(dtype) -> float:
    """`gpt2_core.constants.mask_value` (the dtype's most negative finite value); NumPy's
    `finfo` does not know bfloat16, so that one asks `jnp.finfo`."""
    if jnp.dtype(dtype) == jnp.bfloat16:
        return float(jnp.finfo(jnp.bfloat16).min)
    return mask_value(np.dtype(dtype))


# ---- activations: each formula written out with gpt2_core's constants -----------------------
def _gelu_tanh(x: Array) -> Array:
    return 0.5 * x * (1.0 + jnp.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_COEFF * x ** 3)))


def _gelu_fast(x: Array) -> Array:
    return 0.5 * x * (1.0 + jnp.tanh(x * GELU_FAST_SQRT_2_OVER_PI * (1.0 + GELU_TANH_COEFF * x * x)))


def _gelu_exact(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)  # erf form; jax's default is the tanh form


def _quick_gelu(x: Array) -> Array:
    return x * jax.nn.sigmoid(QUICK_GELU_ALPHA * x)


ACTIVATION_FN: dict[str, Callable[[Array], Array]] = {
    "gelu_tanh": _gelu_tanh,
    "gelu_fast": _gelu_fast,
    "gelu_exact": _gelu_exact,
    "quick_gelu": _quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
}
"""`gpt2_core.activations.ACTIVATION_KIND` value -> JAX function."""


# ---- the cache -------------------------------------------------------------------------------
class KVCache(NamedTuple):
    """Preallocated key/value buffers for every layer, and how many slots are filled.

    Attributes:
        keys: L x (B, nh, M, hs).
        values: L x (B, nh, M, hs).
        index: () int32, the number of filled slots (the next write position).
    """

    keys: tuple[Array, ...]
    values: tuple[Array, ...]
    index: Array

    @classmethod
    def zeros(cls, config: GPT2Config, batch_size: int, max_length: int,
              dtype=jnp.float32) -> KVCache:
        """An empty cache of `max_length` slots."""
        shape = (batch_size, config.n_head, max_length, config.head_dim)
        keys = tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer))
        values = tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer))
        return cls(keys, values, jnp.zeros((), jnp.int32))

    @classmethod
    def from_past(cls, past_key_values, extra: int, dtype) -> KVCache:
        """A cache holding the per-layer `(key, value)` pairs, with `extra` empty slots after."""
        def grow(t):
            t = jnp.asarray(t, dtype)
            return jnp.pad(t, ((0, 0), (0, 0), (0, extra), (0, 0)))
        keys = tuple(grow(k) for k, _ in past_key_values)
        values = tuple(grow(v) for _, v in past_key_values)
        return cls(keys, values, jnp.asarray(past_key_values[0][0].shape[2], jnp.int32))

    @property
    def max_length(self) -> int:
        return self.keys[0].shape[2]

    def to_past(self, length: int | None = None) -> tuple[tuple[Array, Array], ...]:
        """The Hugging Face-shaped view: per-layer `(key, value)` of the first `length` slots."""
        length = self.max_length if length is None else length
        return tuple((k[:, :, :length], v[:, :, :length]) for k, v in zip(self.keys, self.values))

    def reorder(self, rows: Array) -> KVCache:
        """Gather batch rows (beam search): `rows` (B,) int."""
        return KVCache(tuple(k[rows] for k in self.keys), tuple(v[rows] for v in self.values),
                       self.index)


# ---- modules ---------------------------------------------------------------------------------
def _linear(n_in: int, n_out: int, std: float, dtype, param_dtype, rngs: nnx.Rngs,
            use_bias: bool = True) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=nnx.initializers.normal(std),
                      bias_init=nnx.initializers.zeros_init(), rngs=rngs)


def _layer_norm(config: GPT2Config, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # GPT-2's epsilon (1e-5) from the config, not NNX's 1e-6 default; the two-pass variance
    # (use_fast_variance=False) is what torch computes and keeps float32 parity at 1e-6.
    return nnx.LayerNorm(config.n_embd, epsilon=config.layer_norm_epsilon, dtype=dtype,
                         param_dtype=param_dtype, use_fast_variance=False, rngs=rngs)


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention with GPT-2's fused `c_attn` projection."""

    def __init__(self, config: GPT2Config, layer_idx: int, *, dtype, param_dtype,
                 rngs: nnx.Rngs):
        C = config.n_embd
        std = config.initializer_range
        self.c_attn = _linear(C, 3 * C, std, dtype, param_dtype, rngs)
        self.c_proj = _linear(C, C, config.residual_init_std, dtype, param_dtype, rngs)
        self.attn_dropout = nnx.Dropout(config.attn_pdrop, rngs=rngs)
        self.resid_dropout = nnx.Dropout(config.resid_pdrop, rngs=rngs)
        self.n_head = config.n_head
        self.scale = config.attn_scale(layer_idx)  # both scaling flags, from the spec
        self.upcast = config.reorder_and_upcast_attn

    def __call__(self, x: Array, k_cache: Array, v_cache: Array, index: Array, allowed: Array,
                 head_mask: Array | None) -> tuple[Array, Array, Array, Array]:
        """Shapes: x (B, T, C); caches (B, nh, M, hs); allowed (B, 1, T, M) bool -> y (B, T, C),
        the updated caches, probs (B, nh, T, M)."""
        B, T, C = x.shape
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)  # 3 x (B, T, C)
        q, k, v = (t.reshape(B, T, self.n_head, C // self.n_head).transpose(0, 2, 1, 3)
                   for t in (q, k, v))  # (B, nh, T, hs)
        k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, 0, index, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, 0, index, 0))
        keys = k_cache.astype(q.dtype)
        if self.upcast:  # reorder_and_upcast_attn: scale q first and score in float32
            scores = jnp.einsum("bhtd,bhsd->bhts", q.astype(jnp.float32) * self.scale,
                                keys.astype(jnp.float32))
        else:
            scores = jnp.einsum("bhtd,bhsd->bhts", q, keys) * self.scale  # (B, nh, T, M)
        scores = jnp.where(allowed, scores, masked_score(scores.dtype))  # set, not add
        probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        if head_mask is not None:
            probs = probs * head_mask[None, :, None, None].astype(probs.dtype)
        probs_dropped = self.attn_dropout(probs)
        y = jnp.einsum("bhts,bhsd->bhtd", probs_dropped, v_cache.astype(q.dtype))
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), k_cache, v_cache, probs


class MLP(nnx.Module):
    def __init__(self, config: GPT2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        C, I = config.n_embd, config.inner_dim
        self.c_fc = _linear(C, I, config.initializer_range, dtype, param_dtype, rngs)
        self.c_proj = _linear(I, C, config.residual_init_std, dtype, param_dtype, rngs)
        self.dropout = nnx.Dropout(config.resid_pdrop, rngs=rngs)
        self.act = ACTIVATION_FN[ACTIVATION_KIND[config.activation_function]]

    def __call__(self, x: Array) -> Array:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C)


class Block(nnx.Module):
    def __init__(self, config: GPT2Config, layer_idx: int, *, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.ln_1 = _layer_norm(config, dtype, param_dtype, rngs)
        self.attn = CausalSelfAttention(config, layer_idx, dtype=dtype, param_dtype=param_dtype,
                                        rngs=rngs)
        self.ln_2 = _layer_norm(config, dtype, param_dtype, rngs)
        self.mlp = MLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, k_cache, v_cache, index, allowed, head_mask):
        a, k_cache, v_cache, probs = self.attn(self.ln_1(x), k_cache, v_cache, index, allowed,
                                               head_mask)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, k_cache, v_cache, probs


def _embed(table: Array, ids: Array, dtype) -> Array:
    # mode="fill": an out-of-range id (possible only for traced ids, which the public boundary
    # cannot inspect) gives NaN embeddings instead of JAX's silent clamp to the last row.
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan).astype(dtype)


class Transformer(nnx.Module):
    """The GPT-2 stack (`wte`, `wpe`, `h`, `ln_f`); the public `GPT2Model` wraps it."""

    def __init__(self, config: GPT2Config, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        std = config.initializer_range
        self.wte = nnx.Embed(config.vocab_size, config.n_embd, dtype=dtype,
                             param_dtype=param_dtype,
                             embedding_init=nnx.initializers.normal(std), rngs=rngs)
        self.wpe = nnx.Embed(config.n_positions, config.n_embd, dtype=dtype,
                             param_dtype=param_dtype,
                             embedding_init=nnx.initializers.normal(std), rngs=rngs)
        self.drop = nnx.Dropout(config.embd_pdrop, rngs=rngs)
        self.h = nnx.List([Block(config, i, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                           for i in range(config.n_layer)])
        self.ln_f = _layer_norm(config, dtype, param_dtype, rngs)
        self.dtype = dtype

    def __call__(self, input_ids: Array | None, position_ids: Array, cache: KVCache,
                 key_mask: Array | None = None, token_type_ids: Array | None = None,
                 head_mask: Array | None = None, output_attentions: bool = False,
                 output_hidden_states: bool = False, inputs_embeds: Array | None = None):
        """The core: few arguments, static shapes.

        Shapes: input_ids, position_ids, token_type_ids (B, T); cache L x (B, nh, M, hs);
        key_mask (B, M) (1 = attend); inputs_embeds (B, T, C) instead of wte(input_ids) ->
        x (B, T, C) after `ln_f`, the updated cache, hidden states L + 1 x (B, T, C) (or ()),
        attentions L x (B, nh, T, M) (or ()).
        """
        B, T = position_ids.shape
        if inputs_embeds is None:
            x = _embed(self.wte.embedding[...], input_ids, self.dtype)
        else:
            x = inputs_embeds.astype(self.dtype)
        x = x + _embed(self.wpe.embedding[...], position_ids, self.dtype)
        if token_type_ids is not None:  # GPT-2 embeds token types with `wte`
            x = x + _embed(self.wte.embedding[...], token_type_ids, self.dtype)
        x = self.drop(x)
        allowed = attention_allowed(cache.index, T, cache.max_length, key_mask, B)
        hidden, attentions, keys, values = [x], [], [], []
        for i, block in enumerate(self.h):
            hm = None if head_mask is None else head_mask[i]
            x, k, v, probs = block(x, cache.keys[i], cache.values[i], cache.index, allowed, hm)
            keys.append(k)
            values.append(v)
            attentions.append(probs)
            hidden.append(x)
        x = self.ln_f(x)
        hidden[-1] = x
        new_cache = KVCache(tuple(keys), tuple(values), cache.index + T)
        return (x, new_cache, tuple(hidden) if output_hidden_states else (),
                tuple(attentions) if output_attentions else ())


def attention_allowed(index: Array, T: int, M: int, key_mask: Array | None, B: int) -> Array:
    """(B, 1, T, M) bool: query t (absolute position index + t) may see key slot s."""
    causal = jnp.arange(M)[None, :] <= (index + jnp.arange(T))[:, None]  # (T, M)
    allowed = jnp.broadcast_to(causal[None, None], (B, 1, T, M))
    if key_mask is not None:
        allowed = allowed & (key_mask[:, None, None, :] != 0)
    return allowed


def default_position_ids(key_mask: Array | None, index: Array, B: int, T: int) -> Array:
    """`gpt2_core.reference.default_position_ids` on the cache buffer: (B, T) positions from the
    mask (pads at 1) when given, else `index + arange(T)`."""
    if key_mask is None:
        return jnp.broadcast_to(index + jnp.arange(T), (B, T)).astype(jnp.int32)
    positions = jnp.cumsum(key_mask.astype(jnp.int32), axis=-1) - 1
    positions = jnp.where(key_mask == 0, 1, positions)
    return jax.lax.dynamic_slice_in_dim(positions, index, T, axis=1)
