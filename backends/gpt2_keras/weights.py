"""The map between Keras variables and `gpt2_core`'s canonical checkpoint names.

One literal table: attributes are named after the checkpoint, so every row is the identity
except the heads, whose checkpoint layout is `torch.nn.Linear`'s `[out, in]` while our
`Conv1D` stores `[in, out]` (transpose flag True).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import keras
import numpy as np

from gpt2_core.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

Row = tuple[str, "keras.Variable", bool]  # (canonical name, variable, transpose)


def transformer_table(t) -> list[Row]:
    """Rows of a `GPT2Transformer` (no prefix: canonical names are the hub's)."""
    rows: list[Row] = [("wte.weight", t.wte.weight, False), ("wpe.weight", t.wpe.weight, False)]
    for i, b in enumerate(t.h):
        p = f"h.{i}."
        rows += [
            (p + "ln_1.weight", b.ln_1.weight, False),
            (p + "ln_1.bias", b.ln_1.bias, False),
            (p + "attn.c_attn.weight", b.attn.c_attn.weight, False),
            (p + "attn.c_attn.bias", b.attn.c_attn.bias, False),
            (p + "attn.c_proj.weight", b.attn.c_proj.weight, False),
            (p + "attn.c_proj.bias", b.attn.c_proj.bias, False),
            (p + "ln_2.weight", b.ln_2.weight, False),
            (p + "ln_2.bias", b.ln_2.bias, False),
            (p + "mlp.c_fc.weight", b.mlp.c_fc.weight, False),
            (p + "mlp.c_fc.bias", b.mlp.c_fc.bias, False),
            (p + "mlp.c_proj.weight", b.mlp.c_proj.weight, False),
            (p + "mlp.c_proj.bias", b.mlp.c_proj.bias, False),
        ]
    rows += [("ln_f.weight", t.ln_f.weight, False), ("ln_f.bias", t.ln_f.bias, False)]
    return rows


def load_params(model, params: Mapping[str, np.ndarray], source: str = "params") -> None:
    """Assign canonical `params` to `model`'s variables. Every shape is checked first and all
    problems are reported at once; head tensors absent from `params` keep their fresh
    initialisation (logged), as when fine-tuning a new head on a base checkpoint."""
    table = model.weight_table()
    head_names = {name for name, _, _ in model.head_weight_table()}
    problems, assignments = [], []
    for name, var, transpose in table:
        if name not in params:
            if name in head_names:
                logger.warning("`%s` is not in %s: it keeps its random initialisation.", name, source)
                continue
            problems.append(f"missing tensor `{name}` (shape {list(var.shape)})")
            continue
        value = np.asarray(params[name])
        value = value.T if transpose else value
        if tuple(value.shape) != tuple(var.shape):
            problems.append(f"`{name}` has shape {list(value.shape)}; the model expects "
                            f"{list(var.shape)}{' after transposing' if transpose else ''}")
            continue
        assignments.append((var, value))
    if problems:
        raise CheckpointError(source, problems)
    unused = sorted(set(params) - {name for name, _, _ in table})
    if unused:
        logger.info("Tensors of %s not used by %s: %s", source, type(model).__name__, unused)
    for var, value in assignments:
        var.assign(value.astype(keras.backend.standardize_dtype(var.dtype)))


def get_params(model) -> dict[str, np.ndarray]:
    """The model's weights as canonical name -> NumPy array (checkpoint layouts)."""
    out = {}
    for name, var, transpose in model.weight_table():
        value = keras.ops.convert_to_numpy(var.value)
        out[name] = np.ascontiguousarray(value.T if transpose else value)
    return out
