"""Checkpoint IO through `gpt2_core`: one copy of the weights, cast once.

Module keys map to canonical names by one rule: heads hold the transformer as `transformer`
(as Hugging Face), so a key minus its `transformer.` prefix IS the canonical name. The
projections are `nn.Linear`s holding `[out, in]`; their state dict (`gpt2_torch.linear.Linear`)
holds the checkpoint's `[in, out]`, the transpose of the layout table's `in_out` rows, made once
at save and load.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import gpt2_core
from gpt2_core import GPT2Config, layout
from gpt2_core.generation_config import GenerationConfig, checkpoint_files_of
from gpt2_core.safetensors_io import release_pages
from gpt2_torch.hf_protocol import HFModelProtocol, as_config
from gpt2_torch.linear import Linear

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TRANSFORMER_PREFIX = "transformer."


def canonical_name(key: str) -> str:
    """State-dict key of any model class -> canonical checkpoint name (the one mapping rule)."""
    return key[len(TRANSFORMER_PREFIX):] if key.startswith(TRANSFORMER_PREFIX) else key


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None and "auto" (transformers' spelling) keep the checkpoint's own dtype."""
    if dtype == "auto":
        return None
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype not in (None, *DTYPES.values()):
            raise ValueError(f"`torch_dtype` must be float32, float16 or bfloat16. Received: "
                             f"torch_dtype={dtype}.")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"`torch_dtype` must be 'auto' or one of {sorted(DTYPES)}. Received: "
                         f"torch_dtype={dtype!r}.")
    return DTYPES[dtype]


class GPT2PreTrainedModel(HFModelProtocol, nn.Module):
    """Config holder, GPT-2 initialisation, `from_pretrained` and `save_pretrained`, and the
    helpers transformers' tools call (`hf_protocol`).

    `config` is a `gpt2_core.GPT2Config`, or anything with `to_dict()` (a
    `transformers.GPT2Config`), converted."""

    head = "base"
    architecture = "GPT2Model"

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        # the model's own copy: runtime keys assigned on `model.config` (Trainer sets
        # `use_cache`) stay with this model, not with every model built from `config`
        config = as_config(config).replace()
        self.config = config
        self.generation_config = GenerationConfig.from_model_config(config)  # `generate`'s defaults

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _return_dict(self, return_dict: bool | None) -> bool:
        return self.config.return_dict if return_dict is None else return_dict

    def canonical_state(self) -> dict[str, torch.Tensor]:
        return {canonical_name(k): v for k, v in self.state_dict().items()}

    def canonical_grads(self) -> dict[str, torch.Tensor]:
        """Each parameter's gradient under its canonical name, in the checkpoint's layout (the
        projections' `[out, in]` gradients transposed to `[in, out]`, as `state_dict()` does)."""
        grads = {}
        for mname, module in self.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                if p.grad is not None:
                    g = p.grad.t() if isinstance(module, Linear) and pname == "weight" else p.grad
                    grads[canonical_name(f"{mname}.{pname}" if mname else pname)] = g
        return grads

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
                    # drawn in the checkpoint's shape: a seed gives the same weights in any layout
                    w = torch.randn(spec.shape, generator=gen) * std
                    p.copy_(w.t() if spec.layout == "in_out" else w)

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike[str], *,
                        torch_dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None,
                        attn_implementation: str = "sdpa", allow_pickle: bool = False,
                        dtype: torch.dtype | str | None = None):
        """Load a GPT-2 directory (hub, `save_pretrained` or sharded layout) or a hub name from
        the local Hugging Face cache (nothing is downloaded).

        Args:
            torch_dtype: float32, float16 or bfloat16; "auto" the one `config.json` names
                (`dtype`/`torch_dtype`, as transformers), else the stored one; None the stored
                one (bfloat16 files widened to float32 for NumPy keep float32).
            dtype: the same, under transformers 5's name (give one of the two).
            device: where the weights go (each tensor is copied there once).
            attn_implementation: "eager", "sdpa" or "flash_attention_2".
            allow_pickle: also read `pytorch_model.bin` (plain tensors only).

        Head tensors missing from the checkpoint (e.g. a classifier on an LM checkpoint) get
        GPT-2's init, with a logged warning.
        """
        if torch_dtype is not None and dtype is not None and \
                resolve_dtype(torch_dtype) != resolve_dtype(dtype):
            raise ValueError(f"`dtype` and `torch_dtype` name the same setting; give one. "
                             f"Received: dtype={dtype!r}, torch_dtype={torch_dtype!r}.")
        requested = dtype if dtype is not None else torch_dtype
        dtype = resolve_dtype(requested)
        config, params = gpt2_core.load_pretrained(path_or_name, allow_pickle=allow_pickle,
                                                   check_finite=False)
        if requested == "auto":  # as transformers: the dtype config.json names, else the stored one
            dtype = DTYPES.get(config.extra.get("dtype") or config.extra.get("torch_dtype"))
        with torch.device("meta"):
            model = cls(config, attn_implementation="sdpa")
        state, missing = _materialise(model, params, dtype, torch.device(device or "cpu"))
        del params
        bad = [k for k, v in state.items()  # (missing tensors are still uninitialised memory)
               if canonical_name(k) not in missing and not _all_finite(v)]
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
                        layout_name: str = "save_pretrained", tokenizer: Any = None) -> None:
        """Write `config.json` and safetensors weights that `transformers` loads unchanged.

        Args:
            tokenizer: saved into the same folder (anything with `save_pretrained(folder)`),
                so `pipeline("text-generation", model=path)` and `AutoTokenizer` find it.
                Without one, a folder that holds no tokenizer yet gets GPT-2's own tokenizer
                files when `vocab_size` is GPT-2's 50257, and a warning otherwise.
        """
        params = {}
        for name, t in self.canonical_state().items():
            t = t.detach().cpu()
            if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: widen exactly, save as bf16
                t = t.float()
                dtype = dtype or "bfloat16"
            params[name] = t.numpy()
        extra = {**checkpoint_files_of(self), **_tokenizer_files(path, tokenizer, self.config)}
        gpt2_core.save_pretrained(path, self.config, params, dtype=dtype,
                                  max_shard_size=max_shard_size, layout_name=layout_name,
                                  architectures=(self.architecture,), extra_files=extra)


TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
GPT2_VOCAB_SIZE = 50257


def _tokenizer_files(path, tokenizer: Any, config: GPT2Config) -> dict[str, bytes]:
    """The tokenizer's files, written in the weights' transaction (see `save_pretrained`)."""
    if tokenizer is None:
        if any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
            return {}  # a tokenizer saved there before: the folder writer keeps it
        if config.vocab_size != GPT2_VOCAB_SIZE:
            logger.warning(
                "save_pretrained wrote no tokenizer: vocab_size=%d is not GPT-2's %d, so GPT-2's "
                "tokenizer does not fit. Pass `tokenizer=` so that `pipeline(model=folder)` and "
                "`AutoTokenizer.from_pretrained(folder)` find one.",
                config.vocab_size, GPT2_VOCAB_SIZE)
            return {}
        from gpt2_tokenizer import GPT2Tokenizer  # NumPy-only, imported when needed

        tokenizer = GPT2Tokenizer.from_pretrained()
    save = getattr(tokenizer, "save_pretrained", None)
    if not callable(save):
        raise TypeError("`tokenizer` must have a `save_pretrained(folder)` method (a "
                        "gpt2_tokenizer.GPT2Tokenizer or a transformers tokenizer). Received: "
                        f"{type(tokenizer).__name__}.")
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)
        return {f.name: f.read_bytes() for f in Path(tmp).iterdir() if f.is_file()}


def _materialise(model: nn.Module, params: dict[str, np.ndarray], dtype: torch.dtype | None,
                 device: torch.device) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Copy each checkpoint array once into a tensor of the requested dtype, then drop the
    file pages it read, so peak memory is about one copy of the weights."""
    state, missing = {}, []
    specs = {s.name: s for s in layout.weight_layout(model.config, model.head)}
    for key, meta in model.state_dict().items():
        name = canonical_name(key)
        arr = params.get(name)
        target = dtype or (DTYPES.get(str(arr.dtype), torch.float32) if arr is not None else torch.float32)
        if name in specs and specs[name].layout == "in_out":
            # the [in, out] view of an [out, in] tensor: `Linear` loads its transpose, which
            # is that contiguous tensor itself, so the weights are copied once
            out = torch.empty(meta.shape[::-1], dtype=target, device=device).t()
        else:
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
    if t.dim() == 2 and not t.is_contiguous():
        t = t.t()  # an [in, out] view of a contiguous [out, in] weight: no copy
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
