"""Planted bugs: the suite's own tests break a real backend on purpose and check that the
report names the case and the tensor path. Applied in the worker process only
(`--plant BUG`), after the backend is imported; nothing here touches a backend's files.

Bugs (each a mistake a port of GPT-2 really makes):
    ln_eps             LayerNorm epsilon 1e-3 (Keras' default) instead of the config's
    gelu_exact         erf GELU where GPT-2's `gelu_new` is the tanh approximation
    no_inverse_scale   `scale_attn_by_inverse_layer_idx` ignored
    position_shift     default position ids cumsum(mask) instead of cumsum(mask) - 1
    c_proj_transposed  attention `c_proj` weights loaded without the Conv1D layout ([out, in])
    penalise_padding   the repetition penalty counts a row's left padding
    ignore_config_pad  finished rows get the first eos id when the pad id comes from the config
    eos_fill           finished rows get the first eos id instead of the pad id
"""

from __future__ import annotations

import numpy as np

BUGS = ("ln_eps", "gelu_exact", "no_inverse_scale", "position_shift", "c_proj_transposed",
        "penalise_padding", "ignore_config_pad", "eos_fill")
GENERATION_BUGS = ("penalise_padding", "ignore_config_pad", "eos_fill")
WRONG_EPS = 1e-3


def apply(adapter, bug: str):
    """Return `adapter` with `bug` planted in its backend."""
    if bug not in BUGS:
        raise ValueError(f"Unknown planted bug. Received: {bug!r}. Expected one of {BUGS}.")
    planters = {"torch": _plant_torch, "numpy": _plant_numpy}
    if adapter.name not in planters:
        raise ValueError(f"Bugs can be planted in {sorted(planters)}. Received: {adapter.name!r}.")
    planters[adapter.name](adapter, bug)
    return adapter


def _after_load(adapter, edit) -> None:
    load = adapter.load

    def patched(path, head, dtype="float32"):
        model = load(path, head, dtype)
        edit(model)
        return model

    adapter.load = patched


def _plant_torch(adapter, bug: str) -> None:
    import torch
    import torch.nn.functional as F

    from gpt2_torch import inputs, modeling

    if bug in GENERATION_BUGS:
        _plant_torch_generation(bug)
    elif bug == "ln_eps":
        def edit(model):
            for m in model.modules():
                if isinstance(m, torch.nn.LayerNorm):
                    m.eps = WRONG_EPS
        _after_load(adapter, edit)
    elif bug == "gelu_exact":
        modeling.ACT_FNS["gelu_tanh"] = lambda x: F.gelu(x, approximate="none")
    elif bug == "no_inverse_scale":
        def edit(model):
            for m in model.modules():
                if isinstance(m, modeling.Attention):
                    cfg = model.config
                    m.scale = cfg.head_dim ** -0.5 if cfg.scale_attn_weights else 1.0
        _after_load(adapter, edit)
    elif bug == "position_shift":
        def shifted(attention_mask, past_len, B, T, device=None):
            if attention_mask is None:
                return torch.arange(past_len, past_len + T, device=device).expand(B, T)
            positions = attention_mask.long().cumsum(-1)  # the bug: no "- 1"
            positions = positions.masked_fill(attention_mask == 0, 1)
            return positions[:, past_len:]
        inputs.default_position_ids = shifted
    elif bug == "c_proj_transposed":
        def edit(model):
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, modeling.Attention):
                        m.c_proj.weight.copy_(m.c_proj.weight.T.clone())
        _after_load(adapter, edit)


def _plant_torch_generation(bug: str) -> None:
    import dataclasses

    from gpt2_torch import generation, processors

    if bug == "penalise_padding":
        processors.PROCESSORS["repetition_penalty"] = (
            lambda s, st, g: processors.repetition_penalty(s, st.ids, g.repetition_penalty))
        return
    resolve = generation.resolve

    def planted(config, gen, *args, **kwargs):
        plan = resolve(config, gen, *args, **kwargs)
        from_config = config.pad_token_id is not None and plan.pad_token_id == config.pad_token_id
        if plan.eos_token_ids and (bug == "eos_fill" or from_config):
            plan = dataclasses.replace(plan, pad_token_id=plan.eos_token_ids[0])
        return plan
    generation.resolve = planted


def _plant_numpy(adapter, bug: str) -> None:
    from gpt2_core import activations, config, reference

    if bug == "ln_eps":
        layer_norm = reference.layer_norm
        reference.layer_norm = lambda x, w, b, eps: layer_norm(x, w, b, WRONG_EPS)
    elif bug == "gelu_exact":
        reference.ACTIVATIONS["gelu_new"] = activations.gelu_exact
    elif bug == "no_inverse_scale":
        def attn_scale(self, layer_idx):
            return self.head_dim ** -0.5 if self.scale_attn_weights else 1.0
        config.GPT2Config.attn_scale = attn_scale
    elif bug == "position_shift":
        default = reference.default_position_ids

        def shifted(attention_mask, past_len, B, T):
            if attention_mask is None:
                return default(attention_mask, past_len, B, T)
            positions = np.where(attention_mask == 0, 1, np.cumsum(attention_mask, axis=-1))
            return positions[:, past_len:]
        reference.default_position_ids = shifted
    elif bug == "c_proj_transposed":
        def edit(model):
            for name in list(model.params):
                if name.endswith("attn.c_proj.weight"):
                    model.params[name] = np.ascontiguousarray(model.params[name].T)
        _after_load(adapter, edit)


__all__ = ["BUGS", "GENERATION_BUGS", "apply"]
