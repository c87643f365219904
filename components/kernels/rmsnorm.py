"""Fused RMSNorm in Triton (forward and backward), after Liger-Kernel's rms_norm.

Same signature and numerics as `components.model.ops.rms_norm`: the mean of squares and the normalisation
are computed in fp32 (fp64 for fp64 inputs), the normalised row is cast back to the input dtype, then
multiplied by the weight; the output has the dtype PyTorch's promotion of (weight, x) gives.

Forward: one program per row, BLOCK = next_power_of_2(n_cols) with a masked tail; 1/rms is stored per row for
the backward. Backward: each program walks a contiguous block of rows, writes dx for each and accumulates its
share of dweight in registers; the per-program partials are summed in PyTorch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from components.kernels import accumulator

MAX_FUSED_SIZE = 65536


def _settings(n_cols: int) -> tuple[int, int]:
    """BLOCK_SIZE and num_warps for a row of n_cols elements (as Liger's calculate_settings)."""
    block = triton.next_power_of_2(n_cols)
    if block > MAX_FUSED_SIZE:
        raise ValueError(f"rms_norm: rows of {n_cols} elements exceed the fused limit of {MAX_FUSED_SIZE}")
    num_warps = 4
    if block >= 32768:
        num_warps = 32
    elif block >= 8192:
        num_warps = 16
    elif block >= 2048:
        num_warps = 8
    return block, num_warps


@triton.jit
def _rms_norm_fwd_kernel(Y_ptr, y_stride, X_ptr, x_stride, W_ptr, RSTD_ptr, n_cols, eps,
                         ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols

    x_raw = tl.load(X_ptr + row * x_stride + cols, mask=mask, other=0.0)
    w_raw = tl.load(W_ptr + cols, mask=mask, other=0.0)
    x = x_raw.to(ACC)
    w = w_raw.to(ACC)

    mean_sq = tl.sum(x * x, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(mean_sq + eps)
    tl.store(RSTD_ptr + row, rstd)

    # The reference casts the normalised row back to the input dtype before multiplying by the weight.
    n = (x * rstd).to(x_raw.dtype).to(x.dtype)
    y = n * w
    tl.store(Y_ptr + row * y_stride + cols, y.to(Y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd_kernel(DY_ptr, dy_stride, DX_ptr, dx_stride, X_ptr, x_stride, W_ptr, RSTD_ptr,
                         DW_ptr, dw_stride, n_rows, n_cols, rows_per_program,
                         ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols

    w_raw = tl.load(W_ptr + cols, mask=mask, other=0.0)
    w = w_raw.to(ACC)
    dw_acc = tl.zeros((BLOCK_SIZE,), dtype=ACC)

    for row in range(row_start, row_end):
        x_raw = tl.load(X_ptr + row * x_stride + cols, mask=mask, other=0.0)
        dy_raw = tl.load(DY_ptr + row * dy_stride + cols, mask=mask, other=0.0)
        rstd = tl.load(RSTD_ptr + row)
        x = x_raw.to(w.dtype)
        dy = dy_raw.to(w.dtype)

        n = x * rstd
        # dweight sees the normalised row as the forward used it: cast to the input dtype.
        dw_acc += dy * n.to(x_raw.dtype).to(w.dtype)

        # y = w * n, n = x * rstd  =>  dx = rstd * (dn - n * mean(dn * n)), dn = dy * w
        # (the cast to the input dtype passes the gradient through, as in autograd).
        dn = dy * w
        dx = rstd * (dn - n * (tl.sum(dn * n, axis=0) / n_cols))
        tl.store(DX_ptr + row * dx_stride + cols, dx.to(DX_ptr.dtype.element_ty), mask=mask)

    tl.store(DW_ptr + pid * dw_stride + cols, dw_acc, mask=mask)


def _num_programs(device: torch.device, n_rows: int) -> int:
    # On the GPU one program per SM; under Triton's interpreter a few programs, each walking many rows.
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return max(1, min(n_rows, sms))


class RMSNormFunction(torch.autograd.Function):
    """y = weight * (x * rsqrt(mean(x^2, -1) + eps)).to(x.dtype), normalised over the last dim."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        shape = x.shape
        n_cols = shape[-1]
        if weight.shape != (n_cols,):
            raise ValueError(f"rms_norm: weight of shape {tuple(weight.shape)} for rows of {n_cols}")
        x2 = x.reshape(-1, n_cols)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        weight = weight.contiguous()
        n_rows = x2.shape[0]
        acc_dtype, acc = accumulator(x, weight)
        out_dtype = torch.promote_types(weight.dtype, x.dtype)
        block, num_warps = _settings(n_cols)

        y = torch.empty((n_rows, n_cols), dtype=out_dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=acc_dtype, device=x.device)
        if n_rows > 0:
            _rms_norm_fwd_kernel[(n_rows,)](y, y.stride(0), x2, x2.stride(0), weight, rstd, n_cols, eps,
                                            ACC=acc, BLOCK_SIZE=block, num_warps=num_warps)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.x_shape = shape
        ctx.acc = acc
        return y.view(*shape[:-1], n_cols)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = x2.shape
        dy2 = dy.reshape(-1, n_cols)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        block, num_warps = _settings(n_cols)
        acc_dtype = rstd.dtype  # the forward's accumulator

        dx = torch.empty_like(x2)
        n_progs = _num_programs(x2.device, n_rows)
        rows_per_program = triton.cdiv(n_rows, n_progs) if n_rows > 0 else 0
        dw_partial = torch.zeros((n_progs, n_cols), dtype=acc_dtype, device=x2.device)
        if n_rows > 0:
            _rms_norm_bwd_kernel[(n_progs,)](dy2, dy2.stride(0), dx, dx.stride(0), x2, x2.stride(0), weight,
                                             rstd, dw_partial, dw_partial.stride(0), n_rows, n_cols,
                                             rows_per_program, ACC=ctx.acc, BLOCK_SIZE=block,
                                             num_warps=num_warps)
        dw = dw_partial.sum(0).to(weight.dtype)
        return dx.view(ctx.x_shape), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Drop-in for `components.model.ops.rms_norm`: any leading dims, normalised over the last one."""
    return RMSNormFunction.apply(x, weight, eps)
