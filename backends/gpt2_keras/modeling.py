"""The Keras models users know from Hugging Face: `GPT2Model`, `GPT2LMHeadModel` and the heads.

Each is a `keras.Model` with two faces:
- Keras' own: `call(inputs)` with `inputs` a dict of tensors (`input_ids`, `attention_mask`,
  `labels`, ...) returning a dict of tensors; this is what `fit`, `predict`, `.keras` saving and
  tracing use.
- Hugging Face's: `model(input_ids=..., attention_mask=..., past_key_values=..., labels=...)`
  returning an output dataclass (`out.logits`, `out.past_key_values`, `out.loss`), with the
  inputs validated when they are concrete values.
The heads are thin: everything shared lives in `GPT2Transformer`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops

import gpt2_core
from gpt2_core import layout
from gpt2_core.checks import NUM_LABELS_HINT, check_label_range, check_past_shapes, classification_problem
from gpt2_core.config import GPT2Config
from gpt2_core.generation_config import GenerationConfig, checkpoint_files_of
from gpt2_core.reference import check_inputs
from gpt2_keras import losses, outputs, weights
from gpt2_keras.layers import Conv1D, Dropout, initial_values
from gpt2_keras.transformer import GPT2Transformer


def _is_concrete(x) -> bool:
    """True for values (not graph placeholders or tracers) whose contents can be checked."""
    if isinstance(x, np.ndarray):
        return True
    if keras.backend.is_keras_tensor(x):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # this backend's framework, already imported by Keras

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    return True


def _numpy(x):
    return None if x is None else np.asarray(ops.convert_to_numpy(x))


def _is_python_ids(x) -> bool:
    """A nested Python list of ints (a batch of ids written inline), not a list of tensors."""
    return isinstance(x, (list, tuple)) and all(
        isinstance(r, (int, np.integer)) or _is_python_ids(r) for r in x)


def _positional(inputs) -> dict:
    """Keras' positional inputs as the dict `call` reads: a tensor is `input_ids`; a list or
    tuple of tensors is `(input_ids, attention_mask)` in the forward's order, as Hugging Face's
    TF models and Keras' multi-input models take them."""
    if isinstance(inputs, dict):
        return inputs
    if isinstance(inputs, (list, tuple)) and not _is_python_ids(inputs):
        if len(inputs) not in (1, 2):
            raise ValueError("A list or tuple of tensors is read as (input_ids, attention_mask). "
                             f"Received: a {type(inputs).__name__} of {len(inputs)} tensors. "
                             "Pass a dict ({'input_ids': ..., 'attention_mask': ..., "
                             "'position_ids': ...}) or keywords for more inputs.")
        return dict(zip(("input_ids", "attention_mask"), inputs))
    return {"input_ids": inputs}


def _pairs(past_key_values):
    """Per-layer `(key, value)` tuples; anything else is left for `check_past_shapes` to name."""
    try:
        return tuple(tuple(kv) for kv in past_key_values)
    except TypeError:
        return past_key_values


