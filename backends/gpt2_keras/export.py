"""String-in, string-out TensorFlow SavedModel: tokenizer, model and decode loop in one graph.

    export_text_generator(model, "gen/", max_prompt_length=64, max_new_tokens=32)
    # in any process, without this package:
    gen = tf.saved_model.load("gen/")
    gen.serve(tf.constant(["Hello"]))  # {"text": completions, "ids": new ids (B, n)}

Shapes are fixed at export (prompt left-padded or left-truncated to `max_prompt_length`), so the
XLA-compiled loop compiles once per batch size.
"""

from __future__ import annotations

import os

import tensorflow as tf

from gpt2_core.sampling import SamplingConfig
from gpt2_keras import generation
from gpt2_keras.modeling import GPT2LMHeadModel
from gpt2_keras.tokenizer_layer import GPT2TokenizerLayer


class _TextGenerator(tf.Module):
    def __init__(self, model: GPT2LMHeadModel, tokenizer: GPT2TokenizerLayer,
                 max_prompt_length: int, max_new_tokens: int, spec: generation.DecodeSpec,
                 seed: int):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.P, self.N, self.spec, self.seed = max_prompt_length, max_new_tokens, spec, seed
        self.S = generation._round_up(self.P + self.N, generation.LENGTH_BUCKET)
        self._loop = tf.function(lambda *a: generation.decode_loop(model, spec, *a),
                                 jit_compile=generation.JIT_COMPILE)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts")])
    def serve(self, prompts):
        ids = tf.cast(self.tokenizer.tokenize(prompts), tf.int32)[:, -self.P:]  # keep the end
        lengths = ids.row_lengths()
        B = tf.shape(prompts)[0]
        # left padding: reverse, pad on the right, reverse back
        rev = tf.reverse(ids, axis=[1]).to_tensor(self.spec.pad, shape=[None, self.P])
        prompt = tf.reverse(rev, axis=[1])
        real = tf.range(self.P)[None, :] >= self.P - tf.cast(lengths, tf.int32)[:, None]
        mask = tf.concat([tf.cast(real, tf.int32), tf.zeros([B, self.S - self.P], tf.int32)], 1)
        tokens, cur = self._loop(prompt, mask, tf.constant(0, tf.int32),
                                 tf.constant(self.P + self.N, tf.int32), tf.constant(self.seed, tf.int32))
        new = tokens[:, self.P:cur]  # (B, n)
        is_eos = tf.reduce_any(new[:, :, None] == tf.constant(self.spec.eos or (-1,), tf.int32), -1)
        keep = tf.cast(tf.math.cumsum(tf.cast(is_eos, tf.int32), axis=1) == 0, tf.int32)
        return {"text": self.tokenizer.detokenize(new, attention_mask=keep), "ids": new}


def export_text_generator(model: GPT2LMHeadModel, path: str | os.PathLike[str], *,
                          tokenizer: GPT2TokenizerLayer | None = None, max_prompt_length: int = 64,
                          max_new_tokens: int = 32, do_sample: bool = False,
                          temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None, seed: int = 0) -> None:
    """Write a SavedModel whose `serve(prompts)` signature maps a (B,) string tensor to the
    generated continuations (`"text"`, (B,) strings) and their ids (`"ids"`, (B, n) int32).

    The decoding options are fixed at export; the vocabulary travels inside the SavedModel.
    """
    if not isinstance(model, GPT2LMHeadModel):
        raise TypeError(f"`model` must be a GPT2LMHeadModel. Received: {type(model).__name__}.")
    if max_prompt_length + max_new_tokens > model.config.n_positions:
        raise ValueError(f"max_prompt_length {max_prompt_length} + max_new_tokens {max_new_tokens} "
                         f"exceeds the model's `n_positions`={model.config.n_positions}.")
    eos = model.config.eos_token_ids
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else (eos[0] if eos else 0)
    cfg = SamplingConfig(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
    module = _TextGenerator(model, tokenizer or GPT2TokenizerLayer(), max_prompt_length,
                            max_new_tokens, generation.DecodeSpec(cfg, eos, pad), seed)
    if not hasattr(model, "_generate_traces"):
        model._generate_traces = 0
    tf.saved_model.save(module, os.fspath(path), signatures={"serving_default": module.serve})
