"""RoPE kernel (components/kernels/rope.py) against the PyTorch reference (components/model/ops.py).

Without a GPU these run through Triton's interpreter (conftest.py), about 3 ms per program, i.e. per
(batch, token) row, so shapes stay small. Head dims are even but mostly not powers of two (6, 10, 34) and
B/H/T are odd, to exercise the masks. x is built as the model builds it, q.view(b, t, h, d).transpose(1, 2).

Tolerances: the kernel does the reference's fp32 arithmetic, so fp32 matches to 1e-6 (room for FMA on a
GPU), and fp16/bf16 outputs are the same fp32 value rounded once: compared with the fp32 reference rounded
to that dtype, within one ulp (fp16 eps ~1e-3, bf16 eps ~8e-3). The autograd reference in fp16 rounds each
of its two gradient paths separately, hence the fp32 reference for the gradients too.
"""

from __future__ import annotations

import pytest
import torch

from components.kernels.rope import RoPEFunction, apply_rope
from components.model import ops
from tests.kernels.conftest import DEVICE, needs_gpu

TOL = {
    torch.float32: dict(atol=1e-6, rtol=1e-5),
    torch.float16: dict(atol=1e-3, rtol=1e-3),
    torch.bfloat16: dict(atol=1e-2, rtol=8e-3),
}

# (B, H, T, D): odd B/H/T, head dims even but not powers of two, and the smallest D=2
SHAPES = [(1, 1, 1, 2), (3, 5, 7, 6), (2, 3, 5, 10), (1, 2, 3, 34), (2, 4, 3, 64)]
SEQ_LEN = 32


def _tables(b: int, t: int, d: int, kind: str, gen: torch.Generator, dtype=torch.float32):
    cos, sin = ops.rope_tables(SEQ_LEN, d, 10000.0)
    if kind == "TD":  # the model's prefill / decode: a (T, D) slice starting at the cache position
        start = int(torch.randint(0, SEQ_LEN - t + 1, (1,), generator=gen))
        cos, sin = cos[start:start + t], sin[start:start + t]
    else:  # per-row positions (left-padded generation): (B, 1, T, D)
        pos = torch.randint(0, SEQ_LEN, (b, t), generator=gen)
        cos, sin = cos[pos].unsqueeze(1), sin[pos].unsqueeze(1)
    return cos.to(DEVICE, dtype), sin.to(DEVICE, dtype)


def _x(b: int, h: int, t: int, d: int, dtype, gen: torch.Generator, layout: str) -> torch.Tensor:
    x = torch.randn(b, t, h * d, generator=gen).to(DEVICE, dtype)
    if layout == "model":  # non-contiguous, as it comes out of the projection
        return x.view(b, t, h, d).transpose(1, 2)
    return x.view(b, t, h, d).transpose(1, 2).contiguous()


def _check(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, gen: torch.Generator) -> None:
    tol = TOL[x.dtype]
    x_k = x.detach().clone().requires_grad_()
    x_r = x.detach().float().requires_grad_()
    y_k = apply_rope(x_k, cos, sin)
    y_r = ops.apply_rope(x_r, cos, sin)
    assert y_k.shape == x.shape and y_k.dtype == x.dtype
    torch.testing.assert_close(y_k, y_r.to(x.dtype), **tol)

    g = torch.randn(x.shape, generator=gen).to(DEVICE, x.dtype).transpose(1, 2).contiguous().transpose(1, 2)
    y_k.backward(g)  # a non-contiguous incoming gradient, too
    y_r.backward(g.float())
    assert x_k.grad.dtype == x.dtype
    torch.testing.assert_close(x_k.grad, x_r.grad.to(x.dtype), **tol)


@pytest.mark.parametrize("layout", ["model", "contiguous"])
@pytest.mark.parametrize("kind", ["TD", "B1TD"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_matches_reference(dtype, shape, kind, layout):
    gen = torch.Generator().manual_seed(SHAPES.index(shape) * 4 + 2 * (kind == "TD") + (layout == "model"))
    b, h, t, d = shape
    cos, sin = _tables(b, t, d, kind, gen)
    _check(_x(b, h, t, d, dtype, gen, layout), cos, sin, gen)


@needs_gpu
@pytest.mark.parametrize("kind", ["TD", "B1TD"])
@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (2, 32, 64, 128), (1, 8, 33, 34)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_bf16(shape, kind):
    gen = torch.Generator().manual_seed(0)
    b, h, t, d = shape
    cos, sin = _tables(b, t, d, kind, gen)
    _check(_x(b, h, t, d, torch.bfloat16, gen, "model"), cos, sin, gen)


def test_forward_exact_in_fp32():
    """Same fp32 operations as the reference: on the interpreter the results are bit-identical."""
    gen = torch.Generator().manual_seed(1)
    x = _x(2, 3, 5, 10, torch.float32, gen, "model")
    cos, sin = _tables(2, 5, 10, "B1TD", gen)
    y = apply_rope(x, cos, sin)
    if DEVICE == "cpu":
        assert torch.equal(y, ops.apply_rope(x, cos, sin))


def test_backward_is_exact_transpose_for_any_table():
    """Halves of cos/sin that differ (not Llama's layout): the backward is still the rotation's transpose."""
    gen = torch.Generator().manual_seed(2)
    b, h, t, d = 2, 3, 3, 6
    x = _x(b, h, t, d, torch.float32, gen, "model")
    cos = torch.randn(b, 1, t, d, generator=gen).to(DEVICE)
    sin = torch.randn(b, 1, t, d, generator=gen).to(DEVICE)
    _check(x, cos, sin, gen)


@pytest.mark.parametrize("kind", ["TD", "B1TD"])
def test_gradcheck_fp64(kind):
    """fp64 x and tables make the kernel compute in fp64, so finite differences see exact arithmetic.

    Full gradcheck costs a kernel launch per input and output element (~60 ms each under the interpreter),
    so on the CPU it runs in fast mode (random projections u, v: v^T J u analytic vs numeric)."""
    gen = torch.Generator().manual_seed(3)
    b, h, t, d = 2, 3, 3, 6
    cos, sin = _tables(b, t, d, kind, gen, dtype=torch.float64)
    x = _x(b, h, t, d, torch.float64, gen, "model").detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: RoPEFunction.apply(x, cos, sin), (x,), eps=1e-6, atol=1e-8,
                                      fast_mode=DEVICE == "cpu")


def test_no_grad_for_tables_and_model_graph():
    """Gradients reach the projection weight through the transposed view; the tables get none."""
    gen = torch.Generator().manual_seed(4)
    b, t, h, d = 1, 3, 3, 10
    w = torch.randn(h * d, 8, generator=gen).to(DEVICE).requires_grad_()
    inp = torch.randn(b, t, 8, generator=gen).to(DEVICE)
    cos, sin = _tables(b, t, d, "TD", gen)
    cos.requires_grad_()
    grads = []
    for rope in (apply_rope, ops.apply_rope):
        q = (inp @ w.T).view(b, t, h, d).transpose(1, 2)
        rope(q, cos, sin).square().sum().backward()
        grads.append(w.grad.clone())
        w.grad = None
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)
    cos.grad = None
    q = (inp @ w.T).view(b, t, h, d).transpose(1, 2)
    apply_rope(q, cos, sin).sum().backward()
    assert cos.grad is None


def test_odd_head_dim_rejected():
    x = torch.randn(1, 1, 2, 5, device=DEVICE)
    cos = torch.ones(2, 5, device=DEVICE)
    with pytest.raises(ValueError, match="even"):
        apply_rope(x, cos, cos)
