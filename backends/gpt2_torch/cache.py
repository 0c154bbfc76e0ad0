"""The decoding cache as an immutable record: `KVCache` (keys, values, length), passed in and
returned, as in `gpt2_flax.modeling.KVCache`.

The buffers are preallocated, one per layer and tensor kind, and written by index: eager
decoding writes slot `length` with slice assignment and attends over the filled prefix;
compiled decoding writes with `index_copy_` at a tensor position and attends over the whole
buffer under a mask, so every step has the same shapes (no recompiles, no graph breaks).
Functions over the cache return a new record and never assign fields of the old one. They write
the buffers in place, and a beam reorder gathers rows back into the same buffers, so the
buffers keep their addresses for the whole decode: CUDA graphs replay on fixed addresses. A
record that has been passed on is therefore stale (its buffers hold the newer contents), like a
donated buffer under `jax.jit`; use the one returned.

Separate tensors per layer, not views of one (L, ...) buffer: under `torch.compile` an in-place
write to a view of a graph input is replayed as a copy of the whole base, so every layer's
`index_copy_` would rewrite all L layers' caches each step (an extra L x cache bytes of traffic).
"""

from __future__ import annotations

import dataclasses

import torch

from gpt2_core import GPT2Config
from gpt2_torch.outputs import KV


@dataclasses.dataclass(frozen=True)
class KVCache:
    """Preallocated key/value buffers for every layer, and how many slots are filled.

    Attributes:
        keys: L x (B, nh, max_length, hs).
        values: L x (B, nh, max_length, hs).
        length: the number of filled slots (the next write position).
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    length: int = 0

    @classmethod
    def allocate(cls, config: GPT2Config, batch_size: int, max_length: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", *,
                 static_address: bool = False) -> KVCache:
        """An empty cache of `max_length` slots.

        `static_address=True` marks every buffer with `torch._dynamo.mark_static_address`, for
        compiled steps run as CUDA graphs: the graph then writes these buffers in place instead
        of copying them in and skipping the graph over the mutated input."""
        if max_length > config.n_positions:
            raise ValueError(f"`max_length` must be <= n_positions={config.n_positions}. "
                             f"Received: max_length={max_length}. Generate fewer tokens or use a "
                             f"shorter prompt.")
        shape = (batch_size, config.n_head, max_length, config.head_dim)
        keys = tuple(torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer))
        values = tuple(torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer))
        if static_address:
            for buf in (*keys, *values):
                # unguarded: no recompile on a new address (cudagraph trees re-record instead)
                torch._dynamo.mark_static_address(buf, guard=False)
        return cls(keys, values, 0)

    @property
    def max_length(self) -> int:
        return self.keys[0].shape[2]

    @property
    def buffers(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(keys, values): what `GPT2Model.run(static_cache=...)` and the compiled step take."""
        return self.keys, self.values

    def advanced(self, n: int) -> KVCache:
        """The record after `n` more slots were written into the buffers."""
        return KVCache(self.keys, self.values, self.length + n)

    def reset(self) -> KVCache:
        """The same buffers, zeroed and empty (a reused cache looks freshly allocated)."""
        for buf in (*self.keys, *self.values):
            buf.zero_()
        return KVCache(self.keys, self.values, 0)

    def to_tuple(self) -> tuple[KV, ...]:
        """Per layer `(key, value)`, each (B, nh, length, hs): views of the filled part."""
        n = self.length
        return tuple((k[:, :, :n], v[:, :, :n]) for k, v in zip(self.keys, self.values))

    def reorder(self, rows: torch.Tensor) -> KVCache:
        """Keep batch rows `rows` (B,) (beam search), over the filled slots only. The rows are
        gathered and written back into the same buffers, so their addresses do not change."""
        n = self.length
        for buf in (*self.keys, *self.values):
            buf[:, :, :n] = buf[rows, :, :n]
        return KVCache(self.keys, self.values, n)

