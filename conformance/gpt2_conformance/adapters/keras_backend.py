"""Subject `keras`: `gpt2_keras` on the TensorFlow backend (the parent sets KERAS_BACKEND),
float32, TF32 off; also the in-graph tokenizer layer."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gpt2_keras  # noqa: E402
from gpt2_conformance.adapters.base import (  # noqa: E402
    HEAD_CLASSES,
    Arrays,
    accepted,
    call_kwargs,
    generation_outputs,
    output_arrays,
)
from gpt2_keras import generation, processors  # noqa: E402

# Full float32 matmuls: TF32 would move logits by ~1e-3 on Ampere+ GPUs.
tf.config.experimental.enable_tensor_float_32_execution(False)


def _np(t) -> np.ndarray:
    return keras.ops.convert_to_numpy(t)


class KerasAdapter:
    name = "keras"
    kinds = frozenset({"forward", "incremental", "chunked", "generate", "generation", "processor",
                       "grads",
                       "tokenizer"})

    def load(self, path: str, head: str, dtype: str = "float32") -> Any:
        # Reduced precision the Keras way: a mixed policy (float32 variables, `dtype` compute).
        policy = dtype if dtype == "float32" else f"mixed_{dtype}"
        model = getattr(gpt2_keras, HEAD_CLASSES[head]).from_pretrained(path, dtype=policy)
        model.conformance_head = head
        return model

    def forward(self, model, inputs: Arrays, outputs: tuple[str, ...], past: Any = None
                ) -> tuple[Arrays, Any]:
        kw = call_kwargs(inputs, outputs, model.conformance_head)
        if past is not None:
            kw["past_key_values"] = past
        out = model(**accepted(model.__call__, kw))
        return output_arrays(out, outputs, _np), getattr(out, "past_key_values", None)

    def grads(self, model, inputs: Arrays) -> Arrays:
        table = model.weight_table()  # (canonical name, variable, transpose)
        with tf.GradientTape() as tape:
            loss = model(**inputs).loss
        grads = tape.gradient(loss, [var.value for _, var, _ in table])
        return {f"grad.{name}": (_np(g).T if transpose else _np(g))
                for (name, _, transpose), g in zip(table, grads)}

    def generate(self, model, inputs: Arrays, max_new_tokens: int) -> np.ndarray:
        ids = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False)
        return np.asarray(_np(ids) if not isinstance(ids, np.ndarray) else ids)

    def generation(self, model, inputs: Arrays, kwargs: dict[str, Any], *, tokenizer: Any,
                   streamer: Any, compiled: bool = False) -> Arrays:
        # XLA for the cases marked `compiled`; the others run the same loop as a plain graph
        # function (quicker to build: one XLA compile per processor set would dominate the run).
        generation.JIT_COMPILE = compiled
        try:
            out = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                 tokenizer=tokenizer, streamer=streamer, **kwargs)
        finally:
            generation.JIT_COMPILE = True
        return generation_outputs(out, _np)

    def save(self, model, path: str) -> None:
        model.save_pretrained(path)

    def process(self, name: str, scores: np.ndarray, input_ids: np.ndarray, arg) -> np.ndarray:
        s, ids = tf.constant(scores), tf.constant(input_ids.astype(np.int32))
        S = input_ids.shape[1]
        if name == "temperature":  # generate divides inline; there is no processor function
            return _np(s / arg)
        if name == "top_k":
            return _np(processors.top_k(s, arg))
        if name == "top_p":
            return _np(processors.top_p(s, arg))
        if name == "repetition_penalty":
            seen = processors.mark_seen(tf.zeros(scores.shape, tf.bool), ids,
                                        tf.ones(input_ids.shape, tf.bool))
            return _np(processors.repetition_penalty(s, seen, arg))
        if name == "no_repeat_ngram":
            return _np(processors.no_repeat_ngram(s, ids, 0, S, arg))
        raise ValueError(f"Unknown processor {name!r}.")

    def tokenize(self, texts: tuple[str, ...]) -> list[list[int]]:
        layer_cls = getattr(gpt2_keras, "GPT2TokenizerLayer", None)
        if layer_cls is None:
            from gpt2_keras.tokenizer_layer import GPT2TokenizerLayer as layer_cls
        return layer_cls()(tf.constant(list(texts))).to_list()


def make_adapter(name: str) -> KerasAdapter:
    return KerasAdapter()