class GPT2PreTrainedModel(keras.Model):
    """Shared plumbing of every GPT-2 Keras model: checkpoint IO, config serialization and the
    Hugging Face keyword call. Subclasses define the head."""

    HEAD: ClassVar[str] = "base"
    ARCHITECTURE: ClassVar[str] = "GPT2Model"
    OUTPUT: ClassVar[type] = outputs.BaseModelOutput
    EXTRA_INPUTS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: GPT2Config, name: str | None = None, dtype=None,
                 trainable: bool = True):
        if not isinstance(config, GPT2Config):
            raise TypeError(f"`config` must be a gpt2_core.GPT2Config. Received: "
                            f"{type(config).__name__}. Build one with GPT2Config(...) or "
                            "GPT2Config.from_json(path).")
        super().__init__(name=name, dtype=dtype, trainable=trainable)
        self.config = config
        self.generation_config = GenerationConfig.from_model_config(config)  # what generate merges under
        self.transformer = GPT2Transformer(config, dtype=dtype)
        self.build_head(dtype)
        self.built = True

    # ---- the head (subclasses) -----------------------------------------------------------
    def build_head(self, dtype) -> None:
        """Create the head's layers."""

    def head_weight_table(self) -> list[weights.Row]:
        return []

    def head(self, inputs: dict, out: dict, training) -> dict:
        return out

    # ---- Keras' face -----------------------------------------------------------------------
    def call(self, inputs, training=None, use_cache=False, output_hidden_states=False,
             output_attentions=False):
        """Shapes: inputs["input_ids"] (B, T) (or inputs["inputs_embeds"] (B, T, C)) -> a dict
        of the head's outputs."""
        inputs = _positional(inputs)
        out = self.transformer(
            inputs.get("input_ids"), inputs_embeds=inputs.get("inputs_embeds"),
            attention_mask=inputs.get("attention_mask"),
            position_ids=inputs.get("position_ids"), token_type_ids=inputs.get("token_type_ids"),
            past_key_values=inputs.get("past_key_values"), head_mask=inputs.get("head_mask"),
            use_cache=use_cache, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions, training=training)
        return self.head(inputs, out, training)

    def compute_output_spec(self, *args, **kwargs):
        """In a functional model (`keras.Input`s in), the outputs that exist: Keras' graph
        nodes hold tensors only, not the dict's None entries (no loss without labels)."""
        out = super().compute_output_spec(*args, **kwargs)
        return {k: v for k, v in out.items() if v is not None} if isinstance(out, dict) else out

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`fit` on the dict path: without a compiled loss, the head's own loss (from `labels`
        in `x`) is the training loss, as Hugging Face's TF models did."""
        if self.loss is None and isinstance(y_pred, dict) and y_pred.get("loss") is not None:
            total = y_pred["loss"]
            for extra in self.losses:
                total = total + ops.cast(extra, total.dtype)
            if y_pred.get("mc_loss") is not None:
                total = total + y_pred["mc_loss"]
            return total
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy),
                # the dataclass fields, not `to_dict()`: its `config.json` extras (model_type,
                # label maps) would land in `extra` on the way back
                "config": {f.name: getattr(self.config, f.name)
                           for f in dataclasses.fields(self.config)}}

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        dtype = config.get("dtype")
        if isinstance(dtype, dict):
            dtype = keras.dtype_policies.deserialize(dtype)
        fields = dict(config["config"])
        fields["extra"] = dict(fields.get("extra") or {})
        return cls(GPT2Config(**fields), name=config.get("name"), dtype=dtype,
                   trainable=config.get("trainable", True))

    # ---- Hugging Face's face ---------------------------------------------------------------
    def __call__(self, inputs=None, *, input_ids=None, attention_mask=None, token_type_ids=None,
                 position_ids=None, past_key_values=None, head_mask=None, inputs_embeds=None,
                 labels=None, mc_token_ids=None, mc_labels=None, start_positions=None,
                 end_positions=None, use_cache: bool | None = None,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 return_dict: bool | None = None, training: bool | None = None):
        """`model({"input_ids": ...})` (Keras' path) returns the dict of tensors (None entries
        left out);
        `model(input_ids=..., ...)`, `model(ids)` or `model([ids, mask])` returns the output
        dataclass (its `to_tuple()` with `return_dict=False`)."""
        flags = dict(use_cache=self.config.use_cache if use_cache is None else bool(use_cache),
                     output_hidden_states=output_hidden_states,
                     output_attentions=output_attentions)
        if isinstance(inputs, dict):
            # the outputs that exist (a functional model's graph holds tensors, not None)
            out = super().__call__(inputs, training=training, **flags)
            return {k: v for k, v in out.items() if v is not None}
        if inputs is not None:
            positional = _positional(inputs)
            if input_ids is not None or (attention_mask is not None
                                         and "attention_mask" in positional):
                raise TypeError("Pass each input once: either positionally or as a keyword "
                                "(`input_ids=`, `attention_mask=`), not both.")
            input_ids = positional["input_ids"]
            attention_mask = positional.get("attention_mask", attention_mask)
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("Pass `input_ids` or `inputs_embeds`, not both. Received both.")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("`input_ids` (or `inputs_embeds`) is required. Received: "
                             "input_ids=None.")
        extra = dict(mc_token_ids=mc_token_ids, mc_labels=mc_labels,
                     start_positions=start_positions, end_positions=end_positions)
        for name, value in extra.items():
            if value is not None and name not in self.EXTRA_INPUTS:
                raise TypeError(f"{type(self).__name__} takes no `{name}` (it belongs to "
                                f"another head). Received: {name}=...")
        given = dict(input_ids=input_ids, inputs_embeds=inputs_embeds,
                     attention_mask=attention_mask, token_type_ids=token_type_ids,
                     position_ids=position_ids, past_key_values=past_key_values,
                     head_mask=head_mask, labels=labels, **extra)
        given = {k: v for k, v in given.items() if v is not None}
        if past_key_values is not None:
            given["past_key_values"] = _pairs(past_key_values)
        self.check_inputs(given)
        out = self.OUTPUT(**super().__call__(given, training=training, **flags))
        return out if return_dict is None or return_dict else out.to_tuple()

    def check_inputs(self, given: dict) -> None:
        """`gpt2_core.reference.check_inputs` and the label ranges on concrete inputs (graph
        inputs are not inspectable: only the static shapes of `past_key_values` are checked)."""
        embeds = given.get("inputs_embeds")
        if embeds is not None:
            shape = tuple(ops.shape(embeds))
            if len(shape) < 3 or shape[-1] != self.config.n_embd:
                raise ValueError(f"`inputs_embeds` must have shape (batch, seq, n_embd="
                                 f"{self.config.n_embd}). Received shape {shape}.")
            # the id checks (mask, positions, length) run on stand-in ids of the same shape
            given = dict(given, input_ids=np.zeros(shape[:-1], np.int32))
        ids = given["input_ids"]
        shape = tuple(ops.shape(ids))
        past = given.get("past_key_values")
        past_len = 0
        if past is not None:
            # the double-heads model's (B, nc, T) inputs run as (B * nc, T) rows
            rows = None if None in shape[:-1] else int(np.prod(shape[:-1]))
            past_len = check_past_shapes(self.config, past, rows)
        if not _is_concrete(ids if embeds is None else embeds):
            return
        flat = {k: None if given.get(k) is None else _numpy(given[k])
                for k in ("input_ids", "attention_mask", "position_ids", "token_type_ids")}
        if flat["input_ids"].ndim == 3:
            flat = {k: None if v is None else v.reshape((-1,) + v.shape[2:]) for k, v in flat.items()}
        labels = None if self.HEAD not in ("lm", "base") else _numpy(given.get("labels"))
        check_inputs(self.config, flat["input_ids"], flat["attention_mask"], flat["position_ids"],
                     flat["token_type_ids"], past_len, labels)
        self.check_labels(given)

    def check_labels(self, given: dict) -> None:
        """The label ranges of the head (`gpt2_core.checks.check_label_range`); concrete only."""

    def quantize(self, mode, **kwargs):
        """Not offered yet: raises for every mode rather than leaving the model unchanged
        (Keras' `quantize` knows its own `Dense`/`EinsumDense`/`Embedding` layers, not GPT-2's
        `Conv1D`, and would only warn)."""
        raise NotImplementedError(
            f"`quantize` is not supported by {type(self).__name__} yet: no mode is (int8, int4, "
            f"float8, gptq, ...). Received: mode={mode!r}. Run in float32 or under a mixed "
            "precision dtype policy instead (`from_pretrained(path, dtype='mixed_bfloat16')`).")

    # ---- checkpoints -------------------------------------------------------------------------
    def weight_table(self) -> list[weights.Row]:
        """(canonical name, variable, transpose) for every weight of the model."""
        return weights.transformer_table(self.transformer) + self.head_weight_table()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype=None,
                        allow_pickle: bool = False):
        """Load a Hugging Face GPT-2 directory (hub, `save_pretrained` or sharded layout).

        Args:
            path: a model directory, or a hub name present in the local Hugging Face cache.
            dtype: a Keras dtype policy (`"float32"`, `"mixed_bfloat16"`, ...); None uses the
                global policy.
            allow_pickle: also read `pytorch_model.bin`.
        """
        # NaN/inf are found while copying, a slice at a time: a check up front would read the
        # whole file into memory next to the model.
        config, params = gpt2_core.load_pretrained(path, allow_pickle=allow_pickle, check_finite=False)
        # The transformer's matrices become the variables' initial values (no random draws, no
        # second copy); the rest is assigned.
        values = weights.CheckpointValues(params, weights.transformer_matrices(config.n_layer))
        with initial_values(values):
            model = cls(config, dtype=dtype)
        loaded = values.verify(model)
        weights.load_params(model, params, source=os.fspath(path), init_missing=True,
                            loaded=frozenset(loaded),
                            non_finite=tuple(n for n in values.non_finite if n in loaded))
        model.generation_config = GenerationConfig.for_checkpoint(
            gpt2_core.checkpoint.resolve_model_path(path), config)
        return model

    @classmethod
    def from_params(cls, config: GPT2Config, params, dtype=None):
        """A model holding canonical `params` (name -> array), e.g. `gpt2_core.random_params`."""
        model = cls(config, dtype=dtype)
        weights.load_params(model, params)
        return model

    def save_pretrained(self, path: str | os.PathLike[str], *, dtype: str | None = None,
                        max_shard_size: int | None = None) -> None:
        """Write `config.json` and safetensors weights in the layout transformers reads."""
        gpt2_core.save_pretrained(path, self.config, weights.get_params(self), dtype=dtype,
                                  max_shard_size=max_shard_size,
                                  architectures=(self.ARCHITECTURE,),
                                  extra_files=checkpoint_files_of(self))


