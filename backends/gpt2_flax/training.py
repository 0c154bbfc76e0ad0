"""One training step: `nnx.value_and_grad` of the causal-LM loss, then optax AdamW."""

from __future__ import annotations

import jax
import optax
from flax import nnx

from gpt2_flax.models import GPT2LMHeadModel


def make_optimizer(model: GPT2LMHeadModel, learning_rate: float = 3e-4,
                   weight_decay: float = 0.1, b1: float = 0.9, b2: float = 0.95) -> nnx.Optimizer:
    """AdamW over the model's `nnx.Param`s (GPT-2/nanoGPT's betas by default)."""
    return nnx.Optimizer(model, optax.adamw(learning_rate, b1=b1, b2=b2,
                                            weight_decay=weight_decay), wrt=nnx.Param)


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
