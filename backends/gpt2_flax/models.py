"""The classes users know from Hugging Face: `GPT2Model`, `GPT2LMHeadModel` and the heads.

A thin layer over `modeling.Transformer`: each validates its arguments at the (untraced) public
boundary, then runs one compiled function per input shape (`nnx.jit`). Called inside the
caller's own `jit`/`grad`, the same code simply traces.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gpt2_core import checkpoint
from gpt2_core.checks import NUM_LABELS_HINT, classification_problem
from gpt2_core.config import GPT2Config
from gpt2_core.constants import IGNORE_INDEX
from gpt2_core.generation_config import GenerationConfig, checkpoint_files_of
from gpt2_core.layout import summary_dim
from gpt2_flax import weights
from gpt2_flax.inputs import CoreInputs, check_labels, finish_past, is_traced, prepare
from gpt2_flax.modeling import KVCache, Transformer
from gpt2_flax.outputs import (
    BaseModelOutput,
    CausalLMOutput,
    DoubleHeadsModelOutput,
    QuestionAnsweringOutput,
    SequenceClassifierOutput,
)

if TYPE_CHECKING:
    from gpt2_flax.generation import Streamer

Array = jax.Array
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(value: Any, name: str):
    if isinstance(value, str):
        if value not in DTYPES:
            raise ValueError(f"`{name}` must be one of {sorted(DTYPES)}. Received: {name}={value!r}.")
        return DTYPES[value]
    if jnp.dtype(value) not in [jnp.dtype(d) for d in DTYPES.values()]:
        raise ValueError(f"`{name}` must be float32, bfloat16 or float16. Received: {name}={value!r}.")
    return jnp.dtype(value).type


def cross_entropy(logits: Array, labels: Array, ignore_index: int = IGNORE_INDEX) -> Array:
    """Mean CE over labels != ignore_index, in float32; NaN when every label is ignored (0/0, as
    torch). Shapes: logits (N, V), labels (N,)."""
    logits = logits.astype(jnp.float32)
    keep = labels != ignore_index
    safe = jnp.where(keep, labels, 0).astype(jnp.int32)
    picked = jnp.take_along_axis(logits, safe[:, None], axis=-1)[:, 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - picked
    return jnp.where(keep, nll, 0.0).sum() / keep.sum()


def causal_lm_loss(logits: Array, labels: Array) -> Array:
    """`gpt2_core.reference.causal_lm_loss`: logits[:, t] predicts labels[:, t + 1]."""
    V = logits.shape[-1]
    return cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1))


@nnx.jit(static_argnames=("output_attentions", "output_hidden_states"))
def _compiled(model: _GPT2Base, core: CoreInputs, extra: dict[str, Array | None],
              output_attentions: bool, output_hidden_states: bool):
    return model.forward(core, extra, output_attentions, output_hidden_states)


class _GPT2Base(nnx.Module):
    """Shared construction, loading and saving. `head` names the `gpt2_core.layout` head."""

    head: ClassVar[str] = "base"

    def __init__(self, config: GPT2Config, *, dtype="float32", param_dtype="float32",
                 rngs: nnx.Rngs | None = None):
        if not isinstance(config, GPT2Config):
            raise TypeError(f"`config` must be a gpt2_core.GPT2Config. Received: "
                            f"{type(config).__name__}.")
        rngs = rngs if rngs is not None else nnx.Rngs(params=0, dropout=0)
        self.config = config
        self.dtype = _dtype(dtype, "dtype")
        self.param_dtype = _dtype(param_dtype, "param_dtype")
        self.transformer = Transformer(config, dtype=self.dtype, param_dtype=self.param_dtype,
                                       rngs=rngs)
        self._init_head(rngs)
        self.generation_config = GenerationConfig.from_model_config(config)  # generate's defaults
        self.eval()  # inference by default (dropout off), as HF's from_pretrained; .train() enables

    def _init_head(self, rngs: nnx.Rngs) -> None:
        pass

    def _check_labels(self, extra: dict) -> None:
        """The head's label ranges (`gpt2_core.checks`), on concrete values only."""

    def _linear_head(self, n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool) -> nnx.Linear:
        return nnx.Linear(n_in, n_out, use_bias=use_bias, dtype=self.dtype,
                          param_dtype=self.param_dtype,
                          kernel_init=nnx.initializers.normal(self.config.initializer_range),
                          bias_init=nnx.initializers.zeros_init(), rngs=rngs)

    # ---- loading and saving -----------------------------------------------------------------
    @classmethod
    def from_params(cls, config: GPT2Config, params, *, dtype="float32", param_dtype="float32",
                    mesh: jax.sharding.Mesh | None = None):
        """A model holding canonical `params` (name -> array, e.g. from `gpt2_core`)."""
        problems = checkpoint.validate(config, params, head=cls.head, check_finite=False)
        if problems:
            raise checkpoint.CheckpointError("<params>", problems)
        shardings = None
        if mesh is not None:
            from gpt2_flax.sharding import param_shardings
            shardings = param_shardings(config, cls.head, mesh)

        def create():
            return cls(config, dtype=dtype, param_dtype=param_dtype)
        return weights.build(create, config, cls.head, params, _dtype(param_dtype, "param_dtype"),
                             shardings)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype="float32",
                        param_dtype="float32", mesh: jax.sharding.Mesh | None = None,
                        allow_pickle: bool = False):
        """Load a Hugging Face model directory (hub, `save_pretrained` or sharded layout).

        Args:
            path: a directory, or a hub name found in the local Hugging Face cache.
            dtype: compute dtype (float32, bfloat16, float16).
            param_dtype: storage dtype of the parameters.
            mesh: a `Mesh` with ("data", "model") axes to shard the parameters over.
            allow_pickle: also read `pytorch_model.bin` (plain tensors only).
        """
        # finiteness is checked tensor by tensor on the loaded copies (`weights.build`)
        config, params = checkpoint.load_pretrained(path, head=cls.head, check_finite=False,
                                                    allow_pickle=allow_pickle)
        try:
            model = cls.from_params(config, params, dtype=dtype, param_dtype=param_dtype, mesh=mesh)
        except checkpoint.CheckpointError as e:  # name the directory, not "<params>"
            raise checkpoint.CheckpointError(os.fspath(path), e.problems) from None
        model.generation_config = GenerationConfig.for_checkpoint(
            checkpoint.resolve_model_path(path), config)
        return model

    def to_params(self) -> dict[str, np.ndarray]:
        """Canonical name -> NumPy array (checkpoint layouts)."""
        return weights.to_canonical(self, self.config, self.head)

    def save_pretrained(self, path: str | os.PathLike[str], *, dtype: str | None = None,
                        max_shard_size: int | None = None) -> None:
        """Write `config.json` + safetensors that `transformers` and `from_pretrained` load."""
        arch = {"base": "GPT2Model", "lm": "GPT2LMHeadModel"}.get(self.head, type(self).__name__)
        checkpoint.save_pretrained(path, self.config, self.to_params(), dtype=dtype,
                                   max_shard_size=max_shard_size, architectures=(arch,),
                                   extra_files=checkpoint_files_of(self))

    def save_state(self, directory: str | os.PathLike[str]) -> None:
        """Orbax checkpoint of the full NNX state (weights and dropout RNG state). To resume
        training, save the optimizer with it: `gpt2_flax.training.save_checkpoint`."""
        weights.save_state(self, directory)

    def restore_state(self, directory: str | os.PathLike[str]):
        """Load an Orbax checkpoint written by `save_state`; returns self."""
        return weights.restore_state(self, directory)

    def init_cache(self, batch_size: int, max_length: int) -> KVCache:
        """An empty preallocated cache (compute dtype) to pass as `past_key_values`."""
        return KVCache.zeros(self.config, batch_size, max_length, self.dtype)

    # ---- the forward pass ---------------------------------------------------------------------
    def _run(self, input_ids, attention_mask, position_ids, token_type_ids, past_key_values,
             head_mask, extra: dict, output_attentions: bool, output_hidden_states: bool,
             use_cache: bool, inputs_embeds=None):
        core, labels, kind = prepare(self.config, self.dtype, input_ids, attention_mask,
                                     position_ids, token_type_ids, past_key_values,
                                     extra.get("labels"), head_mask, inputs_embeds)
        extra = {**extra, "labels": labels}
        self._check_labels(extra)
        if any(is_traced(leaf) for leaf in jax.tree.leaves((core, extra))):
            # inside the caller's own jit/grad: trace straight through (a nested nnx.jit
            # could not write the dropout RNG counters back across trace levels)
            out = self.forward(core, extra, output_attentions, output_hidden_states)
        else:
            out = _compiled(self, core, extra, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states)
        fields = {}
        if hasattr(out, "past_key_values"):
            fields["past_key_values"] = finish_past(out.past_key_values, kind, use_cache)
        return out.replace(hidden_states=out.hidden_states if output_hidden_states else None,
                           attentions=out.attentions if output_attentions else None, **fields)

    def body(self, core: CoreInputs, output_attentions: bool, output_hidden_states: bool):
        return self.transformer(core.input_ids, core.position_ids, core.cache, core.key_mask,
                                core.token_type_ids, core.head_mask, output_attentions,
                                output_hidden_states, core.inputs_embeds)


