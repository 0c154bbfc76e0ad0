"""Output records with Hugging Face's field names. They are pytrees (`flax.struct`, or
registered dataclasses for the generation records), so compiled functions return them; fields not
requested are None."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import struct

from gpt2_core.outputs import output_class

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


def _pytree(cls: type) -> type:
    """Register a `gpt2_core.outputs` record as a pytree: every field a child (None: empty)."""
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])


# transformers' generation records, from gpt2_core's one field table (same names and order in
# every backend): `sequences`, per-step `scores`/`logits` tuples, beams' `sequences_scores`
# and `beam_indices`.
GenerateDecoderOnlyOutput = _pytree(output_class("GenerateDecoderOnlyOutput", module=__name__))
GenerateBeamDecoderOnlyOutput = _pytree(output_class("GenerateBeamDecoderOnlyOutput", module=__name__))
