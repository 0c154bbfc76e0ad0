"""The model classes users know from transformers, as thin heads on `GPT2Model`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpt2_core import GPT2Config
from gpt2_core.checks import NUM_LABELS_HINT, classification_problem
from gpt2_core.constants import IGNORE_INDEX
from gpt2_core.layout import summary_dim
from gpt2_torch import inputs
from gpt2_torch.generation import GenerationMixin
from gpt2_torch.linear import linear
from gpt2_torch.loading import GPT2PreTrainedModel
from gpt2_torch.modeling import GPT2Model
from gpt2_torch.outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    GPT2DoubleHeadsModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Mean cross-entropy of logits[..., t, :] against labels[..., t + 1], skipping -100
    (NaN when every label is ignored, as transformers). Computed in float32."""
    if labels is None:
        return None
    V = logits.shape[-1]
    # Shift the labels, not the logits: slicing logits[..., :-1, :] would copy all of them
    # (B*T*V floats); the last position gets IGNORE_INDEX instead, which leaves the mean unchanged.
    targets = F.pad(labels[..., 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def _labels(labels, shape: tuple[int, ...], device: torch.device, name: str = "labels"):
    labels = inputs.to_tensor(labels, name, device)
    if labels is not None and tuple(labels.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}. Received shape "
                         f"{tuple(labels.shape)}.")
    return labels


class _HeadModel(GPT2PreTrainedModel):
    """Holds `transformer` (so state-dict keys get the `transformer.` prefix, as in transformers)."""

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(self.config, attn_implementation=attn_implementation,
                                     device=device, dtype=dtype)
        self.transformer.config = self.config  # one object: assignments reach the transformer

    def _finish_init(self) -> None:
        if self.transformer.wte.weight.device.type != "meta":
            self.init_weights()

    def set_attn_implementation(self, name: str) -> None:
        self.transformer.set_attn_implementation(name)

    @property
    def attn_implementation(self) -> str:
        return self.transformer.attn_implementation

    def _transformer(self, input_ids, past_key_values, attention_mask, token_type_ids, position_ids,
                     head_mask, inputs_embeds, use_cache, output_attentions,
                     output_hidden_states) -> BaseModelOutputWithPast:
        return self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask,
            inputs_embeds=inputs_embeds, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True)


class GPT2LMHeadModel(GenerationMixin, _HeadModel):
    """GPT-2 with the language-modelling head (tied to `wte` unless `tie_word_embeddings=False`)."""

    head = "lm"
    architecture = "GPT2LMHeadModel"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(config, attn_implementation=attn_implementation, device=device, dtype=dtype)
        config = self.config  # (converted from a transformers config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False, device=device,
                                     dtype=dtype)
        self._finish_init()

    @property
    def lm_weight(self) -> torch.Tensor:
        """(V, C): `wte.weight` when tied, else `lm_head.weight`."""
        if self.config.tie_word_embeddings:
            return self.transformer.wte.weight
        return self.lm_head.weight

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, past_key_values=None,
                                      attention_mask: torch.Tensor | None = None,
                                      inputs_embeds: torch.Tensor | None = None,
                                      use_cache: bool | None = None, **kwargs) -> dict:
        """The forward arguments of one decoding step, in transformers' protocol (peft's
        `PeftModelForCausalLM` wraps it). `generate` keeps its own cache and positions and does
        not call it: this is for loops written against transformers.

        Shapes: input_ids (B, S) of every token so far -> the ones past_key_values lacks."""
        past_len = 0 if not past_key_values else past_key_values[0][0].shape[2]
        model_inputs: dict = {"past_key_values": past_key_values, "attention_mask": attention_mask,
                              "use_cache": use_cache}
        if inputs_embeds is not None and past_len == 0:
            model_inputs["inputs_embeds"] = inputs_embeds
        else:
            model_inputs["input_ids"] = input_ids[:, past_len:]
        return model_inputs  # (forward derives the positions from attention_mask)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return linear(hidden, self.lm_weight, None)  # (B, T, V)

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, labels=None,
                use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> CausalLMOutputWithPast | tuple:
        """Shapes: input_ids (B, T) -> logits (B, T, V). `labels` (B, T) are shifted inside;
        -100 is ignored. Other arguments as `GPT2Model.forward`."""
        out = self._transformer(input_ids, past_key_values, attention_mask, token_type_ids,
                                position_ids, head_mask, inputs_embeds, use_cache,
                                output_attentions, output_hidden_states)
        h = out.last_hidden_state
        logits = self.lm_logits(h)
        labels = _labels(labels, h.shape[:2], h.device)
        inputs.check_labels(labels, self.config.vocab_size)
        loss = causal_lm_loss(logits, labels)
        result = CausalLMOutputWithPast(loss, logits, out.past_key_values, out.hidden_states,
                                        out.attentions)
        return result if self._return_dict(return_dict) else result.to_tuple()


