"""`x @ W + b` on CPU through oneDNN when torch was built with it.

Why not `torch.addmm`: for float32 on CPU, aten sends GEMMs to MKL, which on non-Intel CPUs (the
AMD EPYC machines these benchmarks ran on) picks a generic code path; oneDNN picks its kernels by
CPU features and runs the same products about twice as fast for every shape GPT-2 uses (prefill,
batched decode, and all three GEMMs of each layer's backward). Results differ from MKL only in
summation order (float32 rounding, ~1e-6 relative).

`torch.ops.mkldnn._linear_pointwise` is the op `torch.compile` itself emits for CPU linears; it has
no autograd formula, so `_OneDNNLinear` supplies the backward with the same op. Anything it cannot
serve (other devices or dtypes, a build without oneDNN, tracing under `torch.compile`, empty
inputs) takes `torch.addmm`/`F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    """y = x @ W + b with W given as stored: `in_out` True for Conv1D's [in, out], False for
    Linear's [out, in]. Gradients come back in the stored layout (contiguous for the optimizer)."""

    @staticmethod
    def forward(x, weight, bias, in_out: bool):  # x (M, K)
        return _mm(x, weight.t() if in_out else weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, in_out = inputs
        ctx.save_for_backward(x, weight)
        ctx.in_out = in_out
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):  # grad (M, N)
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _mm(grad, weight if ctx.in_out else weight.t())  # grad @ W_in_out.T
        if ctx.needs_input_grad[1]:
            # [in, out] = x.T @ grad; [out, in] = grad.T @ x
            grad_w = _mm(x.t(), grad.t()) if ctx.in_out else _mm(grad.t(), x.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.numel() > 0
            and not torch.compiler.is_compiling())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           in_out: bool) -> torch.Tensor:
    """Shapes: x (..., K), weight (K, N) if `in_out` else (N, K), bias (N,) -> (..., N)."""
    if not _use_onednn(x, weight):
        if in_out:
            x2 = x.reshape(-1, x.shape[-1])
            y = torch.mm(x2, weight) if bias is None else torch.addmm(bias, x2, weight)
            return y.view(*x.shape[:-1], y.shape[-1])
        return F.linear(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        y = _OneDNNLinear.apply(x2, weight, bias, in_out)
    else:  # inference: skip the autograd.Function's bookkeeping (48 calls per decode step)
        y = _mm(x2, weight.t() if in_out else weight, bias)
    return y.view(*x.shape[:-1], y.shape[-1])
