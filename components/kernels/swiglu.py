"""Fused SwiGLU activation in Triton, silu(gate) * up, after Liger-Kernel's swiglu.

Same semantics as `components.model.ops.swiglu` for gate and up of one shape: computed in fp32 (fp64 for fp64
inputs), silu(gate) rounded to gate's dtype as F.silu does, output in the promoted dtype of (gate, up). The
backward recomputes the sigmoid rather than saving it:
    d_gate = dy * up * sig * (1 + gate * (1 - sig)),   d_up = dy * silu(gate).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from components.kernels import accumulator

BLOCK_SIZE = 1024


@triton.jit
def _swiglu_fwd_kernel(GATE_ptr, UP_ptr, OUT_ptr, n_elements,
                       ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    g_raw = tl.load(GATE_ptr + offs, mask=mask, other=0.0)
    u_raw = tl.load(UP_ptr + offs, mask=mask, other=0.0)
    g = g_raw.to(ACC)
    u = u_raw.to(ACC)
    silu = g / (1.0 + tl.exp(-g))
    silu = silu.to(g_raw.dtype).to(g.dtype)  # F.silu returns gate's dtype
    tl.store(OUT_ptr + offs, (silu * u).to(OUT_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(DY_ptr, GATE_ptr, UP_ptr, DGATE_ptr, DUP_ptr, n_elements,
                       ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    dy_raw = tl.load(DY_ptr + offs, mask=mask, other=0.0)
    g_raw = tl.load(GATE_ptr + offs, mask=mask, other=0.0)
    u_raw = tl.load(UP_ptr + offs, mask=mask, other=0.0)
    dy = dy_raw.to(ACC)
    g = g_raw.to(ACC)
    u = u_raw.to(ACC)
    sig = 1.0 / (1.0 + tl.exp(-g))
    silu = g * sig
    d_up = dy * silu
    d_gate = dy * u * sig * (1.0 + g * (1.0 - sig))
    tl.store(DGATE_ptr + offs, d_gate.to(DGATE_ptr.dtype.element_ty), mask=mask)
    tl.store(DUP_ptr + offs, d_up.to(DUP_ptr.dtype.element_ty), mask=mask)


class SwiGLUFunction(torch.autograd.Function):
    """silu(gate) * up for gate and up of the same shape."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if gate.shape != up.shape:
            raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ in shape")
        gate_c, up_c = gate.contiguous(), up.contiguous()
        _, acc = accumulator(gate, up)
        out = torch.empty(gate.shape, dtype=torch.promote_types(gate.dtype, up.dtype), device=gate.device)
        n = gate_c.numel()
        if n > 0:
            _swiglu_fwd_kernel[(triton.cdiv(n, BLOCK_SIZE),)](gate_c, up_c, out, n, ACC=acc,
                                                             BLOCK_SIZE=BLOCK_SIZE)
        ctx.save_for_backward(gate_c, up_c)
        ctx.acc = acc
        return out

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        gate, up = ctx.saved_tensors
        dy = dy.contiguous()
        d_gate = torch.empty_like(gate)
        d_up = torch.empty_like(up)
        n = gate.numel()
        if n > 0:
            _swiglu_bwd_kernel[(triton.cdiv(n, BLOCK_SIZE),)](dy, gate, up, d_gate, d_up, n,
                                                             ACC=ctx.acc, BLOCK_SIZE=BLOCK_SIZE)
        return d_gate, d_up


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Drop-in for `components.model.ops.swiglu` (gate and up of one shape)."""
    return SwiGLUFunction.apply(gate, up)
