"""Map canonical GPT-2 tensors (`gpt2_core.layout`) onto NNX attributes, and back.

One literal table: canonical name -> attribute path, plus a transpose flag. Transformer matrices
are `[in, out]` in both GPT-2's `Conv1D` and `nnx.Linear`, so only the heads (torch `Linear`
layout `[out, in]`) transpose. Orbax checkpointing of the NNX state lives here too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gpt2_core import layout
from gpt2_core.config import GPT2Config
from gpt2_core.safetensors_io import release_pages

Path = tuple[str | int, ...]

_TOP: dict[str, Path] = {
    "wte.weight": ("wte", "embedding"),
    "wpe.weight": ("wpe", "embedding"),
    "ln_f.weight": ("ln_f", "scale"),
    "ln_f.bias": ("ln_f", "bias"),
}
_BLOCK: dict[str, Path] = {
    "ln_1.weight": ("ln_1", "scale"),
    "ln_1.bias": ("ln_1", "bias"),
    "attn.c_attn.weight": ("attn", "c_attn", "kernel"),
    "attn.c_attn.bias": ("attn", "c_attn", "bias"),
    "attn.c_proj.weight": ("attn", "c_proj", "kernel"),
    "attn.c_proj.bias": ("attn", "c_proj", "bias"),
    "ln_2.weight": ("ln_2", "scale"),
    "ln_2.bias": ("ln_2", "bias"),
    "mlp.c_fc.weight": ("mlp", "c_fc", "kernel"),
    "mlp.c_fc.bias": ("mlp", "c_fc", "bias"),
    "mlp.c_proj.weight": ("mlp", "c_proj", "kernel"),
    "mlp.c_proj.bias": ("mlp", "c_proj", "bias"),
}
_HEADS: dict[str, tuple[Path, bool]] = {  # name -> (path, transpose [out, in] -> [in, out])
    "lm_head.weight": (("lm_head", "kernel"), True),
    "multiple_choice_head.summary.weight": (("multiple_choice_head", "summary", "kernel"), True),
    "multiple_choice_head.summary.bias": (("multiple_choice_head", "summary", "bias"), False),
    "score.weight": (("score", "kernel"), True),
    "classifier.weight": (("classifier", "kernel"), True),
    "classifier.bias": (("classifier", "bias"), False),
    "qa_outputs.weight": (("qa_outputs", "kernel"), True),
    "qa_outputs.bias": (("qa_outputs", "bias"), False),
}


def param_table(config: GPT2Config, head: str) -> dict[str, tuple[Path, bool]]:
    """Canonical name -> (attribute path from the model, transpose flag), in layout order."""
    table: dict[str, tuple[Path, bool]] = {}
    for spec in layout.weight_layout(config, head):
        if spec.name in _TOP:
            table[spec.name] = (("transformer",) + _TOP[spec.name], False)
        elif spec.name.startswith("h."):
            _, i, rest = spec.name.split(".", 2)
            table[spec.name] = (("transformer", "h", int(i)) + _BLOCK[rest], False)
        else:
            table[spec.name] = _HEADS[spec.name]
    return table


def _variable(model: nnx.Module, path: Path) -> nnx.Variable:
    obj = model
    for key in path:
        obj = obj[key] if isinstance(key, int) else getattr(obj, key)
    return obj


def to_canonical(model: nnx.Module, config: GPT2Config, head: str) -> dict[str, np.ndarray]:
    """The model's parameters under canonical names, in canonical layouts (NumPy)."""
    params = {}
    for name, (path, transpose) in param_table(config, head).items():
        value = np.asarray(jax.device_get(_variable(model, path).get_value()))
        params[name] = value.T if transpose else value
    return params


def build(create: Callable[[], nnx.Module], config: GPT2Config, head: str,
          params: Mapping[str, np.ndarray], param_dtype,
          shardings: Mapping[str, jax.sharding.Sharding] | None = None) -> nnx.Module:
    """A model from `create` with `params` in place, without running the random initialisers.

    The structure comes from `nnx.eval_shape`; the non-parameter state (dropout RNG keys) from
    a compiled `create` whose parameter initialisers XLA drops as dead code.
    """
    abstract = nnx.eval_shape(create)
    graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)
    rest = jax.jit(lambda: nnx.split(create(), nnx.Param, ...)[2])()
    not_finite = []
    for name, (path, transpose) in param_table(config, head).items():
        value = np.asarray(params[name])
        array = jnp.asarray(value.T if transpose else value, dtype=param_dtype)
        if shardings is not None:
            array = jax.device_put(array, shardings[name])
        array.block_until_ready()
        release_pages(value)
        # checked on the copy, after the file pages are dropped: checking the (memory-mapped)
        # checkpoint first would keep every page resident, a second copy in RSS
        if not bool(jnp.isfinite(array).all()):
            not_finite.append(f"`{name}` contains NaN or inf values")
        _variable(abstract, path).set_value(array)
    if not_finite:
        from gpt2_core.checkpoint import CheckpointError
        raise CheckpointError("<params>", not_finite)
    _, param_state, _ = nnx.split(abstract, nnx.Param, ...)
    return nnx.merge(graphdef, param_state, rest)


def save_state(model: nnx.Module, directory: str | os.PathLike[str]) -> None:
    """Write the model's full NNX state (parameters and RNG state) with Orbax. To resume
    training, save the optimizer too: `gpt2_flax.training.save_checkpoint`."""
    import orbax.checkpoint as ocp  # optional at import time: only checkpointing needs it

    _, state = nnx.split(model)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(os.fspath(directory)), state)


def restore_state(model: nnx.Module, directory: str | os.PathLike[str]) -> nnx.Module:
    """Load an Orbax checkpoint written by `save_state` into `model` (same config and dtypes);
    returns the model, updated in place."""
    import orbax.checkpoint as ocp

    graphdef, abstract = nnx.split(model)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(
        a, "sharding", None)), abstract)
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(os.path.abspath(os.fspath(directory)), abstract)
    nnx.update(model, state)
    return model