class GPT2Model(_GPT2Base):
    """The bare transformer; `last_hidden_state` is after `ln_f`.

    Shapes: input_ids (B, T) (or inputs_embeds (B, T, C) in place of `wte(input_ids)`) ->
    last_hidden_state (B, T, C).
    """

    head = "base"

    def __call__(self, input_ids=None, attention_mask=None, *, position_ids=None, token_type_ids=None,
                 past_key_values=None, head_mask=None, inputs_embeds=None, use_cache: bool = True,
                 output_attentions: bool = False,
                 output_hidden_states: bool = False) -> BaseModelOutput:
        return self._run(input_ids, attention_mask, position_ids, token_type_ids, past_key_values,
                         head_mask, {}, output_attentions, output_hidden_states, use_cache,
                         inputs_embeds)

    def forward(self, core, extra, output_attentions, output_hidden_states):
        x, cache, hidden, attn = self.body(core, output_attentions, output_hidden_states)
        return BaseModelOutput(x, cache, hidden, attn)


class GPT2LMHeadModel(_GPT2Base):
    """GPT-2 with the language-modelling head (tied to `wte` unless the config unties it).

    Shapes: input_ids (B, T) (or inputs_embeds (B, T, C)) -> logits (B, T, V); labels (B, T)
    with -100 to skip.
    """

    head = "lm"

    def _init_head(self, rngs):
        if not self.config.tie_word_embeddings:
            self.lm_head = self._linear_head(self.config.n_embd, self.config.vocab_size, rngs,
                                             use_bias=False)

    def logits(self, x: Array) -> Array:
        """(..., C) -> (..., V): the tied `wte` matmul, or `lm_head`."""
        if self.config.tie_word_embeddings:
            # contract with wte's C axis directly: `x @ wte.T` makes XLA CPU copy the
            # transposed (C, V) table (154 MB for GPT-2) on every decode step
            wte = self.transformer.wte.embedding[...].astype(x.dtype)
            return jnp.einsum("...c,vc->...v", x, wte)  # (..., V)
        return self.lm_head(x)

    def _check_labels(self, extra: dict) -> None:
        check_labels(extra.get("labels"), self.config.vocab_size)

    def head_matrix(self) -> Array:
        """The LM head as a (C, V) [in, out] matrix (the transposed `wte` when tied)."""
        if self.config.tie_word_embeddings:
            return self.transformer.wte.embedding[...].T
        return self.lm_head.kernel[...]

    def __call__(self, input_ids=None, attention_mask=None, *, position_ids=None, token_type_ids=None,
                 past_key_values=None, labels=None, head_mask=None, inputs_embeds=None,
                 use_cache: bool = True, output_attentions: bool = False,
                 output_hidden_states: bool = False) -> CausalLMOutput:
        return self._run(input_ids, attention_mask, position_ids, token_type_ids, past_key_values,
                         head_mask, {"labels": labels}, output_attentions, output_hidden_states,
                         use_cache, inputs_embeds)

    def forward(self, core, extra, output_attentions, output_hidden_states):
        x, cache, hidden, attn = self.body(core, output_attentions, output_hidden_states)
        logits = self.logits(x)
        labels = extra.get("labels")
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return CausalLMOutput(logits, cache, hidden, attn, loss)

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, *,
                 streamer: Streamer | None = None, tokenizer: Any = None, **kwargs: Any) -> Any:
        """Prompt plus new tokens, compiled end to end; `kwargs` are `GenerationConfig` fields.
        See `gpt2_flax.generation.generate`.

        Shapes: input_ids (B, T) -> (B * num_return_sequences, T + n).
        """
        from gpt2_flax.generation import generate
        return generate(self, input_ids, attention_mask, generation_config, streamer=streamer,
                        tokenizer=tokenizer, **kwargs)


