"""Triton RMSNorm (components/kernels/rmsnorm.py) against the PyTorch reference in components/model/ops.py.

Without a GPU these run under Triton's interpreter (conftest sets TRITON_INTERPRET=1), so shapes are small,
with odd widths so the masked tail of the power-of-two block is exercised. Tolerances: fp32 atol=rtol=1e-5;
fp16 atol=rtol=1e-2 (one or two fp16 ulps on values of order 1-4; the kernel keeps dn in fp32 where the
reference rounds it to fp16); bf16 (GPU only) atol=rtol=5e-2.
"""

from __future__ import annotations

import pytest
import torch

from components.kernels.rmsnorm import RMSNormFunction, rms_norm
from components.model import ops
from tests.kernels.conftest import DEVICE, needs_gpu

EPS = 1e-6
SHAPES = [(3, 5, 97), (7, 130), (2, 33)]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _inputs(shape, dtype, w_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    w = 1.0 + 0.5 * torch.randn(shape[-1], generator=g, dtype=torch.float32)
    dy = torch.randn(shape, generator=g, dtype=torch.float32)
    x = x.to(DEVICE, dtype).requires_grad_()
    w = w.to(DEVICE, w_dtype or dtype).requires_grad_()
    return x, w, dy.to(DEVICE)


def _check(shape, dtype, w_dtype=None):
    x, w, dy = _inputs(shape, dtype, w_dtype)
    y = rms_norm(x, w, EPS)
    y_ref = ops.rms_norm(x, w, EPS)
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    tol = TOL[dtype]
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    dy = dy.to(y.dtype)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x, w), dy)
    assert dx.dtype == x.dtype and dw.dtype == w.dtype
    torch.testing.assert_close(dx, dx_ref, atol=tol, rtol=tol)
    # dweight sums over all rows: allow for the longer fp16 accumulation in the reference
    rows = x.numel() // shape[-1]
    torch.testing.assert_close(dw, dw_ref, atol=tol * rows ** 0.5, rtol=tol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_matches_reference(shape, dtype):
    _check(shape, dtype)


def test_fp16_input_fp32_weight_promotes_like_reference():
    _check((4, 65), torch.float16, w_dtype=torch.float32)


def test_power_of_two_width_and_single_row():
    _check((1, 64), torch.float32)
    _check((50,), torch.float32)  # 1-D input: a single row


def test_non_contiguous_input():
    x, w, dy = _inputs((6, 40), torch.float32)
    xt = x.t()  # (40, 6): rows of 6 with a stride of 1 between rows
    w6 = w.detach()[:6].clone().requires_grad_()
    y = rms_norm(xt, w6, EPS)
    y_ref = ops.rms_norm(xt, w6, EPS)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w6), g)
    want = torch.autograd.grad(y_ref, (x, w6), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_eps_is_used():
    x = torch.full((2, 17), 1e-3, device=DEVICE)
    w = torch.ones(17, device=DEVICE)
    torch.testing.assert_close(rms_norm(x, w, 1e-2), ops.rms_norm(x, w, 1e-2), atol=1e-6, rtol=1e-5)


def test_gradcheck_fp64():
    """The kernel computes in fp64 for fp64 inputs (ops.rms_norm computes in fp32), so gradcheck holds."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_()
    w = (1.0 + 0.5 * torch.randn(11, generator=g, dtype=torch.float64)).to(DEVICE).requires_grad_()
    fn = lambda a, b: RMSNormFunction.apply(a, b, EPS)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-5)


def test_weight_shape_mismatch_raises():
    with pytest.raises(ValueError):
        rms_norm(torch.randn(2, 8, device=DEVICE), torch.ones(7, device=DEVICE), EPS)


@needs_gpu
@pytest.mark.parametrize("shape", [(3, 5, 97), (64, 4096), (8, 5000)])
def test_matches_reference_bf16(shape):
    _check(shape, torch.bfloat16)
