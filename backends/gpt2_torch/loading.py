"""Checkpoint IO through `gpt2_core`: one copy of the weights, cast once.

Module keys map to canonical names by one rule: heads hold the transformer as `transformer`
(as Hugging Face), so a key minus its `transformer.` prefix IS the canonical name, and Conv1D
matrices are stored `[in, out]` as in the checkpoint: no transposes.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch
from torch import nn

import gpt2_core
from gpt2_core import GPT2Config, layout
from gpt2_core.generation_config import GenerationConfig, checkpoint_files_of
from gpt2_core.safetensors_io import release_pages

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TRANSFORMER_PREFIX = "transformer."


def canonical_name(key: str) -> str:
    """State-dict key of any model class -> canonical checkpoint name (the one mapping rule)."""
    return key[len(TRANSFORMER_PREFIX):] if key.startswith(TRANSFORMER_PREFIX) else key


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype not in (None, *DTYPES.values()):
            raise ValueError(f"`torch_dtype` must be float32, float16 or bfloat16. Received: "
                             f"torch_dtype={dtype}.")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"`torch_dtype` must be one of {sorted(DTYPES)}. Received: "
                         f"torch_dtype={dtype!r}.")
    return DTYPES[dtype]


class GPT2PreTrainedModel(nn.Module):
    """Config holder, GPT-2 initialisation, `from_pretrained` and `save_pretrained`."""

    head = "base"
    architecture = "GPT2Model"

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        if not isinstance(config, GPT2Config):
            raise TypeError(f"`config` must be a gpt2_core.GPT2Config. Received: "
                            f"{type(config).__name__}.")
        self.config = config
        self.generation_config = GenerationConfig.from_model_config(config)  # `generate`'s defaults

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def canonical_state(self) -> dict[str, torch.Tensor]:
        return {canonical_name(k): v for k, v in self.state_dict().items()}

    def init_weights(self, seed: int | None = None) -> None:
        """GPT-2's init (gpt2_core.init_params): N(0, initializer_range), residual projections
        scaled by 1/sqrt(2 n_layer), biases 0, LayerNorm gains 1."""
        specs = {s.name: s for s in layout.weight_layout(self.config, self.head)}
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for key, p in self.named_parameters():
                spec = specs[canonical_name(key)]
                if spec.init == "zeros":
                    p.zero_()
                elif spec.init == "ones":
                    p.fill_(1.0)
                else:
                    std = (self.config.residual_init_std if spec.init == "residual"
                           else self.config.initializer_range)
                    p.copy_(torch.randn(p.shape, generator=gen) * std)

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike[str], *,
                        torch_dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None,
                        attn_implementation: str = "sdpa", allow_pickle: bool = False):
        """Load a GPT-2 directory (hub, `save_pretrained` or sharded layout) or a hub name from
        the local Hugging Face cache (nothing is downloaded).

        Args:
            torch_dtype: float32, float16 or bfloat16; None keeps the stored float dtype.
            device: where the weights go (each tensor is copied there once).
            attn_implementation: "eager", "sdpa" or "flash_attention_2".
            allow_pickle: also read `pytorch_model.bin` (plain tensors only).

        Head tensors missing from the checkpoint (e.g. a classifier on an LM checkpoint) get
        GPT-2's init, with a logged warning.
        """
        dtype = resolve_dtype(torch_dtype)
        config, params = gpt2_core.load_pretrained(path_or_name, allow_pickle=allow_pickle,
                                                   check_finite=False)
        with torch.device("meta"):
            model = cls(config, attn_implementation="sdpa")
        state, missing = _materialise(model, params, dtype, torch.device(device or "cpu"))
        del params
        bad = [k for k, v in state.items() if not _all_finite(v)]
        if bad:
            problems = [f"`{canonical_name(k)}` contains NaN or inf values" for k in bad]
            raise gpt2_core.CheckpointError(os.fspath(path_or_name), problems)
        model.load_state_dict(state, strict=True, assign=True)
        if missing:
            logger.warning("Tensors %s are not in the checkpoint; they get GPT-2's init.", missing)
            _init_missing(model, missing)
        model.set_attn_implementation(attn_implementation)
        model.generation_config = GenerationConfig.for_checkpoint(
            gpt2_core.checkpoint.resolve_model_path(path_or_name), config)
        return model.eval()

    def save_pretrained(self, path: str | os.PathLike[str], *, dtype: str | None = None,
                        max_shard_size: int | None = None,
                        layout_name: str = "save_pretrained") -> None:
        """Write `config.json` and safetensors weights that `transformers` loads unchanged."""
        params = {}
        for name, t in self.canonical_state().items():
            t = t.detach().cpu()
            if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: widen exactly, save as bf16
                t = t.float()
                dtype = dtype or "bfloat16"
            params[name] = t.numpy()
        gpt2_core.save_pretrained(path, self.config, params, dtype=dtype,
                                  max_shard_size=max_shard_size, layout_name=layout_name,
                                  architectures=(self.architecture,),
                                  extra_files=checkpoint_files_of(self))


def _materialise(model: nn.Module, params: dict[str, np.ndarray], dtype: torch.dtype | None,
                 device: torch.device) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Copy each checkpoint array once into a tensor of the requested dtype, then drop the
    file pages it read, so peak memory is about one copy of the weights."""
    state, missing = {}, []
    for key, meta in model.state_dict().items():
        name = canonical_name(key)
        arr = params.get(name)
        target = dtype or (DTYPES.get(str(arr.dtype), torch.float32) if arr is not None else torch.float32)
        out = torch.empty(meta.shape, dtype=target, device=device)
        if arr is None:
            missing.append(name)
        else:
            with warnings.catch_warnings():  # read-only memmap: we only read from it
                warnings.simplefilter("ignore", UserWarning)
                out.copy_(torch.from_numpy(arr))
            release_pages(arr)
        state[key] = out
    return state, missing


def _all_finite(t: torch.Tensor, chunk: int = 1 << 20) -> bool:
    """Whether every value is finite, in chunks: `torch.isfinite` on a whole tensor makes
    float temporaries as large as the tensor (150 MB for GPT-2's `wte`), a peak-RSS spike."""
    if not t.is_floating_point():
        return True
    return all(bool(torch.isfinite(part).all()) for part in t.reshape(-1).split(chunk))


def _init_missing(model: GPT2PreTrainedModel, missing: list[str]) -> None:
    specs = {s.name: s for s in layout.weight_layout(model.config, model.head)}
    with torch.no_grad():
        for key, p in model.named_parameters():
            name = canonical_name(key)
            if name in missing:
                if specs[name].init == "zeros":
                    p.zero_()
                else:
                    p.normal_(0.0, model.config.initializer_range)