class SequenceSummary(nnx.Module):
    """The double-heads model's `multiple_choice_head`: pick a vector, project, activate."""

    def __init__(self, config: GPT2Config, linear):
        if config.summary_type == "attn":
            raise ValueError("`summary_type='attn'` is not implemented by GPT-2 (nor by Hugging "
                             "Face). Use 'last', 'first', 'mean' or 'cls_index'.")
        self.summary_type = config.summary_type
        self.summary = linear(config.n_embd, summary_dim(config)) if config.summary_use_proj else None
        self.first_dropout = nnx.Dropout(config.summary_first_dropout, rngs=nnx.Rngs(dropout=0))
        self.use_tanh = config.summary_activation == "tanh"

    def __call__(self, x: Array, cls_index: Array | None) -> Array:
        """Shapes: x (B, nc, T, C), cls_index (B, nc) -> (B, nc, D)."""
        if self.summary_type == "last":
            out = x[..., -1, :]
        elif self.summary_type == "first":
            out = x[..., 0, :]
        elif self.summary_type == "mean":
            out = x.mean(axis=-2)
        else:
            if cls_index is None:
                cls_index = jnp.full(x.shape[:-2], x.shape[-2] - 1, jnp.int32)
            out = jnp.take_along_axis(x, cls_index[..., None, None].astype(jnp.int32), axis=-2)[..., 0, :]
        out = self.first_dropout(out)
        if self.summary is not None:
            out = self.summary(out)
        return jnp.tanh(out) if self.use_tanh else out