class SequenceSummary(nn.Module):
    """The double-heads model's multiple-choice summary (`config.summary_*`).

    'last', 'first' and 'mean' summarise each choice over its tokens. (transformers indexes
    dim 1 of the (B, nc, T, C) states there, i.e. picks or averages choices; its default
    'cls_index' is unaffected and matches ours.)
    """

    def __init__(self, config: GPT2Config, device=None, dtype=None) -> None:
        super().__init__()
        self.summary_type = config.summary_type
        if self.summary_type == "attn":
            raise NotImplementedError("summary_type='attn' is not defined for GPT-2 (as in "
                                      "transformers). Use 'cls_index', 'last', 'first' or 'mean'.")
        self.summary = (nn.Linear(config.n_embd, summary_dim(config), device=device, dtype=dtype)
                        if config.summary_use_proj else nn.Identity())
        self.activation = torch.tanh if config.summary_activation == "tanh" else (lambda x: x)
        self.first_dropout = nn.Dropout(config.summary_first_dropout)
        self.last_dropout = nn.Dropout(float(config.extra.get("summary_last_dropout", 0.0)))

    def forward(self, h: torch.Tensor, cls_index: torch.Tensor | None) -> torch.Tensor:
        """Shapes: h (B, nc, T, C), cls_index (B, nc) -> (B, nc, D)."""
        if self.summary_type == "last":
            x = h[..., -1, :]
        elif self.summary_type == "first":
            x = h[..., 0, :]
        elif self.summary_type == "mean":
            x = h.mean(dim=-2)
        else:
            if cls_index is None:
                cls_index = torch.full(h.shape[:-2], h.shape[-2] - 1, dtype=torch.long, device=h.device)
            idx = cls_index[..., None, None].expand(*cls_index.shape, 1, h.shape[-1])
            x = h.gather(-2, idx).squeeze(-2)
        return self.last_dropout(self.activation(self.summary(self.first_dropout(x))))


