"""Input conversion and validation at the public boundary (messages mirror
`gpt2_core.reference.check_inputs`), and the default position ids."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from gpt2_core import GPT2Config
from gpt2_core.checks import check_label_range, check_past_shapes
from gpt2_torch.outputs import KV


class Inputs(NamedTuple):
    input_ids: torch.Tensor | None          # (B, T) long
    inputs_embeds: torch.Tensor | None      # (B, T, C)
    position_ids: torch.Tensor              # (B, T)
    token_type_ids: torch.Tensor | None     # (B, T)
    attention_mask: torch.Tensor | None     # (B, S)
    past_key_values: tuple[KV, ...] | None  # L x 2 x (B, nh, S_past, hs)
    past_len: int
    head_mask: torch.Tensor | None          # (L, 1, nh, 1, 1)


def to_tensor(x: Any, name: str, device: torch.device, integer: bool = True) -> torch.Tensor | None:
    """NumPy arrays, lists and tensors -> a tensor on `device`; integer inputs must be integers."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if integer:
        if x.dtype.is_floating_point or x.dtype.is_complex:
            raise TypeError(f"`{name}` must hold integers. Received dtype {x.dtype}.")
        x = x.long() if x.dtype != torch.bool else x.long()
    return x.to(device)


def to_mask(attention_mask: Any, device: torch.device) -> torch.Tensor | None:
    """Any numeric or boolean mask -> long 0/1 (float masks are common in the seed's users)."""
    mask = to_tensor(attention_mask, "attention_mask", device, integer=False)
    return None if mask is None else (mask != 0).long()


def default_position_ids(attention_mask: torch.Tensor | None, past_len: int, B: int, T: int,
                         device: torch.device) -> torch.Tensor:
    """(B, T): `cumsum(mask) - 1` with pads at 1 (gpt2_core's convention), or
    `past_len + arange(T)` without a mask."""
    if attention_mask is None:
        return torch.arange(past_len, past_len + T, device=device).expand(B, T)
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, 1)
    return positions[:, past_len:]


def check_ids(config: GPT2Config, input_ids: torch.Tensor, past_len: int) -> None:
    if input_ids.ndim != 2:
        raise ValueError(f"`input_ids` must have shape (batch, seq). Received shape "
                         f"{tuple(input_ids.shape)}.")
    if not is_concrete(input_ids) or not input_ids.numel():
        return  # values are unknown while tracing: the exported program reads ids unchecked
    bad = input_ids[(input_ids < 0) | (input_ids >= config.vocab_size)]
    if bad.numel():
        raise ValueError(f"`input_ids` must lie in [0, vocab_size={config.vocab_size}). "
                         f"Received out-of-range ids {sorted(set(bad.tolist()))[:5]}.")


def check_lengths(config: GPT2Config, B: int, T: int, past_len: int,
                  attention_mask: torch.Tensor | None, **same_shape: torch.Tensor | None) -> None:
    if past_len + T > config.n_positions:
        raise ValueError(
            f"The sequence is longer than the model's `n_positions`={config.n_positions}: "
            f"past length {past_len} + input length {T} = {past_len + T}. Truncate the input "
            "or drop the oldest cache entries."
        )
    if attention_mask is not None and tuple(attention_mask.shape) != (B, past_len + T):
        raise ValueError(
            f"`attention_mask` must have shape (batch, past + seq) = ({B}, {past_len + T}). "
            f"Received shape {tuple(attention_mask.shape)}."
        )
    for name, arr in same_shape.items():
        if arr is not None and tuple(arr.shape) != (B, T):
            raise ValueError(f"`{name}` must have the shape of `input_ids` ({B}, {T}). "
                             f"Received shape {tuple(arr.shape)}.")


