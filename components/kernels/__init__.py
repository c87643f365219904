"""Triton kernels for the pretraining hot path, each beside its PyTorch reference (components/model/ops.py).

Tests run them on the CPU through Triton's interpreter (TRITON_INTERPRET=1, set before these modules
are imported); the model uses them on CUDA."""

from __future__ import annotations

import torch
import triton.language as tl


def accumulator(*tensors: torch.Tensor) -> tuple[torch.dtype, tl.dtype]:
    """The dtype kernels compute in: fp32, or fp64 when an input is fp64 (so gradcheck sees exact
    arithmetic). Passed to a kernel as its `ACC` constexpr."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64, tl.float64
    return torch.float32, tl.float32
