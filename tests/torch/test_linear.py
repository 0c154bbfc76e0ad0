"""The oneDNN matmul path (`gpt2_torch.linear`): values and gradients equal a float64 `x @ W.T + b`
for nn.Linear's [out, in] weights, and the fallback serves what oneDNN cannot."""

from __future__ import annotations

import pytest
import torch

from gpt2_torch import linear as lin

pytestmark = pytest.mark.skipif(not lin.ONEDNN, reason="torch built without oneDNN")


def _reference(x, weight, bias):
    y = x.double() @ weight.t().double()
    return y if bias is None else y + bias.double()


@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_and_grads_match_float64(with_bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 24, generator=gen, requires_grad=True)
    weight = torch.randn(40, 24, generator=gen, requires_grad=True)
    bias = torch.randn(40, generator=gen, requires_grad=True) if with_bias else None
    y = lin.linear(x, weight, bias)
    ref = _reference(x, weight, bias)
    # float32 sums of 24 products of N(0, 1) values: rounding well under 1e-5
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-5)
    g = torch.randn(y.shape, generator=gen)
    leaves = [t for t in (x, weight, bias) if t is not None]
    got = torch.autograd.grad(y, leaves, g)
    want = torch.autograd.grad(ref, leaves, g.double())  # computed in float64, returned float32
    for a, b, leaf in zip(got, want, leaves, strict=True):
        assert a.shape == leaf.shape and a.is_contiguous()  # stored layout, for the optimizer
        # float32 sums of up to 40 products (15 for the weight gradient)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_inference_path_equals_autograd_path():
    gen = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(7, 16, generator=gen), torch.randn(8, 16, generator=gen), torch.randn(8)
    with torch.no_grad():
        a = lin.linear(x, w, b)
    c = lin.linear(x, w.requires_grad_(), b)
    assert torch.equal(a, c.detach())  # same kernel either way


def test_fallback_for_float64_and_empty_inputs():
    x, w = torch.randn(4, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    assert not lin._use_onednn(x, w)
    torch.testing.assert_close(lin.linear(x, w, None), x @ w.t(), atol=0, rtol=0)
    empty = torch.randn(0, 6)
    assert lin.linear(empty, w.float(), None).shape == (0, 3)
