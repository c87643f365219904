"""Triton cross-entropy (components/kernels/cross_entropy.py) against ops.cross_entropy.

Without a GPU these run under Triton's interpreter (conftest sets TRITON_INTERPRET=1), so shapes are small:
13 tokens, odd vocabularies (300, 517) with block_size=128 so the vocab loop runs several masked iterations,
plus the default single-block path. Ignored targets in every case; all-ignored follows the reference (mean:
nan loss and zero gradient; sum: 0). Tolerances: fp32 1e-5; fp16 logits (fp32 arithmetic inside, gradient
stored in fp16) 1e-3 on the loss and 2e-3 on the gradient; bf16 (GPU only) 2e-2.
"""

from __future__ import annotations

import pytest
import torch

from components.kernels.cross_entropy import CrossEntropyFunction, cross_entropy
from components.model import ops
from tests.kernels.conftest import DEVICE, needs_gpu

IGN = ops.IGNORE_INDEX
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}


def _inputs(shape, V, dtype, n_ignored=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(*shape, V, generator=g)).to(DEVICE, dtype).requires_grad_()
    targets = torch.randint(0, V, shape, generator=g)
    flat = targets.view(-1)
    flat[torch.randperm(flat.numel(), generator=g)[:n_ignored]] = IGN
    return logits, targets.to(DEVICE)


def _check(shape, V, dtype, reduction, block_size=None, n_ignored=3, grad_scale=1.0):
    logits, targets = _inputs(shape, V, dtype, n_ignored)
    loss = cross_entropy(logits, targets, reduction, block_size=block_size)
    loss_ref = ops.cross_entropy(logits, targets, reduction)
    assert loss.dtype == loss_ref.dtype and loss.shape == loss_ref.shape
    tol_l, tol_g = TOL[dtype]
    torch.testing.assert_close(loss, loss_ref, atol=tol_l, rtol=tol_l, equal_nan=True)
    if reduction == "none":
        dy = torch.randn(loss.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    else:
        dy = torch.tensor(grad_scale, device=DEVICE)
    (g,) = torch.autograd.grad(loss, logits, dy)
    (g_ref,) = torch.autograd.grad(loss_ref, logits, dy)
    assert g.dtype == g_ref.dtype == dtype and g.shape == g_ref.shape
    torch.testing.assert_close(g, g_ref, atol=tol_g, rtol=tol_g)
    return g


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("V", [300, 517])
def test_matches_reference_looped(dtype, reduction, V):
    _check((13,), V, dtype, reduction, block_size=128)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_default_block_3d(reduction):
    """(B, T, V) logits, the default block (one iteration), grad_output != 1."""
    _check((2, 5), 517, torch.float32, reduction, grad_scale=2.5)


def test_block_divides_vocab():
    _check((5,), 256, torch.float32, "mean", block_size=64)


def test_ignored_rows_have_zero_grad():
    logits, targets = _inputs((13,), 300, torch.float32, n_ignored=5)
    loss = cross_entropy(logits, targets, "none", block_size=128)
    (g,) = torch.autograd.grad(loss.sum(), logits)
    ign = targets == IGN
    assert (loss[ign] == 0).all() and (g[ign] == 0).all()
    # each valid row's gradient of the per-row loss sums to zero (softmax - onehot)
    torch.testing.assert_close(g[~ign].sum(-1), torch.zeros((~ign).sum(), device=DEVICE), atol=1e-5, rtol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_ignored(reduction):
    """Same as the reference: mean -> nan (0 / 0), sum -> 0; the gradient is zero either way."""
    logits, targets = _inputs((4,), 300, torch.float32, n_ignored=4)
    assert (targets == IGN).all()
    loss = cross_entropy(logits, targets, reduction, block_size=128)
    loss_ref = ops.cross_entropy(logits, targets, reduction)
    torch.testing.assert_close(loss, loss_ref, equal_nan=True)
    assert loss.isnan().item() == (reduction == "mean")
    (g,) = torch.autograd.grad(loss, logits)
    (g_ref,) = torch.autograd.grad(loss_ref, logits)
    assert (g == 0).all()
    torch.testing.assert_close(g, g_ref)


def test_no_grad_input():
    logits, targets = _inputs((13,), 300, torch.float32)
    logits = logits.detach()
    loss = cross_entropy(logits, targets, block_size=128)
    torch.testing.assert_close(loss, ops.cross_entropy(logits, targets))
    assert not loss.requires_grad


def test_gradcheck_fp64():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_()
    targets = torch.tensor([1, IGN, 5], device=DEVICE)
    for reduction in ("mean", "sum"):
        assert torch.autograd.gradcheck(lambda x, r=reduction: CrossEntropyFunction.apply(x, targets, r, 4),
                                        (logits,), eps=1e-6, atol=1e-6)


def test_bad_reduction():
    logits, targets = _inputs((2,), 10, torch.float32, n_ignored=0)
    with pytest.raises(ValueError):
        cross_entropy(logits, targets, "max")


@needs_gpu
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bf16(reduction):
    _check((4, 33), 1000, torch.bfloat16, reduction, block_size=256)
    _check((4, 33), 32003, torch.bfloat16, reduction)
