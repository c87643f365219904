"""Triton kernels for the pretraining hot path, each beside its PyTorch reference (components/model/ops.py).

Tests run them on the CPU through Triton's interpreter (TRITON_INTERPRET=1, set before these modules
are imported); the model uses them on CUDA."""