def _choices_shape(input_ids, inputs_embeds) -> tuple[int, int]:
    """(B, nc) of the double-heads inputs: ids (B, nc, T) or embeddings (B, nc, T, C)."""
    if input_ids is not None:
        if np.ndim(input_ids) != 3:
            raise ValueError("`input_ids` of GPT2DoubleHeadsModel must have shape (batch, "
                             f"num_choices, seq). Received shape {np.shape(input_ids)}.")
        return np.shape(input_ids)[:2]
    if inputs_embeds is not None and np.ndim(inputs_embeds) != 4:
        raise ValueError("`inputs_embeds` of GPT2DoubleHeadsModel must have shape (batch, "
                         f"num_choices, seq, n_embd). Received shape {np.shape(inputs_embeds)}.")
    return (1, 1) if inputs_embeds is None else np.shape(inputs_embeds)[:2]  # neither: prepare says


class GPT2DoubleHeadsModel(GPT2LMHeadModel):
    """LM head plus a multiple-choice head. Inputs carry a choices axis.

    Shapes: input_ids (B, nc, T) (or inputs_embeds (B, nc, T, C)), mc_token_ids (B, nc) ->
    logits (B, nc, T, V), mc_logits (B, nc).
    """

    head = "double_heads"

    def _init_head(self, rngs):
        super()._init_head(rngs)
        self.multiple_choice_head = SequenceSummary(
            self.config, lambda i, o: self._linear_head(i, o, rngs, use_bias=True))

    def __call__(self, input_ids=None, attention_mask=None, *, mc_token_ids=None, position_ids=None,
                 token_type_ids=None, labels=None, mc_labels=None, head_mask=None, inputs_embeds=None,
                 output_attentions: bool = False,
                 output_hidden_states: bool = False) -> DoubleHeadsModelOutput:
        B, nc = _choices_shape(input_ids, inputs_embeds)

        def flat(a, tail: int = 0):  # (B, nc, T, ...) -> (B * nc, T, ...)
            return None if a is None else jnp.asarray(a).reshape(
                B * nc, *np.shape(a)[len(np.shape(a)) - 1 - tail:])
        extra = {"labels": flat(labels), "mc_token_ids": mc_token_ids, "mc_labels": mc_labels,
                 "choices": jnp.zeros((B, nc), jnp.int8)}
        return self._run(flat(input_ids), flat(attention_mask), flat(position_ids),
                         flat(token_type_ids), None, head_mask, extra, output_attentions,
                         output_hidden_states, use_cache=False,
                         inputs_embeds=flat(inputs_embeds, tail=1))

    def _check_labels(self, extra: dict) -> None:
        # transformers' CrossEntropyLoss() for both losses: classes in range, -100 skipped
        check_labels(extra.get("labels"), self.config.vocab_size)
        check_labels(extra.get("mc_labels"), extra["choices"].shape[1], "mc_labels", "num_choices")

    def forward(self, core, extra, output_attentions, output_hidden_states):
        x, _, hidden, attn = self.body(core, output_attentions, output_hidden_states)
        B, nc = extra["choices"].shape
        logits = self.logits(x)  # (B * nc, T, V)
        mc = self.multiple_choice_head(x.reshape(B, nc, *x.shape[1:]), extra["mc_token_ids"])
        mc_logits = mc[..., 0] if mc.shape[-1] == 1 else mc  # HF squeezes the last axis
        loss = None if extra["labels"] is None else causal_lm_loss(logits, extra["labels"])
        mc_loss = None
        if extra["mc_labels"] is not None:
            mc_loss = cross_entropy(mc_logits.reshape(-1, mc_logits.shape[-1]),
                                    jnp.asarray(extra["mc_labels"]).reshape(-1))
        if hidden is not None:  # (B, nc, T, C), like the logits (attentions stay per row)
            hidden = tuple(h.reshape(B, nc, *h.shape[1:]) for h in hidden)
        return DoubleHeadsModelOutput(logits.reshape(B, nc, *logits.shape[1:]), mc_logits, None,
                                      hidden, attn, loss, mc_loss)