def _lm_logits(model, x):
    """(..., C) -> (..., V) float32: the tied `wte` or the untied `lm_head`."""
    if model.lm_head is None:
        # Contract against wte's rows directly (an explicit transpose of the (V, C) table can be
        # materialised on every decode step), on 2-D operands: TensorFlow's gradient of an
        # ellipsis einsum builds a (..., V, C) product (50 GB for GPT-2 small at 4 x 256).
        lead = ops.shape(x)[:-1]
        x2 = ops.reshape(x, (-1, ops.shape(x)[-1]))  # (N, C)
        logits = ops.einsum("nc,vc->nv", x2, ops.cast(model.transformer.wte.weight, x.dtype))
        logits = ops.reshape(logits, tuple(lead) + (model.config.vocab_size,))
    else:
        logits = model.lm_head(x)
    return ops.cast(logits, "float32")


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2Model(GPT2PreTrainedModel):
    """The bare transformer: `last_hidden_state`, `past_key_values`, hidden states, attentions."""


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2LMHeadModel(GPT2PreTrainedModel):
    """GPT-2 with its language-model head (tied to `wte` unless `tie_word_embeddings=False`).

    Shapes: input_ids (B, T) -> logits (B, T, V) float32.
    """

    HEAD = "lm"
    ARCHITECTURE = "GPT2LMHeadModel"
    OUTPUT = outputs.CausalLMOutput

    def build_head(self, dtype) -> None:
        c = self.config
        self.lm_head = (None if c.tie_word_embeddings
                        else Conv1D(c.n_embd, c.vocab_size, use_bias=False, name="lm_head", dtype=dtype))

    def head_weight_table(self):
        return [] if self.lm_head is None else [("lm_head.weight", self.lm_head.weight, True)]

    def lm_logits(self, x):
        """Shapes: (..., C) -> (..., V) float32."""
        return _lm_logits(self, x)

    def check_labels(self, given: dict) -> None:
        check_label_range(_numpy(given.get("labels")), self.config.vocab_size)

    def head(self, inputs, out, training):
        logits = _lm_logits(self, out["last_hidden_state"])
        labels = inputs.get("labels")
        return {"loss": None if labels is None else losses.causal_lm_loss(logits, labels),
                "logits": logits, "past_key_values": out["past_key_values"],
                "hidden_states": out["hidden_states"], "attentions": out["attentions"]}

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, *,
                 streamer=None, tokenizer=None, **kwargs):
        """Prompt + new tokens, `transformers`' `generate` semantics; `kwargs` are
        `GenerationConfig` fields. See `gpt2_keras.generation.generate`."""
        from gpt2_keras import generation

        return generation.generate(self, input_ids, attention_mask, generation_config,
                                   streamer=streamer, tokenizer=tokenizer, **kwargs)


