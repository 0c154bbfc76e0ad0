"""Output records from one field table: the same class names, field order and indexing in every
backend (Hugging Face's names).

`output_class(name)` builds the record class for one row of a table: a dataclass whose fields
default to None, read by attribute, by name (`out["sequences"]`) and by position over the fields
that are set (`out[0]`, `to_tuple()`), as transformers' `ModelOutput`. Backends build their
classes from these tables (Flax registers them as pytrees), so code written against one
backend's outputs runs against another's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

GENERATION_OUTPUTS: dict[str, tuple[str, ...]] = {
    # transformers' `GenerateDecoderOnlyOutput`: greedy decoding and sampling.
    "GenerateDecoderOnlyOutput": ("sequences", "scores", "logits", "attentions", "hidden_states",
                                  "past_key_values"),
    # transformers' `GenerateBeamDecoderOnlyOutput`: beam search and beam sampling.
    "GenerateBeamDecoderOnlyOutput": ("sequences", "sequences_scores", "scores", "logits",
                                      "beam_indices", "attentions", "hidden_states",
                                      "past_key_values"),
}
"""Each generation record's fields, in transformers' order. `sequences` (N, T0 + n); `scores`
and `logits` a tuple with one (N, V) array per step taken; `sequences_scores` (N,);
`beam_indices` (N, n). Attentions, hidden states and the cache are not returned (None)."""


class ModelOutput:
    """Attribute, name and position access over a record's fields (transformers' semantics)."""

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in declaration order."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                     if getattr(self, f.name) is not None)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) is not None]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r} set. Set fields: {self.keys()}.")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


def output_class(name: str, table: dict[str, tuple[str, ...]] = GENERATION_OUTPUTS,
                 base: type = ModelOutput, module: str | None = None) -> type:
    """The record class `name` of `table`: a dataclass over `base` with every field None by
    default."""
    if name not in table:
        raise KeyError(f"No output record {name!r}. Known: {sorted(table)}.")
    cls = dataclasses.make_dataclass(name, [(f, Any, dataclasses.field(default=None)) for f in table[name]],
                                     bases=(base,), eq=False)
    cls.__module__ = module or __name__
    cls.__doc__ = f"transformers' `{name}`: fields {', '.join(table[name])}."
    return cls


GenerateDecoderOnlyOutput = output_class("GenerateDecoderOnlyOutput")
GenerateBeamDecoderOnlyOutput = output_class("GenerateBeamDecoderOnlyOutput")