class GPT2ForSequenceClassification(_GPT2Base):
    """Classifies each row from the hidden state of its last non-pad token.

    Shapes: input_ids (B, T) -> logits (B, num_labels).
    """

    head = "sequence_classification"

    def _init_head(self, rngs):
        self.score = self._linear_head(self.config.n_embd, self.config.num_labels, rngs,
                                       use_bias=False)

    def __call__(self, input_ids=None, attention_mask=None, *, position_ids=None, token_type_ids=None,
                 labels=None, head_mask=None, inputs_embeds=None, output_attentions: bool = False,
                 output_hidden_states: bool = False) -> SequenceClassifierOutput:
        B = np.shape(input_ids if input_ids is not None else inputs_embeds)[0]
        if self.config.pad_token_id is None and B != 1:
            raise ValueError("GPT2ForSequenceClassification needs `config.pad_token_id` to find "
                             f"each row's last token when the batch has more than one row. "
                             f"Received: batch size {B}, pad_token_id=None.")
        labels = None if labels is None else jnp.asarray(labels)
        return self._run(input_ids, attention_mask, position_ids, token_type_ids, None, head_mask,
                         {"cls_labels": labels}, output_attentions, output_hidden_states,
                         use_cache=False, inputs_embeds=inputs_embeds)

    def forward(self, core, extra, output_attentions, output_hidden_states):
        x, _, hidden, attn = self.body(core, output_attentions, output_hidden_states)
        logits = self.score(x)  # (B, T, N)
        B, T = core.position_ids.shape
        if self.config.pad_token_id is None or core.input_ids is None:
            # no ids to search for pads (HF does the same with inputs_embeds): the last position
            last = jnp.full((B,), T - 1)
        else:  # the rightmost non-pad token, for left and right padding alike
            last = jnp.argmax(jnp.arange(T) * (core.input_ids != self.config.pad_token_id), -1)
        pooled = logits[jnp.arange(B), last]  # (B, N)
        labels = extra["cls_labels"]
        loss = None if labels is None else self._loss(pooled, labels)
        return SequenceClassifierOutput(pooled, None, hidden, attn, loss)

    def _check_labels(self, extra: dict) -> None:
        labels = extra["cls_labels"]
        if labels is not None and self._problem(labels) == "single_label_classification":
            check_labels(labels if is_traced(labels) else np.asarray(labels).astype(np.int64),
                         self.config.num_labels, "labels", "num_labels", NUM_LABELS_HINT)

    def _problem(self, labels: Array) -> str:
        return classification_problem(self.config, jnp.issubdtype(labels.dtype, jnp.integer))

    def _loss(self, pooled: Array, labels: Array) -> Array:
        N = self.config.num_labels
        kind = self._problem(labels)
        pooled = pooled.astype(jnp.float32)
        if kind == "regression":
            target = labels.astype(jnp.float32)
            diff = (pooled.squeeze() - target.squeeze()) if N == 1 else (pooled - target)
            return jnp.mean(diff ** 2)
        if kind == "single_label_classification":
            return cross_entropy(pooled.reshape(-1, N), labels.reshape(-1))
        target = labels.astype(jnp.float32)  # BCE with logits, the stable form
        return jnp.mean(jnp.maximum(pooled, 0) - pooled * target + jnp.log1p(jnp.exp(-jnp.abs(pooled))))


