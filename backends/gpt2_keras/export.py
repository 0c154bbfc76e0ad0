"""String-in, string-out TensorFlow SavedModel: tokenizer, model and decode loop in one graph.

    export_text_generator(model, "gen/", max_prompt_length=64, max_new_tokens=32)
    # in any process, without this package:
    tf.saved_model.load("gen/").serve(tf.constant(["Hello"]))  # {"text": completions, "ids": (B, n)}

Shapes are fixed at export (prompt left-padded or left-truncated to `max_prompt_length`), so the
XLA-compiled loop compiles once per batch size.
"""

from __future__ import annotations

import os

import tensorflow as tf

from gpt2_core.generation_config import GenerationPlan, merge, resolve
from gpt2_keras import beam_search, generation, threefry
from gpt2_keras.modeling import GPT2LMHeadModel
from gpt2_keras.tokenizer_layer import GPT2TokenizerLayer


class _TextGenerator(tf.Module):
    def __init__(self, model: GPT2LMHeadModel, tokenizer: GPT2TokenizerLayer,
                 max_prompt_length: int, max_new_tokens: int, plan: GenerationPlan, seed: int):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.P, self.N, self.plan = max_prompt_length, max_new_tokens, generation.trace_plan(plan)
        self.seed = seed
        self.S = generation._round_up(self.P + self.N, generation.LENGTH_BUCKET)
        loop = beam_search.beam_loop if plan.num_beams > 1 else generation.decode_loop
        self._loop = tf.function(lambda *a: loop(model, self.plan, *a), jit_compile=generation.JIT_COMPILE)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts")])
    def __call__(self, prompts):
        ids = tf.cast(self.tokenizer.tokenize(prompts), tf.int32)[:, -self.P:]  # keep the end
        lengths = ids.row_lengths()
        B = tf.shape(prompts)[0]
        # left padding: reverse, pad on the right, reverse back
        rev = tf.reverse(ids, axis=[1]).to_tensor(max(self.plan.pad_token_id, 0), shape=[None, self.P])
        prompt = tf.reverse(rev, axis=[1])
        real = tf.range(self.P)[None, :] >= self.P - tf.cast(lengths, tf.int32)[:, None]
        mask = tf.concat([tf.cast(real, tf.int32), tf.zeros([B, self.S - self.P], tf.int32)], 1)
        new, length = self._generate(prompt, mask)  # (B, n), (B,)
        is_eos = tf.reduce_any(new[:, :, None] == tf.constant(self.plan.eos_token_ids or (-1,), tf.int32), -1)
        keep = tf.logical_and(tf.math.cumsum(tf.cast(is_eos, tf.int32), axis=1) == 0,
                              tf.range(tf.shape(new)[1])[None, :] < length[:, None])
        return {"text": self.tokenizer.detokenize(new, attention_mask=tf.cast(keep, tf.int32)),
                "ids": new}

    def _generate(self, prompt, mask):
        """(B, P) prompt, (B, S) mask -> new ids (B, n) and each row's generated length (B,)."""
        args = generation.LoopArgs(tf.constant(0, tf.int32), threefry.key_tensor(self.seed), None, None)
        if self.plan.num_beams > 1:
            nb = self.plan.num_beams
            rows = tf.shape(prompt)[0] * nb
            st = self._loop(tf.repeat(prompt, nb, axis=0), tf.repeat(mask, nb, axis=0),
                            tf.constant(self.N, tf.int32), args, tf.zeros([rows, 0], tf.int32))
            best = st.beams.lengths[:, 0]  # the best hypothesis comes first
            return st.beams.sequences[:, 0, self.P:self.P + tf.reduce_max(best)], best
        st = self._loop(prompt, mask, tf.constant(self.P + self.N, tf.int32), args,
                        tf.zeros([tf.shape(prompt)[0], 0], tf.int32))
        return st.tokens[:, self.P:st.cur], tf.fill([tf.shape(prompt)[0]], st.cur - self.P)


def export_text_generator(model: GPT2LMHeadModel, path: str | os.PathLike[str], *,
                          tokenizer: GPT2TokenizerLayer | None = None, max_prompt_length: int = 64,
                          max_new_tokens: int = 32, do_sample: bool = False,
                          temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None, seed: int = 0, num_beams: int = 1,
                          length_penalty: float = 1.0, early_stopping: bool | str = False) -> None:
    """Write a SavedModel whose `serve(prompts)` signature maps a (B,) string tensor to the
    generated continuations (`"text"`, (B,) strings) and their ids (`"ids"`, (B, n) int32).

    The decoding options are fixed at export; the vocabulary travels inside the SavedModel.
    `num_beams` > 1 exports the compiled beam search (`model.generate`'s, best hypothesis).
    """
    if not isinstance(model, GPT2LMHeadModel):
        raise TypeError(f"`model` must be a GPT2LMHeadModel. Received: {type(model).__name__}.")
    if max_prompt_length + max_new_tokens > model.config.n_positions:
        raise ValueError(f"max_prompt_length {max_prompt_length} + max_new_tokens {max_new_tokens} "
                         f"exceeds the model's `n_positions`={model.config.n_positions}.")
    if num_beams > 1 and do_sample:
        raise ValueError("`num_beams` must be a positive integer, and 1 when `do_sample=True` (beam "
                         f"sampling is not offered). Received: num_beams={num_beams!r}, "
                         f"do_sample={do_sample}.")
    gen = merge(model.generation_config, None, dict(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
        top_k=top_k or 0, top_p=top_p, num_beams=num_beams, length_penalty=length_penalty,
        early_stopping=early_stopping))
    plan = resolve(model.config, gen, 1, max_prompt_length)
    generator = _TextGenerator(model, tokenizer or GPT2TokenizerLayer(), max_prompt_length,
                               max_new_tokens, plan, seed)
    if not hasattr(model, "_generate_traces"):
        model._generate_traces = 0
    # `serve` is a callable object holding the model and the tokenizer, not a function of the
    # root: TensorFlow's restored functions reference their variables weakly, so in
    # `tf.saved_model.load(path).serve(prompts)` the root, freed before the call, would take the
    # variables with it; the object the call goes through keeps them alive.
    root = tf.Module()
    root.serve = generator
    tf.saved_model.save(root, os.fspath(path), signatures={"serving_default": generator.__call__})
