"""Token-level cross-entropy as a Triton kernel that also writes the gradient (Liger-Kernel's trick).

Reference: components/model/ops.py::cross_entropy (fp32 CE over (..., V) logits, IGNORE_INDEX targets carry
no loss, reduction "mean" over the non-ignored tokens, "sum" or "none").

One program per token row loops over the vocabulary in BLOCK chunks twice:

    pass 1  online softmax: running max m and running sum d = sum exp(x - m)  ->  lse = m + log d
            loss = lse - x[target]
    pass 2  grad = (exp(x - lse) - onehot(target)) * scale, written into a grad buffer

so the backward of the loss is already known when the forward returns: backward only multiplies the stored
gradient by grad_output. scale is 1/n_valid for "mean" (read from a 1-element tensor, so the host never
syncs on n_valid) and 1 for "sum"/"none". Ignored rows get loss 0 and a zero gradient row.

Arithmetic is fp32 whatever the logits' dtype (fp64 for fp64 logits, so gradcheck sees exact arithmetic);
the loss is returned in fp32 (fp64 for fp64 logits) as the reference does, the gradient in the logits'
dtype. The grad buffer may be the logits buffer itself (fused_linear_ce.py overwrites each logits chunk
with its gradient): each element is read before it is written, by the same program.

Edge cases, chosen to equal the reference: all targets ignored with reduction "mean" gives a nan loss
(0 / 0, as F.cross_entropy does) and a zero gradient; "sum" gives 0. Targets must be in [0, V) or
IGNORE_INDEX (not checked on the device).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from components.kernels import accumulator
from components.model.ops import IGNORE_INDEX

MAX_BLOCK = 4096  # vocab chunk per loop iteration; a 128k vocab is 32 iterations per pass


@triton.jit
def _cross_entropy_kernel(
    x_ptr, x_stride,          # logits (N, V), row stride x_stride, unit column stride
    g_ptr, g_stride,          # gradient (N, V) in the logits' dtype; may alias x_ptr
    t_ptr,                    # targets (N,) int
    loss_ptr,                 # per-row loss (N,) in ACC
    scale_ptr,                # 1-element tensor: 1/n_valid for mean, 1 otherwise
    V, ignore_index,
    BLOCK: tl.constexpr,
    HAS_GRAD: tl.constexpr,
    ACC: tl.constexpr,        # tl.float32, or tl.float64 for fp64 logits
):
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride can pass 2**31 for large N * V
    x_ptr += row * x_stride
    g_ptr += row * g_stride
    target = tl.load(t_ptr + row).to(tl.int64)

    if target == ignore_index:
        tl.store(loss_ptr + row, tl.zeros([], dtype=ACC))
        if HAS_GRAD:
            for start in range(0, V, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                tl.store(g_ptr + cols, tl.zeros([BLOCK], dtype=g_ptr.dtype.element_ty), mask=cols < V)
        return

    # pass 1: online softmax statistics
    m = tl.full([], float("-inf"), dtype=ACC)
    d = tl.zeros([], dtype=ACC)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < V, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(d)
    x_target = tl.load(x_ptr + target).to(ACC)
    tl.store(loss_ptr + row, lse - x_target)

    # pass 2: gradient (softmax - onehot) * scale, in place when g_ptr aliases x_ptr
    if HAS_GRAD:
        scale = tl.load(scale_ptr).to(ACC)
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < V
            x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(ACC)
            p = tl.exp(x - lse)
            p = tl.where(cols == target, p - 1.0, p)
            tl.store(g_ptr + cols, (p * scale).to(g_ptr.dtype.element_ty), mask=mask)


def _block_size(V: int, block_size: int | None) -> int:
    if block_size is not None:
        assert block_size & (block_size - 1) == 0, "block_size must be a power of two"
        return block_size
    return min(triton.next_power_of_2(V), MAX_BLOCK)


def _scale_tensor(targets: torch.Tensor, reduction: str,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_valid, scale) as device tensors: scale = 1/n_valid for mean (inf when n_valid == 0, harmless:
    every row is then ignored and no gradient is scaled), 1 otherwise. No host sync."""
    n_valid = (targets != IGNORE_INDEX).sum().to(dtype)
    scale = 1.0 / n_valid if reduction == "mean" else torch.ones((), dtype=dtype, device=targets.device)
    return n_valid, scale.reshape(1)


def cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor, grad: torch.Tensor | None,
                       scale: torch.Tensor, block_size: int | None = None) -> torch.Tensor:
    """Launch the kernel on 2-D logits (N, V) with unit column stride; returns the per-row loss (N,), and
    writes (softmax - onehot) * scale into grad (which may be logits itself) when grad is given."""
    N, V = logits.shape
    assert logits.stride(-1) == 1 and (grad is None or grad.stride(-1) == 1)
    acc_torch, acc_tl = accumulator(logits)
    loss = torch.empty(N, dtype=acc_torch, device=logits.device)
    if N == 0:
        return loss
    BLOCK = _block_size(V, block_size)
    g = grad if grad is not None else logits  # unused when HAS_GRAD is False
    _cross_entropy_kernel[(N,)](
        logits, logits.stride(0), g, g.stride(0), targets, loss, scale,
        V, IGNORE_INDEX,
        BLOCK=BLOCK, HAS_GRAD=grad is not None, ACC=acc_tl,
        num_warps=4 if BLOCK <= 1024 else (8 if BLOCK <= 2048 else 16),
    )
    return loss


class CrossEntropyFunction(torch.autograd.Function):
    """Forward computes loss and d loss / d logits; backward scales the stored gradient by grad_output."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                block_size: int | None = None) -> torch.Tensor:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        shape = logits.shape
        V = shape[-1]
        x = logits.reshape(-1, V)
        if x.stride(-1) != 1:
            x = x.contiguous()
        t = targets.reshape(-1)
        if t.numel() != x.shape[0]:
            raise ValueError(f"targets {tuple(targets.shape)} do not match logits {tuple(shape)}")
        if not t.is_contiguous():
            t = t.contiguous()
        acc_torch, _ = accumulator(logits)
        n_valid, scale = _scale_tensor(t, reduction, acc_torch)
        grad = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        rows = cross_entropy_rows(x, t, grad, scale, block_size)
        if reduction == "mean":
            loss = rows.sum() / n_valid  # 0 / 0 = nan when every target is ignored, as the reference
        elif reduction == "sum":
            loss = rows.sum()
        else:
            loss = rows
        ctx.reduction = reduction
        ctx.shape = shape
        if grad is not None:
            ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            grad_output = grad_output.reshape(-1, 1)
        grad_logits = (grad * grad_output.to(grad.dtype)).view(ctx.shape)
        return grad_logits, None, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                  block_size: int | None = None) -> torch.Tensor:
    """Drop-in for ops.cross_entropy: logits (..., V) any float dtype, targets (...), IGNORE_INDEX ignored.

    Returns the fp32 loss (a scalar for "mean"/"sum", (N,) flattened for "none", as the reference).
    block_size (a power of two) overrides the vocab chunk, for tests."""
    return CrossEntropyFunction.apply(logits, targets, reduction, block_size)
