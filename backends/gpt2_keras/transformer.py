"""`GPT2Transformer`: embeddings, the blocks and `ln_f` (Hugging Face's `GPT2Model` body).

Follows `gpt2_core.reference`'s conventions: `attention_mask` (B, S) covers past and new
tokens; default positions are `cumsum(mask) - 1` with pads at 1; masked scores are set to the
float32 minimum; `hidden_states[-1]` is taken after `ln_f`.
"""

from __future__ import annotations

import keras
from keras import ops

from gpt2_core.checks import check_past_shapes
from gpt2_core.config import GPT2Config
from gpt2_keras.layers import Block, Dropout, Embedding, LayerNorm


def default_position_ids(attention_mask, past_len, B, T):
    """(B, T) int32: from the mask when given (pads at 1), else `past_len + arange(T)`."""
    if attention_mask is None:
        positions = ops.arange(T, dtype="int32") + ops.cast(past_len, "int32")
        return ops.broadcast_to(positions[None, :], (B, T))
    mask = ops.cast(attention_mask, "int32")
    positions = ops.cumsum(mask, axis=-1) - 1
    positions = ops.where(mask == 0, 1, positions)  # (B, S)
    return ops.slice(positions, [0, ops.cast(past_len, "int32")], [B, T])


def attention_allowed(past_len, T, S, attention_mask):
    """(B or 1, 1, T, S) bool: query t (absolute position past_len + t) may see key s."""
    q_pos = ops.arange(T, dtype="int32")[:, None] + ops.cast(past_len, "int32")
    allowed = (ops.arange(S, dtype="int32")[None, :] <= q_pos)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        allowed = ops.logical_and(allowed, (ops.cast(attention_mask, "int32") != 0)[:, None, None, :])
    return allowed


def empty_cache(config: GPT2Config, B, S: int, dtype) -> tuple:
    """Zeroed per-layer `(key, value)` buffers, each (B, nh, S, hs), for compiled decoding."""
    shape = (B, config.n_head, S, config.head_dim)
    return tuple((ops.zeros(shape, dtype), ops.zeros(shape, dtype)) for _ in range(config.n_layer))


class GPT2Transformer(keras.layers.Layer):
    """Token + position embeddings, `n_layer` blocks and the final LayerNorm.

    Shapes: input_ids (B, T) -> last_hidden_state (B, T, C).
    """

    def __init__(self, config: GPT2Config, name: str = "transformer", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.config = config
        C = config.n_embd
        # Variables are created here, under scopes named like the checkpoint's tensors, so each
        # has a unique path (`transformer/h/0/attn/c_attn/weight`).
        with keras.name_scope(self.name):
            self.wte = Embedding(config.vocab_size, C, name="wte", dtype=dtype)
            self.wpe = Embedding(config.n_positions, C, name="wpe", dtype=dtype)
            self.drop = Dropout(config.embd_pdrop, dtype=dtype)
            with keras.name_scope("h"):
                self.h = [Block(config, i, name=f"h_{i}", dtype=dtype) for i in range(config.n_layer)]
            # GPT-2's epsilon (1e-5), not Keras' LayerNormalization default of 1e-3.
            self.ln_f = LayerNorm(C, config.layer_norm_epsilon, name="ln_f", dtype=dtype)
        self.built = True

    def call(self, input_ids, attention_mask=None, position_ids=None, token_type_ids=None,
             past_key_values=None, head_mask=None, cache=None, cache_index=None,
             use_cache=False, output_hidden_states=False, output_attentions=False, training=None,
             inputs_embeds=None):
        """Either `past_key_values` (per-layer `(key, value)`, each (B, nh, S_past, hs), grown by
        concatenation) or a preallocated `cache` (per-layer `(key, value)` buffers, each
        (B, nh, S_max, hs); see `empty_cache`) written at `cache_index`, with `attention_mask`
        (B, S_max) covering the whole buffer. `inputs_embeds` (B, T, C) replaces the token
        embeddings of `input_ids` (then None)."""
        if inputs_embeds is None:
            input_ids = ops.cast(input_ids, "int32")
            B, T = ops.shape(input_ids)[0], ops.shape(input_ids)[1]
        else:
            B, T = ops.shape(inputs_embeds)[0], ops.shape(inputs_embeds)[1]
        if cache is not None:
            past_len, S = cache_index, ops.shape(cache[0][0])[2]
        else:
            if past_key_values is not None:  # static shapes: checked in graphs too (Keras' dict path)
                check_past_shapes(self.config, past_key_values, B if isinstance(B, int) else None)
            past_len = 0 if past_key_values is None else ops.shape(past_key_values[0][0])[2]
            S = past_len + T
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, past_len, B, T)
        tokens = (self.wte(input_ids) if inputs_embeds is None
                  else ops.cast(inputs_embeds, self.compute_dtype))
        x = tokens + self.wpe(ops.cast(position_ids, "int32"))  # (B, T, C)
        if token_type_ids is not None:
            x = x + self.wte(ops.cast(token_type_ids, "int32"))  # GPT-2 embeds types with wte
        x = self.drop(x, training=training)
        allowed = attention_allowed(past_len, T, S, attention_mask)
        hidden, presents, attentions = [x], [], []
        for i, block in enumerate(self.h):
            layer_past = None if past_key_values is None else past_key_values[i]
            hm = None if head_mask is None else head_mask[i]
            layer_cache = None if cache is None else cache[i]
            x, present, probs = block(x, allowed, layer_past=layer_past, cache=layer_cache,
                                      cache_index=cache_index, head_mask=hm, training=training)
            presents.append(present)
            attentions.append(probs)
            hidden.append(x)
        x = self.ln_f(x)
        hidden[-1] = x
        return {
            "last_hidden_state": x,
            "past_key_values": tuple(presents) if use_cache or cache is not None else None,
            "hidden_states": tuple(hidden) if output_hidden_states else None,
            "attentions": tuple(attentions) if output_attentions else None,
        }
