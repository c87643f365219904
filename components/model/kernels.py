"""Which implementation of the hot-path ops a model uses: our Triton kernels or the PyTorch references.

`auto` (the default) takes the Triton path for CUDA tensors and the reference elsewhere; `triton` and
`torch` force one (tests force `triton` on the CPU under Triton's interpreter). Kernel modules are
imported on first use, so a CPU run never needs Triton and TRITON_INTERPRET is read when it should be."""

from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn.functional as F

from components.model import ops

MODES = ("auto", "triton", "torch")


def _kernel(module: str, name: str) -> Any:
    return getattr(importlib.import_module(f"components.kernels.{module}"), name)


class Kernels:
    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"kernels={mode!r}: choose one of {MODES}")
        self.mode = mode

    def triton(self, x: torch.Tensor) -> bool:
        return self.mode == "triton" or (self.mode == "auto" and x.is_cuda)

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        if self.triton(x):
            return _kernel("rmsnorm", "rms_norm")(x, weight, eps)
        return ops.rms_norm(x, weight, eps)

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.triton(x):
            return _kernel("rope", "apply_rope")(x, cos, sin)
        return ops.apply_rope(x, cos, sin)

    def swiglu(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if self.triton(gate):
            return _kernel("swiglu", "swiglu")(gate, up)
        return ops.swiglu(gate, up)

    def linear_cross_entropy(self, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             reduction: str) -> torch.Tensor:
        """Output head + loss. The Triton path never materialises the (tokens, vocab) logits."""
        if self.triton(hidden) and reduction in ("mean", "sum"):
            fused = _kernel("fused_linear_ce", "fused_linear_cross_entropy")
            flat = hidden.reshape(-1, hidden.size(-1))
            return fused(flat, weight, targets.reshape(-1), reduction=reduction)
        return ops.cross_entropy(F.linear(hidden, weight), targets, reduction=reduction)
