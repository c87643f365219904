"""Per-kernel GPU benchmark: our Triton kernels against PyTorch eager, torch.compile and Liger Kernel
(when installed), forward + backward, at LLM shapes. One command on a CUDA machine:

    python benchmarks/kernels_gpu.py [--quick] [--out benchmarks/results/kernels_<gpu>.json]

Times are `triton.testing.do_bench` quantiles (median, p20, p80) in ms; peak memory is
`torch.cuda.max_memory_allocated` over one forward + backward, beyond the inputs. Memory-bound kernels
also report achieved bandwidth (bytes read + written once / median time) against the GPU's peak."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.data_throughput import machine_info, package_versions, result_header  # noqa: E402

PACKAGES = ("torch", "triton", "liger-kernel")
# Peak HBM bandwidth (bytes/s) by GPU name, for the bandwidth fraction of memory-bound kernels.
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def peak_bandwidth(name: str) -> float | None:
    return next((v for k, v in PEAK_BANDWIDTH.items() if k in name), None)


def bench(fn: Callable[[], Any]) -> dict[str, float]:
    """fn runs one forward + backward. Median/p20/p80 ms and extra peak memory in MiB."""
    from triton.testing import do_bench

    median, p20, p80 = do_bench(fn, quantiles=[0.5, 0.2, 0.8])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return {"ms_median": median, "ms_p20": p20, "ms_p80": p80, "peak_mib": round(peak, 1)}


def fwd_bwd(op: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        for t in inputs:
            t.grad = None
        out = op(*inputs)
        (out if out.ndim == 0 else out.float().sum()).backward()
    return run


def liger(name: str) -> Callable[..., torch.Tensor] | None:
    """Liger's functional ops, adapted to our signatures (None when Liger is not installed)."""
    try:
        from liger_kernel.transformers import functional as lf
    except ImportError:
        return None
    adapters = {
        "rms_norm": lambda x, w, eps: lf.liger_rms_norm(x, w, eps),
        "swiglu": lambda g, u: lf.liger_swiglu(g, u),
        "cross_entropy": lambda logits, t: lf.liger_cross_entropy(logits, t),
        "fused_linear_ce": lambda h, w, t: lf.liger_fused_linear_cross_entropy(h, w, t),
    }
    return adapters.get(name)


