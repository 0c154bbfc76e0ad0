"""Output records with Hugging Face's field names. They are pytrees (`flax.struct`), so compiled
functions return them; fields not requested are None."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

Array = jax.Array


@struct.dataclass
class BaseModelOutput:
    last_hidden_state: Array                 # (B, T, C), after ln_f
    past_key_values: Any = None              # L x ((B, nh, S, hs), (B, nh, S, hs)) or KVCache
    hidden_states: tuple[Array, ...] | None = None  # L + 1 x (B, T, C)
    attentions: tuple[Array, ...] | None = None     # L x (B, nh, T, S)


@struct.dataclass
class CausalLMOutput:
    logits: Array                            # (B, T, V)
    past_key_values: Any = None
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    loss: Array | None = None                # () float32


@struct.dataclass
class DoubleHeadsModelOutput:
    logits: Array                            # (B, n_choices, T, V)
    mc_logits: Array                         # (B, n_choices)
    past_key_values: Any = None
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    loss: Array | None = None
    mc_loss: Array | None = None


@struct.dataclass
class SequenceClassifierOutput:
    logits: Array                            # (B, num_labels), or (B, T, num_labels) per token
    past_key_values: Any = None
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    loss: Array | None = None


@struct.dataclass
class QuestionAnsweringOutput:
    start_logits: Array                      # (B, T)
    end_logits: Array                        # (B, T)
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    loss: Array | None = None
