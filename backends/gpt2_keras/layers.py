"""GPT-2's building blocks as Keras 3 layers written with `keras.ops` (TensorFlow, JAX, PyTorch).

Weight attributes carry the checkpoint names (`c_attn.weight`, `ln_1.bias`, `wte.weight`), so
the map to `gpt2_core`'s canonical names is the identity plus a transpose for the heads.
Dimensions: B batch, T new tokens, S keys (past + new, or the preallocated cache length),
C n_embd, nh heads, hs head_dim, V vocab, L layers.
"""

from __future__ import annotations

import contextlib
import contextvars
import random

import keras
from keras import ops

from gpt2_core.activations import (
    ACTIVATION_KIND,
    GELU_FAST_SQRT_2_OVER_PI,
    GELU_TANH_COEFF,
    QUICK_GELU_ALPHA,
    SQRT_2_OVER_PI,
)
from gpt2_core.config import GPT2Config
from gpt2_core.constants import mask_value


def activation(kind: str, x):
    """The formula `gpt2_core.activations.ACTIVATION_KIND` names, constants passed explicitly
    (`keras.ops.gelu(approximate=True)` would depend on each backend's constant)."""
    if kind == "gelu_tanh":
        return 0.5 * x * (1.0 + ops.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_COEFF * x * x * x)))
    if kind == "gelu_fast":
        return 0.5 * x * (1.0 + ops.tanh(x * GELU_FAST_SQRT_2_OVER_PI * (1.0 + GELU_TANH_COEFF * x * x)))
    if kind == "gelu_exact":
        return 0.5 * x * (1.0 + ops.erf(x * (2.0 ** -0.5)))
    if kind == "quick_gelu":
        return x * ops.sigmoid(QUICK_GELU_ALPHA * x)
    if kind == "relu":
        return ops.relu(x)
    if kind == "silu":
        return x * ops.sigmoid(x)
    if kind == "tanh":
        return ops.tanh(x)
    raise ValueError(f"Unknown activation kind. Received: kind={kind!r}. "
                     f"Expected one of {sorted(set(ACTIVATION_KIND.values()))}.")


_INITIAL_VALUES = contextvars.ContextVar("gpt2_keras_initial_values", default=None)


@contextlib.contextmanager
def initial_values(provider):
    """Inside, the random-normal weights (`Conv1D`, `Embedding`) take their initial value from
    `provider(shape, dtype)` (an array), or start as zeros where it returns None: for a loader,
    so building the model costs one copy of the weights and no random draws."""
    token = _INITIAL_VALUES.set(provider)
    try:
        yield
    finally:
        _INITIAL_VALUES.reset(token)


def _normal_init():
    provider = _INITIAL_VALUES.get()
    if provider is None:
        return keras.initializers.RandomNormal(stddev=0.02)

    def init(shape, dtype=None):
        value = provider(tuple(shape), dtype)
        return ops.zeros(shape, dtype) if value is None else value

    return init


