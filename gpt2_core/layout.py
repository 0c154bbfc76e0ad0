"""The weight layout: one row per tensor, and the checkpoint layouts it maps to.

Canonical names are those of a Hugging Face hub GPT-2 checkpoint (`h.0.attn.c_attn.weight`).
The transformer's matrices keep GPT-2's `Conv1D` layout `[in, out]`; the heads keep
`torch.nn.Linear`'s `[out, in]`. A backend maps its attributes to these names with a literal
table plus a transpose flag.

Checkpoint layouts found in the wild, all read by `to_canonical`:

| layout | example name | notes |
|---|---|---|
| hub | `h.0.attn.c_attn.weight` | may hold `h.0.attn.bias`/`masked_bias` buffers (ignored) |
| save_pretrained | `transformer.h.0.attn.c_attn.weight` | `lm_head.weight` only when untied |
| openai_tf | `model/h0/attn/c_attn/w`, shape `[1, in, out]` | OpenAI's TensorFlow release |
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from gpt2_core.config import GPT2Config

HEADS = ("base", "lm", "double_heads", "sequence_classification", "token_classification",
         "question_answering")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model.

    Attributes:
        name: canonical checkpoint name.
        shape: its shape for the config at hand.
        layout: `"in_out"` (Conv1D), `"out_in"` (Linear), `"rows"` (embedding table) or `"vector"`.
        init: `"normal"` (std `initializer_range`), `"residual"` (std
            `initializer_range / sqrt(2 n_layer)`), `"zeros"` or `"ones"`.
    """

    name: str
    shape: tuple[int, ...]
    layout: str
    init: str


def block_specs(config: GPT2Config, i: int) -> list[TensorSpec]:
    C, I = config.n_embd, config.inner_dim
    p = f"h.{i}."
    return [
        TensorSpec(p + "ln_1.weight", (C,), "vector", "ones"),
        TensorSpec(p + "ln_1.bias", (C,), "vector", "zeros"),
        TensorSpec(p + "attn.c_attn.weight", (C, 3 * C), "in_out", "normal"),
        TensorSpec(p + "attn.c_attn.bias", (3 * C,), "vector", "zeros"),
        TensorSpec(p + "attn.c_proj.weight", (C, C), "in_out", "residual"),
        TensorSpec(p + "attn.c_proj.bias", (C,), "vector", "zeros"),
        TensorSpec(p + "ln_2.weight", (C,), "vector", "ones"),
        TensorSpec(p + "ln_2.bias", (C,), "vector", "zeros"),
        TensorSpec(p + "mlp.c_fc.weight", (C, I), "in_out", "normal"),
        TensorSpec(p + "mlp.c_fc.bias", (I,), "vector", "zeros"),
        TensorSpec(p + "mlp.c_proj.weight", (I, C), "in_out", "residual"),
        TensorSpec(p + "mlp.c_proj.bias", (C,), "vector", "zeros"),
    ]


def summary_dim(config: GPT2Config) -> int:
    """Output width of the double-heads model's `SequenceSummary` projection: one score per
    choice (Hugging Face's `GPT2DoubleHeadsModel` sets `num_labels = 1`), or `n_embd` when
    `summary_proj_to_labels` is off."""
    return 1 if config.summary_proj_to_labels else config.n_embd


def head_specs(config: GPT2Config, head: str) -> list[TensorSpec]:
    """The tensors a head adds on top of the transformer (`GPT2Model`)."""
    C, V, N = config.n_embd, config.vocab_size, config.num_labels
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {HEADS}. Received: head={head!r}.")
    specs: list[TensorSpec] = []
    if head in ("lm", "double_heads") and not config.tie_word_embeddings:
        specs.append(TensorSpec("lm_head.weight", (V, C), "out_in", "normal"))
    if head == "double_heads" and config.summary_use_proj:
        D = summary_dim(config)
        specs += [
            TensorSpec("multiple_choice_head.summary.weight", (D, C), "out_in", "normal"),
            TensorSpec("multiple_choice_head.summary.bias", (D,), "vector", "zeros"),
        ]
    elif head == "sequence_classification":
        specs.append(TensorSpec("score.weight", (N, C), "out_in", "normal"))
    elif head == "token_classification":
        specs += [
            TensorSpec("classifier.weight", (N, C), "out_in", "normal"),
            TensorSpec("classifier.bias", (N,), "vector", "zeros"),
        ]
    elif head == "question_answering":
        specs += [
            TensorSpec("qa_outputs.weight", (2, C), "out_in", "normal"),
            TensorSpec("qa_outputs.bias", (2,), "vector", "zeros"),
        ]
    return specs


