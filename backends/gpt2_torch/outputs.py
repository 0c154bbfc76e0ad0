"""Output containers with Hugging Face's field names. Attribute access, `out["logits"]`, and
`out[0]` / `to_tuple()` over the fields that are set (what `return_dict=False` returns)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

KV = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass
class ModelOutput:
    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in declaration order (as Hugging Face's tuples)."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self)
                     if getattr(self, f.name) is not None)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclasses.dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: torch.Tensor | None = None           # (B, T, C)
    past_key_values: tuple[KV, ...] | None = None           # L x 2 x (B, nh, S, hs)
    hidden_states: tuple[torch.Tensor, ...] | None = None   # L + 1 x (B, T, C)
    attentions: tuple[torch.Tensor, ...] | None = None      # L x (B, nh, T, S)


@dataclasses.dataclass
class CausalLMOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None                      # (B, T, V)
    past_key_values: tuple[KV, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclasses.dataclass
class GPT2DoubleHeadsModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    mc_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None                      # (B, nc, T, V)
    mc_logits: torch.Tensor | None = None                   # (B, nc)
    past_key_values: tuple[KV, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclasses.dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None                      # (B, num_labels)
    past_key_values: tuple[KV, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclasses.dataclass
class TokenClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None                      # (B, T, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclasses.dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None                # (B, T)
    end_logits: torch.Tensor | None = None                  # (B, T)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def _register_pytrees() -> None:
    """Output records as pytree nodes, so `torch.export` / `torch.onnx.export` programs of the
    default call (`return_dict=True`) return them, as transformers registers its ModelOutput;
    the serialized names let `torch.export.save`/`load` round-trip them."""
    for cls in (BaseModelOutputWithPast, CausalLMOutputWithPast, GPT2DoubleHeadsModelOutput,
                SequenceClassifierOutputWithPast, TokenClassifierOutput,
                QuestionAnsweringModelOutput):
        torch.export.register_dataclass(cls, serialized_type_name=f"gpt2_torch.{cls.__name__}")


_register_pytrees()
