"""Fused LM head + cross-entropy that never materialises the full (N, V) logits (Liger-Kernel's FLCE).

Reference: fused_linear_cross_entropy_reference = ops.cross_entropy(hidden @ weight.T, targets).

The forward walks the tokens in chunks; per chunk of n tokens:

    logits       = hidden_chunk @ weight.T                       (n, V), torch matmul, hidden's dtype
    CE kernel    -> per-row loss, and overwrites logits with (softmax - onehot) * scale   (in place)
    grad_hidden[chunk]  = grad_logits @ weight                   (n, d)
    grad_weight        += grad_logits.T @ hidden_chunk           (V, d), addmm_ in weight's dtype

scale is 1/n_valid over the whole batch for "mean" (so the chunks' gradients add up to the full one) and 1
for "sum". The forward thus returns the loss with both gradients already computed; backward only multiplies
them by grad_output. Peak extra memory: one (chunk, V) logits buffer, plus grad_hidden (N, d) and
grad_weight (V, d). Reduction "none" is not supported (the per-row grad_output arrives after the
gradients have been contracted with hidden/weight): it raises ValueError.

grad_weight accumulates in weight's dtype, as Liger does (for bf16 weights that rounds once per chunk).
All-ignored targets with "mean" give a nan loss and zero gradients, as the reference does.
"""

from __future__ import annotations

import math

import torch
import triton

from components.kernels import accumulator
from components.kernels.cross_entropy import _scale_tensor, cross_entropy_rows
from components.model import ops


def fused_linear_cross_entropy_reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                         reduction: str = "mean") -> torch.Tensor:
    """Pure PyTorch: the full logits, then ops.cross_entropy."""
    return ops.cross_entropy(hidden @ weight.T, targets, reduction=reduction)


def _default_chunk_size(N: int, V: int, d: int) -> int:
    """Liger's heuristic: a logits chunk about the size of hidden (N * d elements), a power of two."""
    inc_factor = max(1, math.ceil(V / d))
    return max(1, triton.next_power_of_2(math.ceil(N / inc_factor)))


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                reduction: str = "mean", chunk_size: int | None = None,
                block_size: int | None = None) -> torch.Tensor:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"fused_linear_cross_entropy supports reduction 'mean' or 'sum', "
                             f"got {reduction!r}")
        if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
            raise ValueError(f"expected hidden (N, d) and weight (V, d), got {tuple(hidden.shape)}, "
                             f"{tuple(weight.shape)}")
        N, d = hidden.shape
        V = weight.shape[0]
        t = targets.reshape(-1)
        if t.numel() != N:
            raise ValueError(f"targets {tuple(targets.shape)} do not match hidden {tuple(hidden.shape)}")
        t = t.contiguous()
        chunk = chunk_size if chunk_size is not None else _default_chunk_size(N, V, d)
        if chunk < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk}")

        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_grad = need_h or need_w
        acc_torch, _ = accumulator(hidden)
        n_valid, scale = _scale_tensor(t, reduction, acc_torch)
        rows = torch.empty(N, dtype=acc_torch, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros_like(weight) if need_w else None

        for start in range(0, N, chunk):
            end = min(start + chunk, N)
            h = hidden[start:end]
            logits = h @ weight.T  # (n, V), contiguous
            # the kernel overwrites logits with d loss / d logits (already scaled for the reduction)
            rows[start:end] = cross_entropy_rows(logits, t[start:end], logits if need_grad else None,
                                                 scale, block_size)
            if need_h:
                torch.matmul(logits, weight, out=grad_hidden[start:end])
            if need_w:
                grad_weight.addmm_(logits.T, h)
            del logits

        loss = rows.sum() / n_valid if reduction == "mean" else rows.sum()
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight * grad_output.to(grad_weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               reduction: str = "mean", chunk_size: int | None = None,
                               block_size: int | None = None) -> torch.Tensor:
    """Cross-entropy of hidden (N, d) @ weight (V, d).T against targets (N,) without the full logits.

    chunk_size: tokens per chunk (default: Liger's heuristic, chunk * V about N * d). block_size: the CE
    kernel's vocab chunk (power of two), for tests. Returns the loss in fp32 (fp64 for fp64 hidden)."""
    return FusedLinearCrossEntropyFunction.apply(hidden, weight, targets, reduction, chunk_size, block_size)
