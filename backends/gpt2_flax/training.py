"""One training step: `nnx.value_and_grad` of the causal-LM loss, then optax AdamW; and resuming
training from an Orbax `CheckpointManager` (model, optimizer and dropout RNG state).

    >>> import orbax.checkpoint as ocp
    >>> with ocp.CheckpointManager(directory) as manager:       # doctest: +SKIP
    ...     save_checkpoint(manager, step, model, optimizer)
    >>> model, optimizer = GPT2LMHeadModel(config), make_optimizer(...)  # doctest: +SKIP
    >>> with ocp.CheckpointManager(directory) as manager:       # doctest: +SKIP
    ...     step = restore_checkpoint(manager, model, optimizer)  # the latest step
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import optax
from flax import nnx

from gpt2_flax.models import GPT2LMHeadModel

if TYPE_CHECKING:
    import orbax.checkpoint as ocp


@functools.lru_cache(maxsize=16)
def _adamw(learning_rate: float, weight_decay: float, b1: float, b2: float):
    # one transformation object per setting: it is static in the optimizer's graph, so a new
    # optimizer (one restored from a checkpoint, say) reuses the compiled `train_step`
    return optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)


def make_optimizer(model: GPT2LMHeadModel, learning_rate: float = 3e-4,
                   weight_decay: float = 0.1, b1: float = 0.9, b2: float = 0.95) -> nnx.Optimizer:
    """AdamW over the model's `nnx.Param`s (GPT-2/nanoGPT's betas by default)."""
    try:
        tx = _adamw(learning_rate, weight_decay, b1, b2)
    except TypeError:  # an unhashable setting (an array learning rate): a transformation of its own
        tx = _adamw.__wrapped__(learning_rate, weight_decay, b1, b2)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def loss_and_grads(model: GPT2LMHeadModel, input_ids, labels, attention_mask=None):
    """The mean causal-LM loss and its gradients (an `nnx.State` shaped like the params)."""
    def loss_fn(m):
        return m(input_ids, attention_mask, labels=labels, use_cache=False).loss
    return nnx.value_and_grad(loss_fn)(model)


@nnx.jit
def train_step(model: GPT2LMHeadModel, optimizer: nnx.Optimizer, input_ids, labels,
               attention_mask=None) -> jax.Array:
    """Shapes: input_ids, labels (B, T) -> loss (). Updates model and optimizer in place.
    Call `model.train()` first to enable dropout."""
    loss, grads = loss_and_grads(model, input_ids, labels, attention_mask)
    optimizer.update(model, grads)
    return loss


# ---- resuming training with Orbax ------------------------------------------------------------
# `nnx.state(model)` holds the parameters and every dropout layer's RNG key and call counter;
# `nnx.state(optimizer)` the step count and the optax state (AdamW's moments). Both are restored:
# a fresh optimizer (zero moments, step 0) or fresh dropout counters would make the resumed run
# diverge from the uninterrupted one.


def save_checkpoint(manager: ocp.CheckpointManager, step: int, model: nnx.Module,
                    optimizer: nnx.Optimizer, *, force: bool = False) -> bool:
    """Save model and optimizer state as `step` of an Orbax `CheckpointManager`, as the items
    "model" and "optimizer" (`ocp.args.StandardSave` of their `nnx.state`).

    The manager's options (`save_interval_steps`, `max_to_keep`, asynchronous writes, ...)
    apply; call `manager.wait_until_finished()` (or close it) before reading the files.

    Returns:
        Whether the manager saved (its `should_save(step)`, or `force`).
    """
    import orbax.checkpoint as ocp  # optional at import time: only checkpointing needs it

    if not manager.directory.is_absolute():  # Orbax refuses it only midway, leaving a temp folder
        raise ValueError(f"`manager` must be built on an absolute directory: Orbax writes only "
                         f"there. Received: {str(manager.directory)!r}. Pass "
                         "`os.path.abspath(directory)` to `ocp.CheckpointManager`.")
    items = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
    return manager.save(step, args=ocp.args.Composite(
        **{name: ocp.args.StandardSave(state) for name, state in items.items()}), force=force)


def restore_checkpoint(manager: ocp.CheckpointManager, model: nnx.Module,
                       optimizer: nnx.Optimizer, step: int | None = None) -> int:
    """Restore a checkpoint written by `save_checkpoint` into `model` and `optimizer` in place.

    Both must be built as for the saved run (same config, dtypes and optimizer); their arrays'
    shapes, dtypes and shardings are the restore targets, so a sharded model restores sharded.

    Args:
        step: the step to restore; None restores the manager's latest.

    Returns:
        The step restored.
    """
    import orbax.checkpoint as ocp

    if step is None:
        step = manager.latest_step()
        if step is None:
            raise ValueError(f"`manager` holds no checkpoint to restore (directory "
                             f"{str(manager.directory)!r}). Save one with "
                             "`save_checkpoint(manager, step, model, optimizer)` first, or start "
                             "training from step 0.")
    elif step not in manager.all_steps():
        raise ValueError(f"`step` must be one of the saved steps {list(manager.all_steps())}. "
                         f"Received: step={step}.")
    targets = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
    args = ocp.args.Composite(**{
        name: ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
        for name, state in targets.items()})
    try:
        restored = manager.restore(step, args=args)
    except ValueError as e:  # Orbax names the mismatched tree paths or shapes
        raise ValueError(f"The checkpoint at step {step} does not fit `model` and `optimizer`: "
                         "build them as for the saved run (same config, dtypes and optimizer "
                         f"settings). Orbax reports: {e}") from e
    nnx.update(model, restored["model"])
    nnx.update(optimizer, restored["optimizer"])
    return step
