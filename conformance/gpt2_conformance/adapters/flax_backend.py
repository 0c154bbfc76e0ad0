"""Subject `flax`: `gpt2_flax` (Flax NNX on JAX), float32, matmul precision "highest"."""

from __future__ import annotations

from typing import Any

import jax

# Full float32 matmuls: XLA's default precision on GPU/TPU uses TF32/bf16 passes.
jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import gpt2_flax  # noqa: E402
from gpt2_conformance.adapters.base import (  # noqa: E402
    HEAD_CLASSES,
    Arrays,
    accepted,
    call_kwargs,
    generation_outputs,
    output_arrays,
)
from gpt2_flax import processors, weights  # noqa: E402


def _np(t) -> np.ndarray:
    return np.asarray(jax.device_get(t))


class FlaxAdapter:
    name = "flax"
    kinds = frozenset({"forward", "incremental", "chunked", "generate", "generation", "processor",
                       "grads"})

    def load(self, path: str, head: str, dtype: str = "float32") -> Any:
        # Parameters stored and computed in `dtype`, as the torch subject does.
        return getattr(gpt2_flax, HEAD_CLASSES[head]).from_pretrained(path, dtype=dtype,
                                                                      param_dtype=dtype)

    def forward(self, model, inputs: Arrays, outputs: tuple[str, ...], past: Any = None
                ) -> tuple[Arrays, Any]:
        kw = call_kwargs(inputs, outputs, model.head)
        if past is not None:
            kw["past_key_values"] = past
        out = model(**accepted(model.__call__, kw))
        return output_arrays(out, outputs, _np), getattr(out, "past_key_values", None)

    def grads(self, model, inputs: Arrays) -> Arrays:
        grads = nnx.grad(lambda m: m(**inputs).loss)(model)  # nnx.State of the Params
        holder = nnx.clone(model)
        nnx.update(holder, grads)  # the grads, held where the params were: one name mapping
        canonical = weights.to_canonical(holder, model.config, model.head)
        return {f"grad.{k}": v for k, v in canonical.items()}

    def generate(self, model, inputs: Arrays, max_new_tokens: int) -> np.ndarray:
        ids = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False)
        return _np(ids)

    def generation(self, model, inputs: Arrays, kwargs: dict[str, Any], *, tokenizer: Any,
                   streamer: Any, compiled: bool = False) -> Arrays:
        out = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             tokenizer=tokenizer, streamer=streamer, **kwargs)
        return generation_outputs(out, _np)

    def save(self, model, path: str) -> None:
        model.save_pretrained(path)

    def process(self, name: str, scores: np.ndarray, input_ids: np.ndarray, arg) -> np.ndarray:
        s, ids = jnp.asarray(scores), jnp.asarray(input_ids.astype(np.int32))
        S = input_ids.shape[1]
        fn = {
            "temperature": lambda: s / arg,  # generate divides inline; no processor function
            "top_k": lambda: processors.top_k(s, arg),
            "top_p": lambda: processors.top_p(s, arg),
            "repetition_penalty": lambda: processors.repetition_penalty(s, ids, 0, S, arg),
            "no_repeat_ngram": lambda: processors.no_repeat_ngram(s, ids, 0, S, arg),
        }[name]
        return _np(fn())


def make_adapter(name: str) -> FlaxAdapter:
    return FlaxAdapter()
