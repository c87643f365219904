"""Kernel tests: on a machine without a GPU, Triton's interpreter runs the kernels on the CPU. It must be
switched on before any module that defines a kernel is imported, hence here, at collection."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="bf16 arithmetic needs a GPU: Triton's interpreter "
                               "computes bf16 wrongly (it loads bf16, computes in fp32, stores bf16)")
