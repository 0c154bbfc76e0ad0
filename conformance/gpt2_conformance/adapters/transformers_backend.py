"""Subject `transformers`: Hugging Face's own `GPT2LMHeadModel.generate`, the oracle the reference
generation is checked against (greedy, beams, every processor under greedy decoding, lengths,
eos and pad fill, scores). Runs in its own process with torch; float32 on CPU, eager attention.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import transformers

from gpt2_conformance.adapters.base import Arrays, generation_outputs


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


class TransformersAdapter:
    name = "transformers"
    kinds = frozenset({"generation"})

    def load(self, path: str, head: str, dtype: str = "float32") -> Any:
        if head != "lm":
            raise ValueError(f"The transformers subject runs generation only. Received head={head!r}.")
        return transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()

    def generation(self, model, inputs: Arrays, kwargs: dict[str, Any], *, tokenizer: Any,
                   streamer: Any, compiled: bool = False) -> Arrays:
        if tokenizer is not None or streamer is not None:
            raise ValueError("The transformers subject runs cases without tokenizer or streamer.")
        with torch.no_grad():
            out = model.generate(torch.as_tensor(inputs["input_ids"]),
                                 attention_mask=torch.as_tensor(inputs["attention_mask"]), **kwargs)
        return generation_outputs(out, _np)


def make_adapter(name: str) -> TransformersAdapter:
    return TransformersAdapter()