class SequenceSummary(keras.layers.Layer):
    """The multiple-choice head: pick one hidden state per choice, project, activate.

    Shapes: hidden (B, nc, T, C), cls_index (B, nc) -> (B, nc, D).
    """

    def __init__(self, config: GPT2Config, name: str = "multiple_choice_head", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if config.summary_type == "attn":
            raise ValueError("summary_type='attn' is not defined for GPT-2 (Hugging Face raises "
                             "NotImplementedError too). Received: summary_type='attn'.")
        self.summary_type = config.summary_type
        with keras.name_scope(self.name):
            self.summary = (Conv1D(config.n_embd, layout.summary_dim(config), name="summary",
                                   dtype=dtype) if config.summary_use_proj else None)
        self.tanh = config.summary_activation == "tanh"
        self.first_dropout = Dropout(config.summary_first_dropout, dtype=dtype)
        self.built = True

    def call(self, hidden, cls_index=None, training=None):
        # "last"/"first"/"mean" index axis 1, as Hugging Face's SequenceSummary does.
        if self.summary_type == "last":
            x = hidden[:, -1]
        elif self.summary_type == "first":
            x = hidden[:, 0]
        elif self.summary_type == "mean":
            x = ops.mean(hidden, axis=1)
        else:  # cls_index; default: the last token
            if cls_index is None:
                T = ops.shape(hidden)[-2]
                cls_index = ops.full(ops.shape(hidden)[:-2], T - 1, "int32")
            idx = ops.cast(cls_index, "int32")[..., None, None]  # (B, nc, 1, 1)
            x = ops.take_along_axis(hidden, idx, axis=-2)[..., 0, :]  # (B, nc, C)
        x = self.first_dropout(x, training=training)
        if self.summary is not None:
            x = self.summary(x)
        return ops.tanh(x) if self.tanh else x


def _flatten_choices(x):
    """(B, nc, T...) -> (B * nc, T...)."""
    return None if x is None else ops.reshape(x, (-1,) + tuple(ops.shape(x)[2:]))


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2DoubleHeadsModel(GPT2PreTrainedModel):
    """LM head plus a multiple-choice head, with both losses.

    Shapes: input_ids (B, nc, T), mc_token_ids (B, nc) -> logits (B, nc, T, V), mc_logits (B, nc).
    """

    HEAD = "double_heads"
    ARCHITECTURE = "GPT2DoubleHeadsModel"
    OUTPUT = outputs.DoubleHeadsOutput
    EXTRA_INPUTS = ("mc_token_ids", "mc_labels")

    def build_head(self, dtype) -> None:
        GPT2LMHeadModel.build_head(self, dtype)
        self.multiple_choice_head = SequenceSummary(self.config, dtype=dtype)

    def head_weight_table(self):
        rows = GPT2LMHeadModel.head_weight_table(self)
        s = self.multiple_choice_head.summary
        if s is not None:
            rows += [("multiple_choice_head.summary.weight", s.weight, True),
                     ("multiple_choice_head.summary.bias", s.bias, False)]
        return rows

    def check_labels(self, given: dict) -> None:
        # transformers' CrossEntropyLoss() for both losses: classes in range, -100 skipped
        check_label_range(_numpy(given.get("labels")), self.config.vocab_size)
        check_label_range(_numpy(given.get("mc_labels")), int(ops.shape(given["input_ids"])[1]),
                          "mc_labels", "num_choices")

    def call(self, inputs, training=None, use_cache=False, output_hidden_states=False,
             output_attentions=False):
        inputs = _positional(inputs)
        flat = {k: (_flatten_choices(v) if k in ("input_ids", "inputs_embeds", "attention_mask",
                                                  "position_ids", "token_type_ids") else v)
                for k, v in inputs.items()}
        out = self.transformer(
            flat.get("input_ids"), inputs_embeds=flat.get("inputs_embeds"),
            attention_mask=flat.get("attention_mask"),
            position_ids=flat.get("position_ids"), token_type_ids=flat.get("token_type_ids"),
            past_key_values=flat.get("past_key_values"), head_mask=flat.get("head_mask"),
            use_cache=use_cache, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions, training=training)
        shape = (tuple(ops.shape(inputs["input_ids"])) if inputs.get("input_ids") is not None
                 else tuple(ops.shape(inputs["inputs_embeds"]))[:-1])
        unflat = lambda h: ops.reshape(h, shape + (ops.shape(h)[-1],))  # noqa: E731
        hidden = unflat(out["last_hidden_state"])  # (B, nc, T, C)
        logits = _lm_logits(self, hidden)
        mc_logits = self.multiple_choice_head(hidden, inputs.get("mc_token_ids"), training=training)
        if ops.shape(mc_logits)[-1] == 1:
            mc_logits = ops.squeeze(mc_logits, -1)
        labels, mc_labels = inputs.get("labels"), inputs.get("mc_labels")
        return {
            "loss": None if labels is None else losses.causal_lm_loss(logits, labels),
            "mc_loss": None if mc_labels is None else losses.cross_entropy(
                ops.reshape(mc_logits, (-1, ops.shape(mc_logits)[-1])), ops.reshape(mc_labels, (-1,))),
            "logits": logits, "mc_logits": mc_logits, "past_key_values": out["past_key_values"],
            "hidden_states": (None if out["hidden_states"] is None
                              else tuple(unflat(h) for h in out["hidden_states"])),
            "attentions": out["attentions"],
        }


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2ForSequenceClassification(GPT2PreTrainedModel):
    """Classify (or regress) from the last non-padding token (`config.pad_token_id`).

    Shapes: input_ids (B, T) -> logits (B, num_labels).
    """

    HEAD = "sequence_classification"
    ARCHITECTURE = "GPT2ForSequenceClassification"
    OUTPUT = outputs.SequenceClassifierOutput

    def build_head(self, dtype) -> None:
        c = self.config
        self.score = Conv1D(c.n_embd, c.num_labels, use_bias=False, name="score", dtype=dtype)

    def head_weight_table(self):
        return [("score.weight", self.score.weight, True)]

    def check_inputs(self, given: dict) -> None:
        super().check_inputs(given)
        B = ops.shape(given.get("input_ids", given.get("inputs_embeds")))[0]
        if self.config.pad_token_id is None and B is not None and B != 1:
            raise ValueError(f"Batches of more than one sequence need `config.pad_token_id` to "
                             f"find each row's last token. Received: batch size {B}, "
                             "pad_token_id=None. Set pad_token_id in the config.")

    def head(self, inputs, out, training):
        logits = ops.cast(self.score(out["last_hidden_state"]), "float32")  # (B, T, N)
        ids = inputs.get("input_ids")
        B, T = ops.shape(logits)[0], ops.shape(logits)[1]
        if self.config.pad_token_id is None or ids is None:
            # without ids (`inputs_embeds`) padding cannot be seen: the last position, as
            # transformers does
            last = ops.full((B,), T - 1, "int32")
        else:
            # the rightmost non-pad token, so left and right padding both work
            keep = ops.cast(ops.cast(ids, "int32") != self.config.pad_token_id, "int32")
            last = ops.cast(ops.argmax(ops.arange(T, dtype="int32")[None] * keep, axis=-1), "int32")
        pooled = ops.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]  # (B, N)
        labels = inputs.get("labels")
        return {"loss": None if labels is None else self.loss_for(pooled, labels),
                "logits": pooled, "past_key_values": out["past_key_values"],
                "hidden_states": out["hidden_states"], "attentions": out["attentions"]}

    def check_labels(self, given: dict) -> None:
        labels = _numpy(given.get("labels"))
        if labels is not None and self._problem(labels) == "single_label_classification":
            check_label_range(labels.astype(np.int64), self.config.num_labels, "labels",
                              "num_labels", NUM_LABELS_HINT)

    def _problem(self, labels) -> str:
        return classification_problem(
            self.config, "int" in keras.backend.standardize_dtype(labels.dtype))

    def loss_for(self, pooled, labels):
        N, problem = self.config.num_labels, self._problem(labels)
        if problem == "regression":
            if N == 1:
                return losses.mse(ops.reshape(pooled, (-1,)), ops.reshape(labels, (-1,)))
            return losses.mse(pooled, labels)
        if problem == "single_label_classification":
            return losses.cross_entropy(pooled, ops.reshape(labels, (-1,)))
        return losses.bce_with_logits(pooled, labels)


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2ForTokenClassification(GPT2PreTrainedModel):
    """Per-token labels. Shapes: input_ids (B, T) -> logits (B, T, num_labels)."""

    HEAD = "token_classification"
    ARCHITECTURE = "GPT2ForTokenClassification"
    OUTPUT = outputs.SequenceClassifierOutput

    def build_head(self, dtype) -> None:
        c = self.config
        # Hugging Face's default when the config names no classifier dropout.
        rate = c.extra.get("classifier_dropout") or c.extra.get("hidden_dropout") or 0.1
        self.dropout = Dropout(rate, dtype=dtype)
        self.classifier = Conv1D(c.n_embd, c.num_labels, name="classifier", dtype=dtype)

    def head_weight_table(self):
        return [("classifier.weight", self.classifier.weight, True),
                ("classifier.bias", self.classifier.bias, False)]

    def check_labels(self, given: dict) -> None:
        check_label_range(_numpy(given.get("labels")), self.config.num_labels, "labels",
                          "num_labels", NUM_LABELS_HINT)

    def head(self, inputs, out, training):
        h = self.dropout(out["last_hidden_state"], training=training)
        logits = ops.cast(self.classifier(h), "float32")
        labels = inputs.get("labels")
        return {"loss": None if labels is None else losses.cross_entropy(logits, labels),
                "logits": logits, "past_key_values": out["past_key_values"],
                "hidden_states": out["hidden_states"], "attentions": out["attentions"]}


