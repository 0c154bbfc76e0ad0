"""Model outputs: dataclasses with Hugging Face's field names that also read like dicts."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class ModelOutput:
    """Fields are attributes (`out.logits`) and keys (`out["logits"]`); `None` fields are
    skipped by `keys()`, as in Hugging Face."""

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(f"{type(self).__name__} has no field {key!r}. Fields: {self.keys()}.")
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.keys()}

    def to_tuple(self) -> tuple:
        """The set fields in order, what `return_dict=False` returns (Hugging Face's tuple)."""
        return tuple(getattr(self, k) for k in self.keys())


@dataclasses.dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Any = None           # (B, T, C)
    past_key_values: Any = None             # L x ((B, nh, S, hs), (B, nh, S, hs))
    hidden_states: Any = None               # L + 1 x (B, T, C)
    attentions: Any = None                  # L x (B, nh, T, S)


@dataclasses.dataclass
class CausalLMOutput(ModelOutput):
    loss: Any = None
    logits: Any = None                      # (B, T, V)
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class DoubleHeadsOutput(ModelOutput):
    loss: Any = None                        # LM loss
    mc_loss: Any = None
    logits: Any = None                      # (B, nc, T, V)
    mc_logits: Any = None                   # (B, nc)
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None                      # (B, num_labels), or (B, T, num_labels) per token
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class QuestionAnsweringOutput(ModelOutput):
    loss: Any = None
    start_logits: Any = None                # (B, T)
    end_logits: Any = None                  # (B, T)
    hidden_states: Any = None
    attentions: Any = None
