"""`x @ W + b` on CPU through oneDNN when torch was built with it.

Why not `torch.addmm`: for float32 on CPU, aten sends GEMMs to MKL, which on non-Intel CPUs (the
AMD EPYC machines these benchmarks ran on) picks a generic code path; oneDNN picks its kernels by
CPU features and runs the same products about twice as fast for every shape GPT-2 uses (prefill,
batched decode, and all three GEMMs of each layer's backward). Results differ from MKL only in
summation order (float32 rounding, ~1e-6 relative).

`torch.ops.mkldnn._linear_pointwise` is the op `torch.compile` itself emits for CPU linears; it has
no autograd formula, so `_OneDNNLinear` supplies the backward with the same op; under
`torch.compile` inference calls go through the custom op `gpt2_torch::onednn_linear`. Anything it
cannot serve (other devices or dtypes, a build without oneDNN, training under `torch.compile`,
empty inputs, autocast regions) takes `F.linear`.

`Linear` is the `nn.Linear` the transformer's projections (`c_attn`, `c_proj`, `c_fc`) are made
of: `[out, in]` weights, so tools that find linears by type (peft's LoRA, quantizers, exporters)
treat them as theirs and peft's merge of the square `c_proj` is right. Its state dict keeps
GPT-2's checkpoint layout `[in, out]` (transposed once at save and load), so `state_dict()` is
the checkpoint, key for key and shape for shape, as transformers' Conv1D model has it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_available()


def _mm(a: torch.Tensor, w_oi: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a (M, K) @ w_oi.T (K, N) + bias; `w_oi` is (out, in) and may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(a, w_oi, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = x @ W.T + b with W stored [out, in] (nn.Linear's layout). Gradients come back in that
    layout (contiguous for the optimizer)."""

    @staticmethod
    def forward(x, weight, bias):  # x (M, K)
        return _mm(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):  # grad (M, N)
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _mm(grad, weight.t())  # grad @ W
        if ctx.needs_input_grad[1]:
            grad_w = _mm(grad.t(), x.t())  # [out, in] = grad.T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


if ONEDNN:
    # Under `torch.compile`, inductor would lower `mkldnn._linear_pointwise` only with weights it
    # prepacked itself (`freezing`, a second copy of every weight) and otherwise fails; a custom op
    # is an opaque call it leaves as is, so compiled decoding keeps oneDNN's GEMMs (inference only:
    # the op has no autograd formula).
    @torch.library.custom_op("gpt2_torch::onednn_linear", mutates_args=())
    def _onednn_linear_op(x: torch.Tensor, w_oi: torch.Tensor,
                          bias: torch.Tensor | None) -> torch.Tensor:
        return _mm(x, w_oi, bias)

    @_onednn_linear_op.register_fake
    def _(x: torch.Tensor, w_oi: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return x.new_empty(x.shape[0], w_oi.shape[0])


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # Under `torch.autocast` the op must be `F.linear`, which autocast casts (bfloat16
    # projections, as transformers' GPT-2 gives); the oneDNN op is not on autocast's list.
    return (ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.numel() > 0
            and not torch.is_autocast_enabled("cpu"))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Shapes: x (..., K), weight (N, K) (nn.Linear's [out, in]), bias (N,) -> (..., N)."""
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))
    compiling = torch.compiler.is_compiling()
    if not _use_onednn(x, weight) or (compiling and grad):
        return F.linear(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])
    if grad:
        y = _OneDNNLinear.apply(x2, weight, bias)
    elif compiling:
        y = _onednn_linear_op(x2, weight, bias)
    else:  # inference: skip the autograd.Function's bookkeeping (48 calls per decode step)
        y = _mm(x2, weight, bias)
    return y.view(*x.shape[:-1], y.shape[-1])


class Linear(nn.Linear):
    """`nn.Linear` (`[out, in]` weight) whose forward takes the oneDNN path above when it can,
    and whose state dict holds the weight as GPT-2's checkpoints do, `[in, out]`.

    Parameters are left uninitialised (the model's `init_weights` or a checkpoint fills them):
    nn.Linear's kaiming init on the meta device costs `from_pretrained` time and memory.
    """

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        key = prefix + "weight"
        if key in destination:
            w = destination[key].t()
            # a contiguous copy: safetensors (Trainer's `save_model`) refuses strided tensors
            destination[key] = w if keep_vars else w.contiguous()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "weight"
        w = state_dict.get(key)
        if w is not None:
            expected = (self.in_features, self.out_features)
            if tuple(w.shape) != expected:  # load_state_dict raises with every message at once
                error_msgs.append(
                    f"size mismatch for {key}: expected GPT-2's checkpoint layout [in, out] = "
                    f"{list(expected)}, got {list(w.shape)}. Checkpoints store the projections "
                    "[in, out] (transformers' Conv1D); transpose an [out, in] matrix first.")
                return
            w = w.t()
            if local_metadata.get("assign_to_params_buffers", False):
                w = w.contiguous()  # the parameter becomes this tensor: keep the fast layout
            state_dict[key] = w  # load_state_dict's own copy of the mapping
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