class GPT2DoubleHeadsModel(_HeadModel):
    """LM head plus a multiple-choice head. Inputs are (B, num_choices, T)."""

    head = "double_heads"
    architecture = "GPT2DoubleHeadsModel"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(config, attn_implementation=attn_implementation, device=device, dtype=dtype)
        config = self.config  # (converted from a transformers config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False, device=device,
                                     dtype=dtype)
        self.multiple_choice_head = SequenceSummary(config, device, dtype)
        self._finish_init()

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, mc_token_ids=None,
                labels=None, mc_labels=None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> GPT2DoubleHeadsModelOutput | tuple:
        """Shapes: input_ids (B, nc, T) -> logits (B, nc, T, V), mc_logits (B, nc) (or
        (B, nc, D) when the summary projects to D > 1); mc_token_ids (B, nc); mc_labels (B,)."""
        lead = self._lead_shape(input_ids, inputs_embeds)
        flat = [None if a is None else _flatten(inputs.to_tensor(a, n, self.device, n != "inputs_embeds"))
                for a, n in ((input_ids, "input_ids"), (attention_mask, "attention_mask"),
                             (token_type_ids, "token_type_ids"), (position_ids, "position_ids"),
                             (inputs_embeds, "inputs_embeds"))]
        out = self._transformer(flat[0], past_key_values, flat[1], flat[2], flat[3], head_mask,
                                flat[4], use_cache, output_attentions, output_hidden_states)
        h = out.last_hidden_state.view(*lead, *out.last_hidden_state.shape[1:])  # (B, nc, T, C)
        weight = self.transformer.wte.weight if self.config.tie_word_embeddings else self.lm_head.weight
        logits = linear(h, weight, None)
        mc_token_ids = _labels(mc_token_ids, lead, h.device, "mc_token_ids")
        mc_logits = self.multiple_choice_head(h, mc_token_ids).squeeze(-1)
        mc_labels = inputs.to_tensor(mc_labels, "mc_labels", h.device)
        # transformers' CrossEntropyLoss() for both: classes in range, -100 skipped
        inputs.check_labels(mc_labels, lead[1], "mc_labels", "num_choices")
        mc_loss = None if mc_labels is None else F.cross_entropy(
            mc_logits.float().view(-1, mc_logits.size(-1)), mc_labels.view(-1))
        labels = _labels(labels, h.shape[:-1], h.device)
        inputs.check_labels(labels, self.config.vocab_size)
        loss = causal_lm_loss(logits, labels)
        hidden = None if out.hidden_states is None else tuple(
            x.view(*lead, *x.shape[1:]) for x in out.hidden_states)
        result = GPT2DoubleHeadsModelOutput(loss, mc_loss, logits, mc_logits, out.past_key_values,
                                            hidden, out.attentions)
        return result if self._return_dict(return_dict) else result.to_tuple()

    @staticmethod
    def _lead_shape(input_ids, inputs_embeds) -> tuple[int, int]:
        x = input_ids if input_ids is not None else inputs_embeds
        shape = tuple(x.shape)
        want = 3 if input_ids is not None else 4
        if len(shape) != want:
            raise ValueError(f"GPT2DoubleHeadsModel takes (batch, num_choices, seq) inputs. "
                             f"Received shape {shape}.")
        return shape[0], shape[1]


