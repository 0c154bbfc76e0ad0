"""A preallocated key/value cache: one buffer per layer and tensor kind, written in place.

Eager decoding writes slot `pos` with slice assignment and attends over the filled prefix;
compiled decoding writes with `index_copy_` at a tensor position and attends over the whole
buffer under a mask, so every step has the same shapes (no recompiles, no graph breaks).
`to_tuple()` gives the Hugging Face-shaped per-layer `(key, value)` view of the filled part.

Separate tensors per layer, not views of one (L, ...) buffer: under `torch.compile` an in-place
write to a view of a graph input is replayed as a copy of the whole base, so every layer's
`index_copy_` would rewrite all L layers' caches each step (an extra L x cache bytes of traffic).
"""

from __future__ import annotations

import torch

from gpt2_core import GPT2Config
from gpt2_torch.outputs import KV


class StaticCache:
    """Shapes: keys[i], values[i] (B, nh, max_length, hs) for each of the L layers; `length`
    slots are filled."""

    def __init__(self, config: GPT2Config, batch_size: int, max_length: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        if max_length > config.n_positions:
            raise ValueError(f"`max_length` must be <= n_positions={config.n_positions}. "
                             f"Received: max_length={max_length}.")
        shape = (batch_size, config.n_head, max_length, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.length = 0

    @property
    def max_length(self) -> int:
        return self.keys[0].shape[2]

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[i], self.values[i]

    def to_tuple(self) -> tuple[KV, ...]:
        """Per layer `(key, value)`, each (B, nh, length, hs)."""
        n = self.length
        return tuple((k[:, :, :n], v[:, :, :n]) for k, v in zip(self.keys, self.values))

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` (B,) (beam search), over the filled slots only."""
        n = self.length
        for buf in (*self.keys, *self.values):
            buf[:, :, :n] = buf[rows, :, :n]
