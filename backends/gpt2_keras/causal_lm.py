"""Fine-tuning on raw text with `model.fit`: a preprocessor that packs strings into fixed windows
and a `GPT2CausalLM` model whose `fit`/`evaluate` take a `tf.data` dataset of strings.

The preprocessor runs in `tf.data` (TensorFlow ops, through `GPT2TokenizerLayer`); the model
itself is backend-agnostic Keras, so the same script trains on the TensorFlow, JAX or PyTorch
Keras backend.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from gpt2_keras import losses
from gpt2_keras.modeling import GPT2LMHeadModel


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

    def call(self, x, training=None):
        return self.backbone(x, training=training, use_cache=False)["logits"]

    def compile(self, optimizer="adamw", loss="auto", weighted_metrics="auto", jit_compile="auto"):
        """Keras' `compile` with causal-LM defaults (AdamW 5e-5, masked cross-entropy,
        perplexity)."""
        if optimizer == "adamw":
            optimizer = keras.optimizers.AdamW(learning_rate=5e-5)
        if loss == "auto":
            # mean over the weighted (non-padding) tokens, not over every position
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                             reduction="mean_with_sample_weight")
        if weighted_metrics == "auto":
            weighted_metrics = [Perplexity()]
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics,
                        jit_compile=jit_compile)

    def _preprocessed(self, x):
        """A `tf.data` dataset of strings (or ids) goes through the preprocessor; one that already
        yields `(x, y, sample_weight)` (e.g. `packed_dataset`) is used as it is."""
        raw = isinstance(x, tf.data.Dataset) and isinstance(x.element_spec,
                                                            (tf.TensorSpec, tf.RaggedTensorSpec))
        if self.preprocessor is not None and raw:
            return x.map(self.preprocessor, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
        return x

    def fit(self, x=None, y=None, *, batch_size=None, epochs: int = 1, verbose="auto",
            callbacks=None, validation_data=None, sample_weight=None, steps_per_epoch=None):
        """`keras.Model.fit`; a `tf.data` dataset of string batches goes through the
        preprocessor first."""
        return super().fit(self._preprocessed(x), y, batch_size=batch_size, epochs=epochs,
                           verbose=verbose, callbacks=callbacks,
                           validation_data=self._preprocessed(validation_data),
                           sample_weight=sample_weight, steps_per_epoch=steps_per_epoch)

    def evaluate(self, x=None, y=None, *, batch_size=None, verbose="auto", steps=None,
                 return_dict: bool = False):
        return super().evaluate(self._preprocessed(x), y, batch_size=batch_size, verbose=verbose,
                                steps=steps, return_dict=return_dict)

    def get_config(self):
        return {"name": self.name, "backbone": keras.saving.serialize_keras_object(self.backbone)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["backbone"]), name=config.get("name"))


def masked_lm_loss(logits, labels, sample_weight):
    """The training loss as a plain function (for custom loops): weighted mean cross-entropy."""
    return losses.cross_entropy(logits, ops.where(sample_weight > 0, labels, -100))
