"""Triton SwiGLU (components/kernels/swiglu.py) against the PyTorch reference in components/model/ops.py.

Without a GPU these run under Triton's interpreter (conftest sets TRITON_INTERPRET=1), so sizes are small and
not multiples of the 1024-element block (masked tails). Tolerances: fp32 atol=rtol=1e-5; fp16 atol=rtol=1e-2
(the kernel computes gradients in fp32 where autograd rounds intermediates to fp16); bf16 (GPU only) 5e-2.
"""

from __future__ import annotations

import pytest
import torch

from components.kernels.swiglu import SwiGLUFunction, swiglu
from components.model import ops
from tests.kernels.conftest import DEVICE, needs_gpu

SHAPES = [(3, 5, 97), (7, 130), (1025,)]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _check(shape, dtype, up_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    gate = (3 * torch.randn(shape, generator=g)).to(DEVICE, dtype).requires_grad_()
    up = torch.randn(shape, generator=g).to(DEVICE, up_dtype or dtype).requires_grad_()
    out = swiglu(gate, up)
    ref = ops.swiglu(gate, up)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    tol = TOL[dtype]
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    dy = torch.randn(shape, generator=g).to(DEVICE, out.dtype)
    got = torch.autograd.grad(out, (gate, up), dy)
    want = torch.autograd.grad(ref, (gate, up), dy)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_matches_reference(shape, dtype):
    _check(shape, dtype)


def test_mixed_dtypes_promote_like_reference():
    _check((5, 37), torch.float16, up_dtype=torch.float32)


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(2)
    both = torch.randn(9, 2 * 21, generator=g).to(DEVICE).requires_grad_()
    gate, up = both[:, :21], both[:, 21:]  # the fused-projection split: strided views
    out, ref = swiglu(gate, up), ops.swiglu(gate, up)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    dy = torch.randn(out.shape, generator=g).to(DEVICE)
    (got,) = torch.autograd.grad(out, both, dy)
    (want,) = torch.autograd.grad(ref, both, dy)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gradcheck_fp64():
    g = torch.Generator().manual_seed(1)
    gate = torch.randn(3, 13, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_()
    up = torch.randn(3, 13, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_()
    assert torch.autograd.gradcheck(SwiGLUFunction.apply, (gate, up), eps=1e-6, atol=1e-7)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        swiglu(torch.randn(2, 8, device=DEVICE), torch.randn(8, device=DEVICE))


@needs_gpu
@pytest.mark.parametrize("shape", [(3, 5, 97), (64, 11008), (4097,)])
def test_matches_reference_bf16(shape):
    _check(shape, torch.bfloat16)