def weight_layout(config: GPT2Config, head: str = "lm") -> list[TensorSpec]:
    """Every tensor of a GPT-2 model with the given head, in checkpoint order."""
    C = config.n_embd
    specs = [
        TensorSpec("wte.weight", (config.vocab_size, C), "rows", "normal"),
        TensorSpec("wpe.weight", (config.n_positions, C), "rows", "normal"),
    ]
    for i in range(config.n_layer):
        specs += block_specs(config, i)
    specs += [
        TensorSpec("ln_f.weight", (C,), "vector", "ones"),
        TensorSpec("ln_f.bias", (C,), "vector", "zeros"),
    ]
    return specs + head_specs(config, head)


def num_parameters(config: GPT2Config, head: str = "lm") -> int:
    """Parameter count (a tied `lm_head` counts once, as in the GPT-2 paper's model sizes)."""
    return sum(int(np.prod(s.shape)) for s in weight_layout(config, head))


HEAD_PREFIXES = ("lm_head.", "multiple_choice_head.", "score.", "classifier.", "qa_outputs.")
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")

_OPENAI_BLOCK = re.compile(r"^model/h(\d+)/(ln_1|ln_2|attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj)/(w|b|g)$")
_OPENAI_TOP = {"model/wte": "wte.weight", "model/wpe": "wpe.weight",
               "model/ln_f/g": "ln_f.weight", "model/ln_f/b": "ln_f.bias"}
_OPENAI_LEAF = {"w": "weight", "g": "weight", "b": "bias"}


def detect_layout(names: list[str] | tuple[str, ...]) -> str:
    """`"openai_tf"`, `"save_pretrained"` or `"hub"`, from a checkpoint's tensor names."""
    if any(n.startswith("model/") for n in names):
        return "openai_tf"
    if any(n.startswith("transformer.") for n in names):
        return "save_pretrained"
    return "hub"


def canonical_name(name: str, layout: str) -> str | None:
    """The canonical name of checkpoint tensor `name`, or None for a buffer to ignore."""
    if layout == "openai_tf":
        if name in _OPENAI_TOP:
            return _OPENAI_TOP[name]
        m = _OPENAI_BLOCK.match(name)
        if m:
            return f"h.{m[1]}.{m[2].replace('/', '.')}.{_OPENAI_LEAF[m[3]]}"
        return name
    if layout == "save_pretrained" and name.startswith("transformer."):
        name = name[len("transformer."):]
    if name.endswith(BUFFER_SUFFIXES):
        return None
    return name


def to_canonical(state: Mapping[str, np.ndarray], layout: str | None = None
                 ) -> tuple[dict[str, np.ndarray], str]:
    """Rename a checkpoint's tensors to canonical names. Returns `(params, layout)`.

    OpenAI TensorFlow matrices `[1, in, out]` lose their leading axis. Buffers are dropped.
    Unknown names pass through unchanged, for the validator to report.
    """
    layout = layout or detect_layout(list(state))
    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        canon = canonical_name(name, layout)
        if canon is None:
            continue
        if layout == "openai_tf" and value.ndim == 3 and value.shape[0] == 1:
            value = value[0]
        out[canon] = value
    return out, layout


def to_checkpoint(params: Mapping[str, np.ndarray], layout: str = "save_pretrained"
                  ) -> dict[str, np.ndarray]:
    """Name canonical params for a checkpoint layout (`"save_pretrained"` or `"hub"`)."""
    if layout not in ("save_pretrained", "hub"):
        raise ValueError(
            f"`layout` must be 'save_pretrained' or 'hub'. Received: layout={layout!r}."
        )
    if layout == "hub":
        return dict(params)
    return {
        (n if n.startswith(HEAD_PREFIXES) else "transformer." + n): v for n, v in params.items()
    }


# Names that identify other architectures, for a useful hint when one is loaded by mistake.
FOREIGN_MARKERS = {
    "self_attn.q_proj": "a Llama/Mistral-style checkpoint",
    "attention.query_key_value": "a GPT-NeoX/Falcon-style checkpoint",
    "attention.self.query": "a BERT-style checkpoint",
    "attn.q_proj": "a GPT-J/GPT-Neo-style checkpoint",
    "decoder.layers": "an OPT/BART-style checkpoint",
}