@keras.saving.register_keras_serializable(package="gpt2_keras")
class GPT2ForQuestionAnswering(GPT2PreTrainedModel):
    """Span extraction. Shapes: input_ids (B, T) -> start_logits, end_logits (B, T)."""

    HEAD = "question_answering"
    ARCHITECTURE = "GPT2ForQuestionAnswering"
    OUTPUT = outputs.QuestionAnsweringOutput
    EXTRA_INPUTS = ("start_positions", "end_positions")

    def build_head(self, dtype) -> None:
        self.qa_outputs = Conv1D(self.config.n_embd, 2, name="qa_outputs", dtype=dtype)

    def head_weight_table(self):
        return [("qa_outputs.weight", self.qa_outputs.weight, True),
                ("qa_outputs.bias", self.qa_outputs.bias, False)]

    def head(self, inputs, out, training):
        logits = ops.cast(self.qa_outputs(out["last_hidden_state"]), "float32")  # (B, T, 2)
        start, end = logits[..., 0], logits[..., 1]
        sp, ep = inputs.get("start_positions"), inputs.get("end_positions")
        loss = None
        if sp is not None and ep is not None:
            # Positions outside the input are clamped to T and ignored, not refused: what
            # transformers' GPT2ForQuestionAnswering.forward does (models/gpt2/modeling_gpt2.py).
            T = ops.shape(start)[1]
            sp = ops.clip(ops.reshape(ops.cast(sp, "int32"), (-1,)), 0, T)
            ep = ops.clip(ops.reshape(ops.cast(ep, "int32"), (-1,)), 0, T)
            loss = (losses.cross_entropy(start, sp, ignore_index=T)
                    + losses.cross_entropy(end, ep, ignore_index=T)) / 2
        return {"loss": loss, "start_logits": start, "end_logits": end,
                "hidden_states": out["hidden_states"], "attentions": out["attentions"]}
