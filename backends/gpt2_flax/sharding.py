"""Shard GPT-2 over a `Mesh` with ("data", "model") axes (Megatron-style tensor parallelism).

`c_attn` and `c_fc` are column-sharded (their output axis on "model"), the two `c_proj` are
row-sharded (their input axis on "model"), so each block needs one all-reduce after attention
and one after the MLP. The embedding tables are sharded over the vocabulary / position rows;
LayerNorm and the row-sharded biases are replicated. Batches go on "data".
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gpt2_core.config import GPT2Config
from gpt2_flax.weights import param_table

_SPECS: dict[str, P] = {  # canonical suffix -> spec of the NNX value ([in, out] kernels)
    "attn.c_attn.weight": P(None, "model"),
    "attn.c_attn.bias": P("model"),
    "mlp.c_fc.weight": P(None, "model"),
    "mlp.c_fc.bias": P("model"),
    "attn.c_proj.weight": P("model", None),
    "mlp.c_proj.weight": P("model", None),
    "wte.weight": P("model", None),
    "wpe.weight": P("model", None),
}


def param_spec(name: str) -> P:
    """The `PartitionSpec` of a canonical tensor's NNX value (replicated when not listed)."""
    key = name.split(".", 2)[2] if name.startswith("h.") else name
    return _SPECS.get(key, P())


def param_shardings(config: GPT2Config, head: str, mesh: Mesh) -> dict[str, NamedSharding]:
    """Canonical name -> `NamedSharding`; checks that the mesh divides the sharded axes."""
    if set(mesh.axis_names) != {"data", "model"}:
        raise ValueError("`mesh` must have the axes ('data', 'model'). Received: "
                         f"axis_names={mesh.axis_names}.")
    n = mesh.shape["model"]
    for dim, what in ((config.n_embd, "n_embd"), (config.inner_dim, "inner_dim"),
                      (config.vocab_size, "vocab_size"), (config.n_positions, "n_positions")):
        if dim % n:
            raise ValueError(f"The mesh's 'model' axis ({n} devices) must divide `{what}`. "
                             f"Received: {what}={dim}. Pick a 'model' size that divides it.")
    return {name: NamedSharding(mesh, param_spec(name)) for name in param_table(config, head)}


def shard_model(model, mesh: Mesh):
    """Place an existing model's parameters on `mesh` (in place); returns the model."""
    shardings = param_shardings(model.config, model.head, mesh)
    from gpt2_flax.weights import _variable
    for name, (path, _) in param_table(model.config, model.head).items():
        var = _variable(model, path)
        var.set_value(jax.device_put(var.get_value(), shardings[name]))
    return model


def shard_batch(array, mesh: Mesh) -> jax.Array:
    """Put a (B, ...) array on `mesh` with its batch axis on "data"."""
    array = np.asarray(array)
    return jax.device_put(array, NamedSharding(mesh, P("data", *([None] * (array.ndim - 1)))))


def make_mesh(data: int, model: int) -> Mesh:
    """A ("data", "model") mesh over the first data*model devices."""
    devices = np.asarray(jax.devices()[:data * model]).reshape(data, model)
    return Mesh(devices, ("data", "model"))
