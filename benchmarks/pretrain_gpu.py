"""End-to-end GPU benchmark: GPT-2-124M-size pretraining tokens/s and MFU with our Triton kernels against
the PyTorch references (SDPA attention in both), one GPU, bf16 autocast. One command:

    python benchmarks/pretrain_gpu.py [--steps 30] [--micro-batch 16] [--compile]

Random tokens (throughput does not depend on the data); the model is `profile=gpt2`'s. The variants
alternate ABAB so clock and thermal drift cancel."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.data_throughput import machine_info, package_versions, result_header  # noqa: E402

PACKAGES = ("torch", "triton", "lightning")
GOAL_TOKENS_PER_S = 500_000  # one H100; llm.c's PyTorch trainer reaches about 460k


def model_config() -> Any:
    from components.config import load_config
    from components.training.pretrain import model_config as build

    cfg = load_config(["profile=gpt2"])
    return build(cfg, int(cfg.tokenizer.vocab_size))


def measure(kernels: str, steps: int, warmup: int, micro_batch: int, compile_model: bool) -> dict[str, Any]:
    from components.model.gpt import GPT

    cfg = model_config()
    torch.manual_seed(0)
    model = GPT(cfg, kernels=kernels).cuda()
    if compile_model:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), fused=True)
    x = torch.randint(0, cfg.vocab_size, (micro_batch, cfg.seq_len + 1), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    tokens = micro_batch * cfg.seq_len
    median = statistics.median(times)
    return {"kernels": kernels, "median_step_s": round(median, 5), "tokens_per_s": round(tokens / median),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "final_loss": float(loss), "flops_per_token": cfg.flops_per_token(), "params": cfg.num_params()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("pretrain_gpu.py measures GPU training: run it on a CUDA machine", file=sys.stderr)
        return 2
    from lightning.fabric.utilities.throughput import get_available_flops

    name = torch.cuda.get_device_name()
    peak = get_available_flops(torch.device("cuda"), torch.bfloat16)
    runs = [measure(k, args.steps, args.warmup, args.micro_batch, args.compile)
            for _ in range(args.rounds) for k in ("triton", "torch")]
    summary = {}
    for k in ("triton", "torch"):
        tps = statistics.median(r["tokens_per_s"] for r in runs if r["kernels"] == k)
        flops = runs[0]["flops_per_token"]
        summary[k] = {"tokens_per_s": tps, "mfu": round(tps * flops / peak, 4) if peak else None}
    ratio = summary["triton"]["tokens_per_s"] / summary["torch"]["tokens_per_s"]
    machine = {**machine_info(), "gpu": name, "cuda": torch.version.cuda, "peak_bf16_flops": peak}
    result = {**result_header("pretrain_gpu", argv, machine, package_versions(PACKAGES)),
              "settings": vars(args) | {"out": str(args.out)}, "runs": runs, "summary": summary,
              "ratio_kernels_over_reference": round(ratio, 3), "goal_tokens_per_s": GOAL_TOKENS_PER_S,
              "goal_met": summary["triton"]["tokens_per_s"] >= GOAL_TOKENS_PER_S}
    out = args.out or REPO / "benchmarks" / "results" / f"pretrain_{name.replace(' ', '-').lower()}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary), f"ratio {ratio:.3f}", f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