class Conv1D(keras.layers.Layer):
    """GPT-2's `Conv1D`: y = x @ weight + bias with `weight` stored `[in, out]`.

    Shapes: (..., n_in) -> (..., n_out).
    """

    def __init__(self, n_in: int, n_out: int, use_bias: bool = True, name: str | None = None,
                 dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.n_in, self.n_out = n_in, n_out
        self.weight = self.add_weight(shape=(n_in, n_out), name="weight", initializer=_normal_init())
        self.bias = (self.add_weight(shape=(n_out,), name="bias", initializer="zeros")
                     if use_bias else None)
        self.built = True

    def call(self, x):
        y = ops.matmul(x, self.weight)
        return y if self.bias is None else y + self.bias


class Dropout(keras.layers.Dropout):
    """Keras' `Dropout` whose random state is saved with the weights (`.keras` files, weight
    files): training resumed from a `ModelCheckpoint` file then draws the same masks as the
    uninterrupted run (Keras' own `Dropout` saves nothing and restarts from a fresh seed).

    The seed is always set (drawn from Python's `random`, which `keras.utils.set_random_seed`
    seeds, when not given): an unseeded Keras `Dropout` on the PyTorch backend draws from
    torch's global generator instead of its own state, and could not be resumed.
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        if seed is None and rate > 0:
            seed = random.randint(1, int(1e9))  # what Keras draws for a seed generator
        super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)

    def save_own_variables(self, store):
        if self.rate > 0:
            store["0"] = self.seed_generator.state

    def load_own_variables(self, store):
        if self.rate > 0 and len(store.keys()) == 1:  # files written before have no state
            self.seed_generator.state.assign(store["0"])


class LayerNorm(keras.layers.Layer):
    """LayerNorm over the last axis, computed in float32 whatever the policy (half-precision
    variance loses too many bits), with GPT-2's epsilon instead of Keras' 1e-3 default.

    Shapes: (..., C) -> (..., C).
    """

    def __init__(self, n: int, epsilon: float, name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.epsilon = epsilon
        self.weight = self.add_weight(shape=(n,), name="weight", initializer="ones", autocast=False)
        self.bias = self.add_weight(shape=(n,), name="bias", initializer="zeros", autocast=False)
        self.built = True

    def call(self, x):
        in_dtype = x.dtype
        x = ops.cast(x, "float32")
        mean = ops.mean(x, axis=-1, keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)  # biased, as torch
        y = (x - mean) * ops.rsqrt(var + self.epsilon)
        y = y * ops.cast(self.weight, "float32") + ops.cast(self.bias, "float32")
        return ops.cast(y, in_dtype)


class Embedding(keras.layers.Layer):
    """A lookup table `weight` (N, C); also used transposed as the tied LM head.

    Shapes: (B, T) int -> (B, T, C).
    """

    def __init__(self, n: int, dim: int, name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.weight = self.add_weight(shape=(n, dim), name="weight", initializer=_normal_init())
        self.built = True

    def call(self, ids):
        return ops.take(self.weight, ids, axis=0)


def split_heads(x, n_head: int):
    B, T = ops.shape(x)[0], ops.shape(x)[1]
    x = ops.reshape(x, (B, T, n_head, -1))
    return ops.transpose(x, (0, 2, 1, 3))  # (B, nh, T, hs)


def merge_heads(x):
    x = ops.transpose(x, (0, 2, 1, 3))  # (B, T, nh, hs)
    B, T = ops.shape(x)[0], ops.shape(x)[1]
    return ops.reshape(x, (B, T, -1))


class Attention(keras.layers.Layer):
    """Causal self-attention with a fused `c_attn`.

    The cache is either a growing `(key, value)` pair (the Hugging Face-shaped surface) or this
    layer's preallocated `(key, value)` buffers, each (B, nh, S_max, hs), written at
    `cache_index` (compiled generation).
    """

    def __init__(self, config: GPT2Config, layer_idx: int, name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        C = config.n_embd
        self.n_head = config.n_head
        self.layer_idx = layer_idx
        self.scale = config.attn_scale(layer_idx)
        self.upcast = config.reorder_and_upcast_attn
        with keras.name_scope(self.name):
            self.c_attn = Conv1D(C, 3 * C, name="c_attn", dtype=dtype)
            self.c_proj = Conv1D(C, C, name="c_proj", dtype=dtype)
        self.attn_dropout = Dropout(config.attn_pdrop, dtype=dtype)
        self.resid_dropout = Dropout(config.resid_pdrop, dtype=dtype)
        self.built = True

    def call(self, x, allowed, layer_past=None, cache=None, cache_index=None, head_mask=None,
             training=None):
        """Shapes: x (B, T, C), allowed (B, 1, T, S) bool -> y (B, T, C), present, probs
        (B, nh, T, S). With `cache` (this layer's key and value buffers, each
        (B, nh, S_max, hs)), the new keys/values are written at `cache_index` and `present` is
        the updated pair."""
        q, k, v = ops.split(self.c_attn(x), 3, axis=-1)  # 3 x (B, T, C)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            # One buffer per layer and per k/v: an update-slice on a loop-carried buffer is done
            # in place by XLA, while slicing a layer out of one stacked (L, 2, ...) cache after
            # each update made it copy the whole cache on every layer of every step.
            zero = ops.zeros((), "int32")
            start = [zero, zero, ops.cast(cache_index, "int32"), zero]
            k = ops.slice_update(cache[0], start, ops.cast(k, cache[0].dtype))  # (B, nh, S_max, hs)
            v = ops.slice_update(cache[1], start, ops.cast(v, cache[1].dtype))
            present = (k, v)
        else:
            if layer_past is not None:
                k = ops.concatenate([ops.cast(layer_past[0], k.dtype), k], axis=2)  # (B, nh, S, hs)
                v = ops.concatenate([ops.cast(layer_past[1], v.dtype), v], axis=2)
            present = (k, v)
        probs = self.attention_probs(q, k, allowed)
        if head_mask is not None:
            probs = probs * ops.cast(head_mask, probs.dtype)[None, :, None, None]
        probs = self.attn_dropout(probs, training=training)
        y = merge_heads(ops.matmul(probs, v))  # (B, T, C)
        return self.resid_dropout(self.c_proj(y), training=training), present, probs

    def attention_probs(self, q, k, allowed):
        """Softmax in float32 whatever the policy; masked scores are set to float32's min."""
        if self.upcast:  # `reorder_and_upcast_attn`: scale q, then q @ k^T, all in float32
            scores = ops.matmul(ops.cast(q, "float32") * self.scale,
                                ops.transpose(ops.cast(k, "float32"), (0, 1, 3, 2)))
        else:
            scores = ops.cast(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), "float32") * self.scale
        scores = ops.where(allowed, scores, mask_value("float32"))  # (B, nh, T, S)
        return ops.cast(ops.softmax(scores, axis=-1), q.dtype)


