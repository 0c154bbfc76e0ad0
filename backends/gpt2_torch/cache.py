"""A preallocated key/value cache: one buffer per tensor kind, written in place.

Eager decoding writes slot `pos` with slice assignment and attends over the filled prefix;
compiled decoding writes with `index_copy_` at a tensor position and attends over the whole
buffer under a mask, so every step has the same shapes (no recompiles, no graph breaks).
`to_tuple()` gives the Hugging Face-shaped per-layer `(key, value)` view of the filled part.
"""

from __future__ import annotations

import torch

from gpt2_core import GPT2Config
from gpt2_torch.outputs import KV


class StaticCache:
    """Shapes: keys, values (L, B, nh, max_length, hs); `length` slots are filled."""

    def __init__(self, config: GPT2Config, batch_size: int, max_length: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        if max_length > config.n_positions:
            raise ValueError(f"`max_length` must be <= n_positions={config.n_positions}. "
                             f"Received: max_length={max_length}.")
        shape = (config.n_layer, batch_size, config.n_head, max_length, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_length(self) -> int:
        return self.keys.shape[3]

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[i], self.values[i]  # views: writes land in the buffers

    def to_tuple(self) -> tuple[KV, ...]:
        """Per layer `(key, value)`, each (B, nh, length, hs)."""
        n = self.length
        return tuple((self.keys[i, :, :, :n], self.values[i, :, :, :n])
                     for i in range(self.keys.shape[0]))

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` (B,) (beam search), over the filled slots only."""
        n = self.length
        self.keys[:, :, :, :n] = self.keys[:, rows, :, :n]
        self.values[:, :, :, :n] = self.values[:, rows, :, :n]
