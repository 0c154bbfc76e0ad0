"""Subject `torch`: `gpt2_torch`, float32 on CPU (or the first GPU), TF32 off."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import gpt2_torch
from gpt2_conformance.adapters.base import (
    HEAD_CLASSES,
    Arrays,
    call_kwargs,
    generation_outputs,
    output_arrays,
)
from gpt2_torch import processors

# Full float32 matmuls: TF32 would move logits by ~1e-3 on Ampere+ GPUs.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()  # exact; NumPy has no bfloat16
    return t.numpy()


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), device=DEVICE)


class TorchAdapter:
    name = "torch"
    kinds = frozenset({"forward", "incremental", "chunked", "generate", "generation", "processor",
                       "grads"})

    def load(self, path: str, head: str, dtype: str = "float32") -> Any:
        # Parameters and compute in `dtype` (CPU runs bfloat16 and float16 matmuls natively).
        model = getattr(gpt2_torch, HEAD_CLASSES[head]).from_pretrained(path, torch_dtype=dtype)
        model.conformance_head = head
        return model.to(DEVICE).eval()  # eval: dropout off (grads are taken in eval mode too)

    def forward(self, model, inputs: Arrays, outputs: tuple[str, ...], past: Any = None
                ) -> tuple[Arrays, Any]:
        kw = {k: (_t(v) if isinstance(v, np.ndarray) else v)
              for k, v in call_kwargs(inputs, outputs, model.conformance_head).items()}
        if past is not None:
            kw["past_key_values"] = past
        with torch.no_grad():
            out = model(**kw)
        return output_arrays(out, outputs, _np), getattr(out, "past_key_values", None)

    def grads(self, model, inputs: Arrays) -> Arrays:
        model.zero_grad(set_to_none=True)
        out = model(**{k: _t(v) for k, v in inputs.items()})
        out.loss.backward()
        return {f"grad.{n}": _np(g) for n, g in model.canonical_grads().items()}

    def generate(self, model, inputs: Arrays, max_new_tokens: int) -> np.ndarray:
        with torch.no_grad():
            ids = model.generate(_t(inputs["input_ids"]), attention_mask=_t(inputs["attention_mask"]),
                                 max_new_tokens=max_new_tokens, do_sample=False)
        return _np(ids)

    def generation(self, model, inputs: Arrays, kwargs: dict[str, Any], *, tokenizer: Any,
                   streamer: Any, compiled: bool = False) -> Arrays:
        with torch.no_grad():
            out = model.generate(_t(inputs["input_ids"]), attention_mask=_t(inputs["attention_mask"]),
                                 tokenizer=tokenizer, streamer=streamer, compile=compiled, **kwargs)
        return generation_outputs(out, _np)

    def save(self, model, path: str) -> None:
        model.save_pretrained(path)

    def process(self, name: str, scores: np.ndarray, input_ids: np.ndarray, arg) -> np.ndarray:
        s, ids = _t(scores), _t(input_ids)
        fn = {
            "temperature": lambda: processors.temperature(s, arg),
            "top_k": lambda: processors.top_k(s, arg),
            "top_p": lambda: processors.top_p(s, arg),
            "repetition_penalty": lambda: processors.repetition_penalty(s, ids, arg),
            "no_repeat_ngram": lambda: processors.no_repeat_ngram(s, ids, arg),
        }[name]
        return _np(fn())


def make_adapter(name: str) -> TorchAdapter:
    return TorchAdapter()