def _flatten(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.reshape(-1, *x.shape[2:])


class GPT2ForSequenceClassification(_HeadModel):
    """Classifies each sequence by its last non-pad token (`config.pad_token_id`)."""

    head = "sequence_classification"
    architecture = "GPT2ForSequenceClassification"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(config, attn_implementation=attn_implementation, device=device, dtype=dtype)
        config = self.config  # (converted from a transformers config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False, device=device, dtype=dtype)
        self._finish_init()

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, labels=None,
                use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> SequenceClassifierOutputWithPast | tuple:
        """Shapes: input_ids (B, T) -> logits (B, num_labels). `labels`: (B,) class ids,
        (B,) or (B, num_labels) floats for regression, (B, num_labels) for multi-label."""
        out = self._transformer(input_ids, past_key_values, attention_mask, token_type_ids,
                                position_ids, head_mask, inputs_embeds, use_cache,
                                output_attentions, output_hidden_states)
        logits = self.score(out.last_hidden_state)  # (B, T, N)
        pooled = logits[torch.arange(logits.shape[0], device=logits.device),
                        self._last_token(input_ids, logits.shape[0])]
        loss = self._loss(pooled, labels)
        result = SequenceClassifierOutputWithPast(loss, pooled, out.past_key_values,
                                                  out.hidden_states, out.attentions)
        return result if self._return_dict(return_dict) else result.to_tuple()

    def _last_token(self, input_ids, B: int) -> torch.Tensor | int:
        pad = self.config.pad_token_id
        if pad is None and B != 1:
            raise ValueError("GPT2ForSequenceClassification needs `config.pad_token_id` to find "
                             f"the last token of each row when batch size > 1. Received batch "
                             f"size {B} and pad_token_id=None. Set pad_token_id in the config.")
        if pad is None or input_ids is None:
            return -1
        ids = inputs.to_tensor(input_ids, "input_ids", self.device)
        # the rightmost non-pad token handles left and right padding alike
        idx = torch.arange(ids.shape[-1], device=ids.device)
        return (idx * (ids != pad)).argmax(-1)

    def _loss(self, pooled: torch.Tensor, labels) -> torch.Tensor | None:
        if labels is None:
            return None
        labels = inputs.to_tensor(labels, "labels", pooled.device, integer=False)
        N = self.config.num_labels
        problem = classification_problem(self.config, labels.dtype in (torch.long, torch.int))
        pooled = pooled.float()
        if problem == "regression":
            if N == 1:
                return F.mse_loss(pooled.squeeze(), labels.float().squeeze())
            return F.mse_loss(pooled, labels.float())
        if problem == "single_label_classification":
            inputs.check_labels(labels.long(), N, "labels", "num_labels", NUM_LABELS_HINT)
            return F.cross_entropy(pooled.view(-1, N), labels.long().view(-1))
        return F.binary_cross_entropy_with_logits(pooled, labels.float())


class GPT2ForTokenClassification(_HeadModel):
    head = "token_classification"
    architecture = "GPT2ForTokenClassification"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(config, attn_implementation=attn_implementation, device=device, dtype=dtype)
        config = self.config  # (converted from a transformers config)
        p = config.extra.get("classifier_dropout", config.extra.get("hidden_dropout"))
        self.dropout = nn.Dropout(0.1 if p is None else float(p))  # transformers' fallback 0.1
        self.classifier = nn.Linear(config.n_embd, config.num_labels, device=device, dtype=dtype)
        self._finish_init()

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, labels=None,
                use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> TokenClassifierOutput | tuple:
        """Shapes: input_ids (B, T) -> logits (B, T, num_labels); labels (B, T), -100 ignored."""
        out = self._transformer(input_ids, past_key_values, attention_mask, token_type_ids,
                                position_ids, head_mask, inputs_embeds, use_cache,
                                output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        labels = _labels(labels, logits.shape[:2], logits.device)
        inputs.check_labels(labels, self.config.num_labels, "labels", "num_labels", NUM_LABELS_HINT)
        loss = None if labels is None else F.cross_entropy(
            logits.float().view(-1, self.config.num_labels), labels.view(-1), ignore_index=IGNORE_INDEX)
        result = TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if self._return_dict(return_dict) else result.to_tuple()


class GPT2ForQuestionAnswering(_HeadModel):
    head = "question_answering"
    architecture = "GPT2ForQuestionAnswering"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(config, attn_implementation=attn_implementation, device=device, dtype=dtype)
        config = self.config  # (converted from a transformers config)
        self.qa_outputs = nn.Linear(config.n_embd, 2, device=device, dtype=dtype)
        self._finish_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, start_positions=None, end_positions=None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> QuestionAnsweringModelOutput | tuple:
        """Shapes: input_ids (B, T) -> start_logits, end_logits (B, T); positions (B,).
        Positions outside [0, T) are ignored by the loss (as transformers)."""
        out = self._transformer(input_ids, None, attention_mask, token_type_ids, position_ids,
                                head_mask, inputs_embeds, False, output_attentions,
                                output_hidden_states)
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).unbind(-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            # No range check, as transformers: GPT2ForQuestionAnswering.forward
            # (models/gpt2/modeling_gpt2.py) clamps positions to [0, T] and ignores T, so a span
            # outside the input is skipped by the loss, not an error.
            T = start_logits.shape[1]
            s = inputs.to_tensor(start_positions, "start_positions", start_logits.device).reshape(-1)
            e = inputs.to_tensor(end_positions, "end_positions", start_logits.device).reshape(-1)
            loss = (F.cross_entropy(start_logits.float(), s.clamp(0, T), ignore_index=T)
                    + F.cross_entropy(end_logits.float(), e.clamp(0, T), ignore_index=T)) / 2
        result = QuestionAnsweringModelOutput(loss, start_logits.contiguous(), end_logits.contiguous(),
                                              out.hidden_states, out.attentions)
        return result if self._return_dict(return_dict) else result.to_tuple()
