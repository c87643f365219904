"""Rotary position embedding (half-split / "rotate_half" layout) as a Triton kernel.

Reference: components/model/ops.py::apply_rope. With x = [x1, x2] (the two halves of the head dim) and
cos = [c1, c2], sin = [s1, s2] (the two halves of the tables, equal in Llama's layout):

    forward   y1 = x1*c1 - x2*s1      y2 = x2*c2 + x1*s2
    backward  g1 = d1*c1 + d2*s2      g2 = d2*c2 - d1*s1      (the transpose of the rotation)

With equal halves the backward is the forward with sin negated; the kernel computes the exact transpose
so it stays right for any table. Arithmetic is fp32 (fp64 for fp64 x, which the reference would round
through fp32), results are stored in x's dtype, as the reference does.

One program per (batch, token) row rotates all heads of that token as one (heads, head_dim/2) tile, so
each cos/sin row is loaded once and shared by every head. x is read and the output written through their
strides (no copy): the model's q.view(b, t, h, d).transpose(1, 2) is handled as is, and the output has
x's layout (torch.empty_like), as the reference's elementwise result has. The tables may be (T, D) or
(B, 1, T, D) -- anything broadcastable to (B, 1, T, D); broadcast dims get stride 0. No gradient flows
to cos/sin (they are fixed buffers in the model).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from components.kernels import accumulator


@triton.jit
def _rope_kernel(
    x_ptr, y_ptr, cos_ptr, sin_ptr,
    T, H,
    sx_b, sx_h, sx_t, sx_d,
    sy_b, sy_h, sy_t, sy_d,
    sc_b, sc_t, sc_d,
    HALF: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    BACKWARD: tl.constexpr,
    ACC: tl.constexpr,  # tl.float32, or tl.float64 for fp64 x (so gradcheck sees exact arithmetic)
):
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride can pass 2**31 on large batches
    b = row // T
    t = row % T

    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_HALF)
    d_mask = d < HALF
    mask = (h[:, None] < H) & d_mask[None, :]

    # the two halves of every head of token (b, t): (BLOCK_H, BLOCK_HALF) tiles
    x_row = x_ptr + b * sx_b + t * sx_t
    x_off = h[:, None] * sx_h + d[None, :] * sx_d
    x1 = tl.load(x_row + x_off, mask=mask, other=0.0).to(ACC)
    x2 = tl.load(x_row + x_off + HALF * sx_d, mask=mask, other=0.0).to(ACC)

    # the table row for (b, t), shared by all heads
    c_off = b * sc_b + t * sc_t + d * sc_d
    c1 = tl.load(cos_ptr + c_off, mask=d_mask, other=0.0).to(ACC)[None, :]
    c2 = tl.load(cos_ptr + c_off + HALF * sc_d, mask=d_mask, other=0.0).to(ACC)[None, :]
    s1 = tl.load(sin_ptr + c_off, mask=d_mask, other=0.0).to(ACC)[None, :]
    s2 = tl.load(sin_ptr + c_off + HALF * sc_d, mask=d_mask, other=0.0).to(ACC)[None, :]

    if BACKWARD:
        y1 = x1 * c1 + x2 * s2
        y2 = x2 * c2 - x1 * s1
    else:
        y1 = x1 * c1 - x2 * s1
        y2 = x2 * c2 + x1 * s2

    y_row = y_ptr + b * sy_b + t * sy_t
    y_off = h[:, None] * sy_h + d[None, :] * sy_d
    tl.store(y_row + y_off, y1.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(y_row + y_off + HALF * sy_d, y2.to(y_ptr.dtype.element_ty), mask=mask)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"apply_rope expects x of shape (B, H, T, D), got {tuple(x.shape)}")
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"rotary head dim must be even, got {D}")
    # (T, D) or (B, 1, T, D) (or anything broadcastable): broadcast dims come back with stride 0
    cos = torch.broadcast_to(cos, (B, 1, T, D))
    sin = torch.broadcast_to(sin, (B, 1, T, D))
    if cos.stride() != sin.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    y = torch.empty_like(x)  # keeps x's layout when x is dense (the model's transposed view is)
    if x.numel() == 0:
        return y
    half = D // 2
    grid = (B * T,)
    _rope_kernel[grid](
        x, y, cos, sin,
        T, H,
        *x.stride(), *y.stride(),
        cos.stride(0), cos.stride(2), cos.stride(3),
        HALF=half,
        BLOCK_H=triton.next_power_of_2(H),
        BLOCK_HALF=triton.next_power_of_2(half),
        BACKWARD=backward,
        ACC=accumulator(x)[1],
    )
    return y


class RoPEFunction(torch.autograd.Function):
    """y = rotate(x) by the cos/sin tables; grad_x = transpose-rotate(grad_y). No grad for cos/sin."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rope(x, cos, sin, backward=False)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rope(grad_y, cos, sin, backward=True), None, None


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Drop-in for components.model.ops.apply_rope: x (B, H, T, D); cos/sin (T, D) or (B, 1, T, D)."""
    return RoPEFunction.apply(x, cos, sin)
