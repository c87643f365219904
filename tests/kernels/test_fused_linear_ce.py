"""Fused linear + cross-entropy (components/kernels/fused_linear_ce.py) against the unfused reference.

Without a GPU the CE kernel runs under Triton's interpreter, so shapes are small: N=13 tokens, d=16, V=300
(odd, block_size=128 so the vocab loop is masked), chunk sizes that divide N and that do not, 1 and > N.
Tolerances: fp32 1e-5 (loss), 1e-5 abs / 1e-4 rel (grads: the chunked matmuls sum in another order);
bf16 (GPU only) 2e-2 on the loss and 5e-2 on the grads (grad_weight accumulates in bf16 per chunk).
"""

from __future__ import annotations

import pytest
import torch

from components.kernels.fused_linear_ce import (
    FusedLinearCrossEntropyFunction,
    fused_linear_cross_entropy,
    fused_linear_cross_entropy_reference,
)
from components.model import ops
from tests.kernels.conftest import DEVICE, needs_gpu

IGN = ops.IGNORE_INDEX


def _inputs(N, d, V, dtype, n_ignored=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, d, generator=g).to(DEVICE, dtype).requires_grad_()
    weight = (torch.randn(V, d, generator=g) / d**0.5).to(DEVICE, dtype).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.randperm(N, generator=g)[:n_ignored]] = IGN
    return hidden, weight, targets.to(DEVICE)


def _check(N, d, V, dtype, reduction, chunk_size, block_size=128, n_ignored=3, grad_scale=1.0,
           tol=(1e-5, 1e-5, 1e-4)):
    hidden, weight, targets = _inputs(N, d, V, dtype, n_ignored)
    loss = fused_linear_cross_entropy(hidden, weight, targets, reduction, chunk_size, block_size)
    loss_ref = fused_linear_cross_entropy_reference(hidden, weight, targets, reduction)
    assert loss.dtype == loss_ref.dtype and loss.shape == loss_ref.shape == ()
    tol_l, atol_g, rtol_g = tol
    torch.testing.assert_close(loss, loss_ref, atol=tol_l, rtol=tol_l, equal_nan=True)
    dy = torch.tensor(grad_scale, device=DEVICE)
    gh, gw = torch.autograd.grad(loss, (hidden, weight), dy)
    gh_ref, gw_ref = torch.autograd.grad(loss_ref, (hidden, weight), dy)
    assert gh.dtype == dtype and gw.dtype == dtype
    torch.testing.assert_close(gh, gh_ref, atol=atol_g, rtol=rtol_g)
    torch.testing.assert_close(gw, gw_ref, atol=atol_g, rtol=rtol_g)


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 5, 13, 64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_reference(chunk_size, reduction):
    _check(13, 16, 300, torch.float32, reduction, chunk_size)


def test_grad_output_scale_and_default_block():
    _check(13, 16, 517, torch.float32, "mean", 6, block_size=None, grad_scale=-1.7)


def test_all_ignored():
    """As the reference: mean -> nan loss, zero gradients."""
    hidden, weight, targets = _inputs(6, 8, 300, torch.float32, n_ignored=6)
    loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=4, block_size=128)
    loss_ref = fused_linear_cross_entropy_reference(hidden, weight, targets)
    assert loss.isnan() and loss_ref.isnan()
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    gh_ref, gw_ref = torch.autograd.grad(loss_ref, (hidden, weight))
    assert (gh == 0).all() and (gw == 0).all()
    torch.testing.assert_close(gh, gh_ref)
    torch.testing.assert_close(gw, gw_ref)


def test_only_hidden_requires_grad():
    hidden, weight, targets = _inputs(13, 16, 300, torch.float32)
    weight = weight.detach()
    loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=5, block_size=128)
    loss_ref = fused_linear_cross_entropy_reference(hidden, weight, targets)
    torch.testing.assert_close(loss, loss_ref)
    (gh,) = torch.autograd.grad(loss, hidden)
    (gh_ref,) = torch.autograd.grad(loss_ref, hidden)
    torch.testing.assert_close(gh, gh_ref, atol=1e-5, rtol=1e-4)


def test_no_grad():
    hidden, weight, targets = _inputs(13, 16, 300, torch.float32)
    with torch.no_grad():
        loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=5, block_size=128)
        torch.testing.assert_close(loss, fused_linear_cross_entropy_reference(hidden, weight, targets))


def test_gradcheck_fp64():
    hidden, weight, targets = _inputs(4, 2, 5, torch.float64, n_ignored=1)
    for reduction in ("mean", "sum"):
        assert torch.autograd.gradcheck(
            lambda h, w, r=reduction: FusedLinearCrossEntropyFunction.apply(h, w, targets, r, 3, 4),
            (hidden, weight), eps=1e-6, atol=1e-6)


def test_none_reduction_rejected():
    hidden, weight, targets = _inputs(4, 8, 30, torch.float32)
    with pytest.raises(ValueError):
        fused_linear_cross_entropy(hidden, weight, targets, "none")


@needs_gpu
@pytest.mark.parametrize("chunk_size", [None, 100])
def test_bf16(chunk_size):
    _check(333, 64, 32003, torch.bfloat16, "mean", chunk_size, block_size=None, tol=(2e-2, 5e-2, 5e-2))