class GPT2ForTokenClassification(_GPT2Base):
    """Per-token classifier. Shapes: input_ids (B, T) -> logits (B, T, num_labels)."""

    head = "token_classification"

    def _init_head(self, rngs):
        self.dropout = nnx.Dropout(self.config.extra.get("classifier_dropout") or 0.1,
                                   rngs=rngs)
        self.classifier = self._linear_head(self.config.n_embd, self.config.num_labels, rngs,
                                            use_bias=True)

    def __call__(self, input_ids=None, attention_mask=None, *, position_ids=None, token_type_ids=None,
                 labels=None, head_mask=None, inputs_embeds=None, output_attentions: bool = False,
                 output_hidden_states: bool = False) -> SequenceClassifierOutput:
        return self._run(input_ids, attention_mask, position_ids, token_type_ids, None, head_mask,
                         {"labels": labels}, output_attentions, output_hidden_states,
                         use_cache=False, inputs_embeds=inputs_embeds)

    def _check_labels(self, extra: dict) -> None:
        check_labels(extra.get("labels"), self.config.num_labels, "labels", "num_labels",
                     NUM_LABELS_HINT)

    def forward(self, core, extra, output_attentions, output_hidden_states):
        x, _, hidden, attn = self.body(core, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(x))
        labels = extra["labels"]
        loss = None if labels is None else cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return SequenceClassifierOutput(logits, None, hidden, attn, loss)


class GPT2ForQuestionAnswering(_GPT2Base):
    """Span extraction. Shapes: input_ids (B, T) -> start_logits, end_logits (B, T)."""

    head = "question_answering"

    def _init_head(self, rngs):
        self.qa_outputs = self._linear_head(self.config.n_embd, 2, rngs, use_bias=True)

    def __call__(self, input_ids=None, attention_mask=None, *, position_ids=None, token_type_ids=None,
                 start_positions=None, end_positions=None, head_mask=None, inputs_embeds=None,
                 output_attentions: bool = False,
                 output_hidden_states: bool = False) -> QuestionAnsweringOutput:
        extra = {"start_positions": start_positions, "end_positions": end_positions}
        return self._run(input_ids, attention_mask, position_ids, token_type_ids, None, head_mask,
                         extra, output_attentions, output_hidden_states, use_cache=False,
                         inputs_embeds=inputs_embeds)

    def forward(self, core, extra, output_attentions, output_hidden_states):
        x, _, hidden, attn = self.body(core, output_attentions, output_hidden_states)
        logits = self.qa_outputs(x)  # (B, T, 2)
        start, end = logits[..., 0], logits[..., 1]
        loss = None
        if extra["start_positions"] is not None and extra["end_positions"] is not None:
            # Positions outside the input are clamped to T and ignored, not refused: what
            # transformers' GPT2ForQuestionAnswering.forward does (models/gpt2/modeling_gpt2.py).
            T = start.shape[1]

            def span_loss(lg, pos):
                pos = jnp.clip(jnp.asarray(pos).reshape(-1), 0, T)
                return cross_entropy(lg, pos, ignore_index=T)
            loss = (span_loss(start, extra["start_positions"])
                    + span_loss(end, extra["end_positions"])) / 2
        return QuestionAnsweringOutput(start, end, hidden, attn, loss)