def is_tracing() -> bool:
    """True while `torch.compile`, `torch.export` (and `torch.onnx.export(dynamo=True)`, which
    runs it) or `torch.jit.trace` trace the forward: tensor values are unknown, and code that
    reads them would break the graph or fail on a data-dependent branch."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def is_concrete(x: torch.Tensor) -> bool:
    """True when `x`'s values may be read: not while tracing (see `is_tracing`), nor for meta
    tensors."""
    return not is_tracing() and x.device.type != "meta"


def _static_dim(d: Any) -> int | None:
    """A dimension as an int, or None when it is symbolic (a dynamic axis while tracing)."""
    return None if isinstance(d, torch.SymInt) else int(d)


class _Shape(NamedTuple):
    """Stands in for a tensor in `check_past_shapes` while tracing: symbolic dimensions read
    as None (not compared), so the check neither fixes a dynamic axis nor fails on it."""

    shape: tuple[int | None, ...]


def _past_shapes(config: GPT2Config, past_key_values: Any, B: Any) -> int:
    """`check_past_shapes` on eager tensors; while tracing, on their static dimensions only,
    with the past length read from the first key's (possibly symbolic) third axis."""
    if not is_tracing():
        return check_past_shapes(config, past_key_values, B)
    pairs = past_key_values
    if isinstance(pairs, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(hasattr(t, "shape") for t in p)
            for p in pairs):
        pairs = [tuple(_Shape(tuple(_static_dim(d) for d in t.shape)) for t in p) for p in pairs]
    check_past_shapes(config, pairs, _static_dim(B))
    return past_key_values[0][0].shape[2]


def check_labels(labels: torch.Tensor | None, upper: int, name: str = "labels",
                 bound: str = "vocab_size", hint: str = "") -> None:
    """`gpt2_core.checks.check_label_range` on the host copy of eager labels (one small
    device-to-host copy of B*T ints; skipped while tracing, where values are unknown)."""
    if labels is not None and labels.numel() and is_concrete(labels):
        check_label_range(labels.detach().cpu().numpy(), upper, name, bound, hint)


def prepare(config: GPT2Config, device: torch.device, input_ids, inputs_embeds, past_key_values,
            attention_mask, token_type_ids, position_ids, head_mask) -> Inputs:
    """Convert, validate and complete the forward arguments. Raises `ValueError`/`TypeError`."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`. Received "
                         f"{'both' if input_ids is not None else 'neither'}.")
    input_ids = to_tensor(input_ids, "input_ids", device)
    if inputs_embeds is not None:
        inputs_embeds = to_tensor(inputs_embeds, "inputs_embeds", device, integer=False)
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != config.n_embd:
            raise ValueError(f"`inputs_embeds` must have shape (batch, seq, n_embd={config.n_embd})."
                             f" Received shape {tuple(inputs_embeds.shape)}.")
    if input_ids is not None:
        check_ids(config, input_ids, 0)
        B, T = input_ids.shape
    else:
        B, T = inputs_embeds.shape[:2]
    past, past_len = None, 0
    if past_key_values:
        # shapes first (gpt2_core's rule): a value shorter than its key would give wrong logits
        past_len = _past_shapes(config, past_key_values, B)
        past = tuple((to_tensor(k, "past_key_values", device, False),
                      to_tensor(v, "past_key_values", device, False)) for k, v in past_key_values)
    attention_mask = to_mask(attention_mask, device)
    position_ids = to_tensor(position_ids, "position_ids", device)
    token_type_ids = to_tensor(token_type_ids, "token_type_ids", device)
    check_lengths(config, B, T, past_len, attention_mask, position_ids=position_ids,
                  token_type_ids=token_type_ids)
    _check_range(position_ids, "position_ids", "n_positions", config.n_positions)
    _check_range(token_type_ids, "token_type_ids", "vocab_size", config.vocab_size)
    if position_ids is None:
        position_ids = default_position_ids(attention_mask, past_len, B, T, device)
    return Inputs(input_ids, inputs_embeds, position_ids, token_type_ids, attention_mask, past,
                  past_len, _head_mask(config, head_mask, device))


def _check_range(x: torch.Tensor | None, name: str, bound_name: str, bound: int) -> None:
    if x is None or not is_concrete(x) or not x.numel():
        return
    if int(x.min()) < 0 or int(x.max()) >= bound:
        raise ValueError(f"`{name}` must lie in [0, {bound_name}={bound}). "
                         f"Received range [{int(x.min())}, {int(x.max())}].")


def _head_mask(config: GPT2Config, head_mask, device: torch.device) -> torch.Tensor | None:
    if head_mask is None:
        return None
    hm = to_tensor(head_mask, "head_mask", device, integer=False).float()
    L, nh = config.n_layer, config.n_head
    if hm.shape == (nh,):
        hm = hm.expand(L, nh)
    if tuple(hm.shape) != (L, nh):
        raise ValueError(f"`head_mask` must have shape (n_head,) = ({nh},) or (n_layer, n_head) = "
                         f"({L}, {nh}). Received shape {tuple(hm.shape)}.")
    return hm[:, None, :, None, None]  # (L, 1, nh, 1, 1): broadcasts over (B, nh, T, S)