def cases(quick: bool) -> list[dict[str, Any]]:
    tokens = 4096 if quick else 16384
    hidden = [768] if quick else [768, 2048, 4096]
    vocab = [32768] if quick else [32768, 50304, 128256]
    out: list[dict[str, Any]] = []
    for d in hidden:
        out.append({"kernel": "rms_norm", "tokens": tokens, "hidden": d})
        out.append({"kernel": "swiglu", "tokens": tokens, "hidden": int(8 * d / 3) // 64 * 64})
        out.append({"kernel": "rope", "tokens": tokens, "hidden": d})
    for v in vocab:
        out.append({"kernel": "cross_entropy", "tokens": min(tokens, 8192), "vocab": v})
        out.append({"kernel": "fused_linear_ce", "tokens": tokens, "hidden": 768, "vocab": v})
    return out


def build(case: dict[str, Any], dtype: torch.dtype) -> tuple[dict[str, Callable[..., Any]], tuple, int]:
    """The variants' ops, their inputs, and the bytes a memory-bound kernel must move (0: compute-bound)."""
    from components.kernels import cross_entropy as ce
    from components.kernels import fused_linear_ce as flce
    from components.kernels import rmsnorm, rope, swiglu
    from components.model import ops

    dev, n = "cuda", case["tokens"]
    size = torch.empty((), dtype=dtype).element_size()
    if case["kernel"] == "rms_norm":
        d = case["hidden"]
        x = torch.randn(n, d, device=dev, dtype=dtype, requires_grad=True)
        w = torch.ones(d, device=dev, dtype=dtype, requires_grad=True)
        eps = 1e-5
        variants = {"ours": lambda a, b: rmsnorm.rms_norm(a, b, eps),
                    "eager": lambda a, b: ops.rms_norm(a, b, eps),
                    "liger": (lambda a, b: lg(a, b, eps)) if (lg := liger("rms_norm")) else None}
        return variants, (x, w), 4 * n * d * size  # fwd: read x, write y; bwd: read x, dy, write dx
    if case["kernel"] == "swiglu":
        d = case["hidden"]
        g = torch.randn(n, d, device=dev, dtype=dtype, requires_grad=True)
        u = torch.randn(n, d, device=dev, dtype=dtype, requires_grad=True)
        variants = {"ours": swiglu.swiglu, "eager": ops.swiglu, "liger": liger("swiglu")}
        return variants, (g, u), 8 * n * d * size  # fwd 2 in 1 out; bwd 3 in 2 out
    if case["kernel"] == "rope":
        heads, hd = case["hidden"] // 64, 64
        x = torch.randn(n // 1024, heads, 1024, hd, device=dev, dtype=dtype, requires_grad=True)
        cos, sin = ops.rope_tables(1024, hd, 10000.0, device=torch.device(dev))
        variants = {"ours": lambda a: rope.apply_rope(a, cos, sin),
                    "eager": lambda a: ops.apply_rope(a, cos, sin), "liger": None}
        return variants, (x,), 4 * x.numel() * size
    if case["kernel"] == "cross_entropy":
        logits = torch.randn(n, case["vocab"], device=dev, dtype=dtype, requires_grad=True)
        t = torch.randint(0, case["vocab"], (n,), device=dev)
        variants = {"ours": lambda a: ce.cross_entropy(a, t), "eager": lambda a: ops.cross_entropy(a, t),
                    "liger": (lambda a: lg(a, t)) if (lg := liger("cross_entropy")) else None}
        return variants, (logits,), 0
    h = torch.randn(n, case["hidden"], device=dev, dtype=dtype, requires_grad=True)
    w = torch.randn(case["vocab"], case["hidden"], device=dev, dtype=dtype, requires_grad=True) * 0.02
    w = w.detach().requires_grad_()
    t = torch.randint(0, case["vocab"], (n,), device=dev)
    variants = {"ours": lambda a, b: flce.fused_linear_cross_entropy(a, b, t),
                "eager": lambda a, b: ops.cross_entropy(a @ b.T, t),
                "liger": (lambda a, b: lg(a, b, t)) if (lg := liger("fused_linear_ce")) else None}
    return variants, (h, w), 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one hidden size and vocabulary, fewer tokens")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernels_gpu.py measures GPU kernels: run it on a CUDA machine", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name()
    machine = {**machine_info(), "gpu": name, "driver": torch.version.cuda,
               "peak_bandwidth_bytes_per_s": peak_bandwidth(name)}
    rows = []
    for case in cases(args.quick):
        variants, inputs, nbytes = build(case, dtype)
        if variants.get("eager") is not None:
            variants["torch.compile"] = torch.compile(variants["eager"])
        row: dict[str, Any] = {**case, "dtype": args.dtype}
        for label, op in variants.items():
            if op is None:
                row[label] = "not installed"
                continue
            try:
                row[label] = bench(fwd_bwd(op, *inputs))
            except Exception as e:  # a variant that fails at a shape is recorded, not fatal
                row[label] = f"failed: {type(e).__name__}: {e}"[:300]
            if isinstance(row[label], dict) and nbytes and machine["peak_bandwidth_bytes_per_s"]:
                achieved = nbytes / (row[label]["ms_median"] / 1e3)
                row[label]["bandwidth_fraction"] = round(achieved / machine["peak_bandwidth_bytes_per_s"], 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {**result_header("kernels_gpu", argv, machine, package_versions(PACKAGES)), "cases": rows}
    slug = name.replace(" ", "-").lower()
    out = args.out or REPO / "benchmarks" / "results" / f"kernels_{slug}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
