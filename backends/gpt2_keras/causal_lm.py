"""Fine-tuning on raw text with `model.fit`: a preprocessor that packs strings into fixed windows
and a `GPT2CausalLM` model whose `fit`/`evaluate` take a `tf.data` dataset of strings.

The preprocessor runs in `tf.data` (TensorFlow ops, through `GPT2TokenizerLayer`); the model
itself is backend-agnostic Keras, so the same script trains on the TensorFlow, JAX or PyTorch
Keras backend.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from gpt2_core.generation_config import merge, resolve
from gpt2_keras import losses
from gpt2_keras.modeling import GPT2LMHeadModel


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2CausalLMPreprocessor:
    """Strings (or ragged ids) -> `(x, y, sample_weight)` windows for next-token training.

    Called on a batch, each text becomes one window: `<|endoftext|> ids <|endoftext|>`, cut or
    padded to `sequence_length + 1` tokens (text past it is dropped); `x` holds the first
    `sequence_length`, `y` the same shifted by one, and `sample_weight` is 0 on padding so the
    loss ignores it. `packed_dataset` instead packs a whole corpus into full windows.

    Shapes: (B,) strings -> x {"input_ids", "attention_mask"} (B, L), y (B, L), weights (B, L).
    """

    def __init__(self, tokenizer=None, sequence_length: int = 128, eos_token_id: int = 50256,
                 pad_token_id: int | None = None):
        if not isinstance(sequence_length, int) or sequence_length < 1:
            raise ValueError(f"`sequence_length` must be a positive integer. Received: "
                             f"{sequence_length!r}.")
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.eos_token_id = eos_token_id
        self.pad_token_id = eos_token_id if pad_token_id is None else pad_token_id

    def get_config(self) -> dict:
        return {"tokenizer": (None if self.tokenizer is None
                              else keras.saving.serialize_keras_object(self.tokenizer)),
                "sequence_length": self.sequence_length, "eos_token_id": self.eos_token_id,
                "pad_token_id": self.pad_token_id}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        if config.get("tokenizer") is not None:
            config["tokenizer"] = keras.saving.deserialize_keras_object(config["tokenizer"])
        return cls(**config)

    def __call__(self, inputs):
        if isinstance(inputs, tf.RaggedTensor) or (
                isinstance(inputs, tf.Tensor) and inputs.dtype.is_integer):
            ids = inputs if isinstance(inputs, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(inputs)
        else:
            if self.tokenizer is None:
                raise ValueError("String inputs need a tokenizer. Received: tokenizer=None. Pass "
                                 "tokenizer=GPT2TokenizerLayer().")
            ids = self.tokenizer.tokenize(inputs)
        return self.pack(tf.cast(ids, tf.int32))

    def pack(self, ids: tf.RaggedTensor):
        L = self.sequence_length
        eos = tf.fill([ids.nrows(), 1], self.eos_token_id)
        ids = tf.concat([eos, ids, eos], axis=1)[:, :L + 1]
        weight = tf.ones_like(ids).to_tensor(0, shape=[None, L + 1])
        dense = ids.to_tensor(self.pad_token_id, shape=[None, L + 1])
        x = {"input_ids": dense[:, :-1], "attention_mask": weight[:, :-1]}
        return x, dense[:, 1:], tf.cast(weight[:, 1:], tf.float32)


    def packed_dataset(self, ds: tf.data.Dataset, batch_size: int | None = None) -> tf.data.Dataset:
        """A dataset of strings packed into full training windows, as Hugging Face `run_clm`'s
        `group_texts` and nanoGPT do.

        The documents are joined as `doc <|endoftext|> doc <|endoftext|> ...` and the token
        stream is cut into consecutive windows of `sequence_length + 1` tokens: `x` the first
        `sequence_length`, `y` the last `sequence_length`, `sample_weight` all ones. Windows
        run across document boundaries (the EOS token separates documents; attention is not
        reset, as in both references). Nothing is padded; only the final partial window (the
        last fewer than `sequence_length + 1` tokens of the corpus) is dropped.

        Shapes: strings, scalars or (N,) batches -> elements (x {"input_ids", "attention_mask"}
        (L,), y (L,), sample_weight (L,)), or (batch_size, L) each when `batch_size` is given.
        """
        if self.tokenizer is None:
            raise ValueError("Packing strings needs a tokenizer. Received: tokenizer=None. Pass "
                             "tokenizer=GPT2TokenizerLayer().")
        spec = ds.element_spec
        if not (isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string and spec.shape.rank in (0, 1)):
            raise TypeError("`ds` must yield strings (scalars or 1-D batches). Received element_spec="
                            f"{spec}. Use e.g. tf.data.Dataset.from_tensor_slices(texts).")
        if spec.shape.rank == 0:
            ds = ds.batch(64)  # tokenize many documents per call
        L, eos = self.sequence_length, self.eos_token_id

        def stream(texts):  # (N,) strings -> the documents' ids, each followed by EOS
            ids = tf.cast(self.tokenizer.tokenize(texts), tf.int32)
            return tf.concat([ids, tf.fill([ids.nrows(), 1], eos)], axis=1).flat_values

        def split(window):  # (L + 1,) -> x, y, sample_weight
            x = {"input_ids": window[:-1], "attention_mask": tf.ones([L], tf.int32)}
            return x, window[1:], tf.ones([L], tf.float32)

        windows = ds.map(stream, num_parallel_calls=tf.data.AUTOTUNE)
        windows = windows.rebatch(L + 1, drop_remainder=True).map(split)
        return windows if batch_size is None else windows.batch(batch_size)


@keras.saving.register_keras_serializable(package="gpt2_keras")
class Perplexity(keras.metrics.Metric):
    """exp of the (sample-weighted) mean next-token cross-entropy."""

    def __init__(self, name: str = "perplexity", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        logits = ops.cast(y_pred, "float32")
        logz = ops.logsumexp(logits, axis=-1)
        picked = ops.squeeze(ops.take_along_axis(logits, ops.cast(y_true, "int32")[..., None], -1), -1)
        w = ops.ones_like(logz) if sample_weight is None else ops.cast(sample_weight, "float32")
        self.total.assign_add(ops.sum((logz - picked) * w))
        self.count.assign_add(ops.sum(w))

    def result(self):
        return ops.exp(self.total / ops.maximum(self.count, 1.0))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2CausalLM(keras.Model):
    """A GPT-2 LM for `fit`/`evaluate`/`predict` on raw text.

    `call(x)` takes the preprocessor's dict and returns logits (B, L, V); the default loss is
    the sample-weighted next-token cross-entropy (padding weighs 0), with perplexity reported.
    """

    def __init__(self, backbone: GPT2LMHeadModel, preprocessor: GPT2CausalLMPreprocessor | None = None,
                 name: str | None = None):
        if not isinstance(backbone, GPT2LMHeadModel):
            raise TypeError(f"`backbone` must be a GPT2LMHeadModel. Received: {type(backbone).__name__}.")
        super().__init__(name=name, dtype=backbone.dtype_policy)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.built = True  # the backbone's variables are all there is

    def call(self, x, training=None):
        return self.backbone(x, training=training, use_cache=False)["logits"]

    def compile(self, optimizer="adamw", loss="auto", weighted_metrics="auto", **kwargs):
        """`keras.Model.compile` with causal-LM defaults (AdamW 5e-5, masked cross-entropy,
        perplexity); every other argument of Keras' `compile` is passed through."""
        if optimizer == "adamw":
            optimizer = keras.optimizers.AdamW(learning_rate=5e-5)
        if loss == "auto":
            # mean over the weighted (non-padding) tokens, not over every position
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                             reduction="mean_with_sample_weight")
        if weighted_metrics == "auto":
            weighted_metrics = [Perplexity()]
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    def compile_from_config(self, config):
        """Recompile from a `.keras` file's compile settings (the optimizer's state is then
        restored by `keras.models.load_model`), so a `ModelCheckpoint` file resumes training."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _preprocessed(self, x):
        """A `tf.data` dataset of strings (or ids) goes through the preprocessor; one that already
        yields `(x, y, sample_weight)` (e.g. `packed_dataset`) is used as it is."""
        raw = isinstance(x, tf.data.Dataset) and isinstance(x.element_spec,
                                                            (tf.TensorSpec, tf.RaggedTensorSpec))
        if self.preprocessor is not None and raw:
            return x.map(self.preprocessor, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
        return x

    def fit(self, x=None, y=None, **kwargs):
        """`keras.Model.fit`, every argument passed through; a `tf.data` dataset of string
        batches (as `x` or `validation_data`) goes through the preprocessor first."""
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._preprocessed(kwargs["validation_data"])
        return super().fit(self._preprocessed(x), y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        """`keras.Model.evaluate`, every argument passed through (strings preprocessed)."""
        return super().evaluate(self._preprocessed(x), y, **kwargs)

    def predict(self, x, **kwargs):
        """`keras.Model.predict`, every argument passed through (strings preprocessed): logits."""
        return super().predict(self._preprocessed(x), **kwargs)

    def generate(self, inputs, max_length: int | None = None, *, strip_prompt: bool = False,
                 **kwargs):
        """Continue text prompts, as KerasHub's `CausalLM.generate`: a string gives a string, a
        list of strings a list (`num_return_sequences` rows per prompt, in order).

        Each prompt is tokenized by the preprocessor's tokenizer after a leading
        `<|endoftext|>` (the windows `fit` trains on start with it, as KerasHub's), generated by
        the backbone's `generate` (`kwargs` are `GenerationConfig` fields: `max_new_tokens`,
        `do_sample`, `top_p`, `num_beams`, `stop_strings`, `seed`, ...) and detokenized up to
        the first eos. `max_length` counts every token, the leading one and the prompt
        included; by default the preprocessor's `sequence_length` unless `max_new_tokens` is
        given. `strip_prompt=True` returns the new text only.
        """
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("`generate` on strings needs a preprocessor with a tokenizer. "
                             "Received: preprocessor=None or tokenizer=None. Pass "
                             "preprocessor=GPT2CausalLMPreprocessor(GPT2TokenizerLayer()), or "
                             "call `backbone.generate(ids)` on token ids.")
        if kwargs.get("return_dict_in_generate"):
            raise ValueError("`GPT2CausalLM.generate` returns text. Received: "
                             "return_dict_in_generate=True. Call `lm.backbone.generate(ids, "
                             "return_dict_in_generate=True)` for scores and ids.")
        single = isinstance(inputs, (str, bytes))
        prompts = [inputs] if single else list(inputs)
        if not prompts or not all(isinstance(p, (str, bytes)) for p in prompts):
            raise TypeError("`inputs` must be a string or a non-empty list of strings. "
                            f"Received: inputs={inputs!r:.80}.")
        if max_length is None and "max_new_tokens" not in kwargs and "max_length" not in kwargs:
            max_length = self.preprocessor.sequence_length
        if max_length is not None:
            kwargs["max_length"] = max_length
        codec = self._codec(tokenizer)
        start, pad = self.preprocessor.eos_token_id, self.preprocessor.pad_token_id
        rows = [[start] + ids for ids in codec.encode_batch(prompts)]
        P = max(len(r) for r in rows)
        ids = np.full((len(rows), P), pad, np.int32)
        mask = np.zeros((len(rows), P), np.int32)
        for i, r in enumerate(rows):  # left padding: every row's next token in the same column
            ids[i, P - len(r):], mask[i, P - len(r):] = r, 1
        gen = kwargs.pop("generation_config", None)
        eos = set(resolve(self.backbone.config, merge(self.backbone.generation_config, gen, kwargs),
                          len(rows), P, has_tokenizer=True).eos_token_ids)
        out = np.asarray(self.backbone.generate(ids, mask, gen, tokenizer=codec, **kwargs))
        k = len(out) // len(rows)
        texts = []
        for i, row in enumerate(out.tolist()):
            new = row[P:]
            ends = [j for j, t in enumerate(new) if t in eos]
            new_bytes = codec.decode_bytes(new[:ends[0] if ends else len(new)])
            prompt = prompts[i // k]
            prompt = prompt if isinstance(prompt, bytes) else prompt.encode("utf-8")
            texts.append((new_bytes if strip_prompt else prompt + new_bytes)
                         .decode("utf-8", "replace"))
        return texts[0] if single and k == 1 else texts

    def _codec(self, tokenizer):
        from gpt2_keras.tokenizer_layer import TextCodec

        codec = self.__dict__.get("_text_codec")
        if codec is None or codec.layer is not tokenizer:  # built once: stop-string tables reuse it
            codec = TextCodec(tokenizer)
            self.__dict__["_text_codec"] = codec
        return codec

    def quantize(self, mode, **kwargs):
        """Not offered yet: raises for every mode (see `GPT2PreTrainedModel.quantize`)."""
        self.backbone.quantize(mode, **kwargs)

    def get_config(self):
        return {"name": self.name, "backbone": keras.saving.serialize_keras_object(self.backbone),
                "preprocessor": (None if self.preprocessor is None
                                 else keras.saving.serialize_keras_object(self.preprocessor))}

    @classmethod
    def from_config(cls, config):
        pre = config.get("preprocessor")
        return cls(keras.saving.deserialize_keras_object(config["backbone"]),
                   None if pre is None else keras.saving.deserialize_keras_object(pre),
                   name=config.get("name"))


def masked_lm_loss(logits, labels, sample_weight):
    """The training loss as a plain function (for custom loops): weighted mean cross-entropy."""
    return losses.cross_entropy(logits, ops.where(sample_weight > 0, labels, -100))