class MLP(keras.layers.Layer):
    def __init__(self, config: GPT2Config, name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.kind = ACTIVATION_KIND[config.activation_function]
        with keras.name_scope(self.name):
            self.c_fc = Conv1D(config.n_embd, config.inner_dim, name="c_fc", dtype=dtype)
            self.c_proj = Conv1D(config.inner_dim, config.n_embd, name="c_proj", dtype=dtype)
        self.dropout = Dropout(config.resid_pdrop, dtype=dtype)
        self.built = True

    def call(self, x, training=None):
        """Shapes: (B, T, C) -> (B, T, C)."""
        return self.dropout(self.c_proj(activation(self.kind, self.c_fc(x))), training=training)


class Block(keras.layers.Layer):
    def __init__(self, config: GPT2Config, layer_idx: int, name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        C, eps = config.n_embd, config.layer_norm_epsilon
        # Variable paths follow the checkpoint names (`h.0.attn.c_attn.weight` ->
        # `.../h/0/attn/c_attn/weight`): unique, so a `keras.distribution.LayoutMap` can address
        # one layer. The enclosing `GPT2Transformer` opens the "h" scope.
        with keras.name_scope(str(layer_idx)):
            self.ln_1 = LayerNorm(C, eps, name="ln_1", dtype=dtype)
            self.attn = Attention(config, layer_idx, name="attn", dtype=dtype)
            self.ln_2 = LayerNorm(C, eps, name="ln_2", dtype=dtype)
            self.mlp = MLP(config, name="mlp", dtype=dtype)
        self.built = True

    def call(self, x, allowed, layer_past=None, cache=None, cache_index=None, head_mask=None,
             training=None):
        """Shapes: (B, T, C) -> (B, T, C), present, probs (B, nh, T, S)."""
        a, present, probs = self.attn(self.ln_1(x), allowed, layer_past=layer_past, cache=cache,
                                      cache_index=cache_index, head_mask=head_mask,
                                      training=training)
        x = x + a
        x = x + self.mlp(self.ln_2(x), training=training)
        return x, present, probs
