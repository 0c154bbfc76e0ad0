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
from gpt2_core.safetensors_io import release_pages

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


def load_params(model, params: Mapping[str, np.ndarray], source: str = "params",
                init_missing: bool = False, loaded: frozenset[str] = frozenset(),
                non_finite: tuple[str, ...] = ()) -> None:
    """Assign canonical `params` to `model`'s variables. Every shape is checked first and all
    problems (also NaN or inf values, found while copying) are reported at once; head tensors
    absent from `params` keep their initialisation (logged), as when fine-tuning a new head on
    a base checkpoint (`init_missing`: draw GPT-2's N(0, 0.02) for them, for a model built
    under `layers.initial_values`). Names in `loaded` are already in place (`CheckpointValues`;
    `non_finite` lists those it found holding NaN or inf).

    Memory: each tensor is copied into its variable in slices of about `CHUNK_BYTES`, and the
    file pages it was read from are dropped, so loading peaks near one copy of the weights.
    """
    table = model.weight_table()
    head_names = {name for name, _, _ in model.head_weight_table()}
    problems, assignments = [], []
    for name, var, transpose in table:
        if name not in params:
            if name in head_names:
                logger.warning("`%s` is not in %s: it keeps its random initialisation.", name, source)
                if init_missing and len(var.shape) == 2:
                    var.assign(keras.initializers.RandomNormal(stddev=0.02)(var.shape, var.dtype))
                continue
            problems.append(f"missing tensor `{name}` (shape {list(var.shape)})")
            continue
        value = np.asarray(params[name])
        value = value.T if transpose else value
        if tuple(value.shape) != tuple(var.shape):
            problems.append(f"`{name}` has shape {list(value.shape)}; the model expects "
                            f"{list(var.shape)}{' after transposing' if transpose else ''}")
            continue
        assignments.append((name, var, value))
    if problems:
        raise CheckpointError(source, problems)
    unused = sorted(set(params) - {name for name, _, _ in table})
    if unused:
        logger.info("Tensors of %s not used by %s: %s", source, type(model).__name__, unused)
    problems = [f"`{name}` contains NaN or inf values" for name in non_finite]
    for name, var, value in assignments:
        if name in loaded:
            continue
        if not _assign(var, value):
            problems.append(f"`{name}` contains NaN or inf values")
        release_pages(params[name])
    if problems:
        raise CheckpointError(source, problems)


CHUNK_BYTES = 8 << 20


def transformer_matrices(n_layer: int) -> list[str]:
    """The transformer's `Embedding`/`Conv1D` weights in the order `GPT2Transformer` creates
    them (checked after building by `CheckpointValues.verify`)."""
    names = ["wte.weight", "wpe.weight"]
    for i in range(n_layer):
        names += [f"h.{i}.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    return names


class CheckpointValues:
    """A `layers.initial_values` provider: the checkpoint's transformer matrices, served in
    creation order, each copied once (a slice at a time, with the finite check, dropping the
    file pages behind it) so that the variables are born holding them."""

    def __init__(self, params: Mapping[str, np.ndarray], names: list[str]):
        self.params, self.queue = params, list(names)
        self.served: list[str] = []
        self.non_finite: list[str] = []

    def __call__(self, shape: tuple, dtype) -> np.ndarray | None:
        if not self.queue:
            return None  # the head's layers: `load_params` assigns them
        name = self.queue[0]
        value = self.params.get(name)
        if value is None or tuple(value.shape) != tuple(shape):
            self.queue = []  # out of step: `load_params` assigns (and checks) everything left
            return None
        self.queue.pop(0)
        out = np.empty(value.shape, keras.backend.standardize_dtype(dtype or "float32"))
        rows = max(1, CHUNK_BYTES * value.shape[0] // max(value.nbytes, 1))
        finite = True
        for i in range(0, value.shape[0], rows):
            part = value[i:i + rows]
            finite = finite and bool(np.isfinite(part).all())
            out[i:i + rows] = part
            release_pages(part)
        if not finite:
            self.non_finite.append(name)
        self.served.append(name)
        return out

    def verify(self, model) -> set[str]:
        """The served names whose variable holds their first row (all of them unless the
        creation order changed); the others are left to `load_params`."""
        table = {name: var for name, var, _ in model.weight_table()}
        ok = set()
        for name in self.served:
            first = np.asarray(keras.ops.convert_to_numpy(table[name][0]))
            if np.array_equal(first, np.asarray(self.params[name][0], first.dtype), equal_nan=True):
                ok.add(name)
            else:
                logger.warning("`%s` was not created in the expected order; assigning it.", name)
        return ok


def _assign(var, value: np.ndarray) -> bool:
    """Copy `value` into `var` (slice by slice on TensorFlow, in place); whether it was finite.

    Whole-tensor conversions would hold two extra copies of the largest tensor (150 MB for
    GPT-2 small's `wte`) next to the model.
    """
    dtype = keras.backend.standardize_dtype(var.dtype)
    target = var.value
    sliced = keras.backend.backend() == "tensorflow" and value.ndim >= 1 and hasattr(target, "assign")
    if not sliced or value.nbytes <= CHUNK_BYTES:
        finite = bool(np.isfinite(value).all())
        var.assign(value.astype(dtype, copy=False))
        return finite
    rows = max(1, CHUNK_BYTES * value.shape[0] // value.nbytes)
    finite = True
    for i in range(0, value.shape[0], rows):
        part = value[i:i + rows]
        finite = finite and bool(np.isfinite(part).all())
        target[i:i + rows].assign(part.astype(dtype, copy=False))
        release_pages(part)
    return finite


def get_params(model) -> dict[str, np.ndarray]:
    """The model's weights as canonical name -> NumPy array (checkpoint layouts)."""
    out = {}
    for name, var, transpose in model.weight_table():
        value = keras.ops.convert_to_numpy(var.value)
        out[name] = np.ascontiguousarray(value.T if transpose else value)
    return out
