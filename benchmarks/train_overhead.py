"""Tokens per second of our Lightning pretraining loop vs. a minimal plain-PyTorch loop, same everything.

    python benchmarks/train_overhead.py [--steps N] [--untimed-steps W] [--rounds R] [--threads T]
                                        [--set KEY=VALUE ...] [--out PATH]

Why: `run_pretraining` puts a LightningModule, a Trainer, our callbacks (ThroughputLogger, checkpointing,
samples) and `self.log` around a training step; the goal is that all of that costs at most 5% of the
tokens/s of the bare loop (ratio lightning/plain >= 0.95) on the CPU. Both loops train the same model
(same init from the same seed), on the same TrainWindows batches, with the same AdamW param groups and
LambdaLR schedule (built by `PretrainModule.configure_optimizers`), the same gradient clipping and fp32,
in one process with the same torch threads, alternating (ABBA) so machine drift hits both alike. Their
per-step losses are compared as a check that they did the same work. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from anywhere, installed or not

from benchmarks.data_throughput import (  # noqa: E402
    CpuMeter,
    load_average,
    log,
    machine_info,
    package_versions,
    result_header,
    wait_for_quiet,
)

GOAL = 0.05  # overhead = 1 - lightning/plain tokens/s
PACKAGES = ("torch", "lightning", "numpy", "hydra-core")
VARIANTS = ("plain", "lightning")


def build_token_store(out: Path, vocab_size: int) -> dict[str, Any]:
    """Tokenizer + token store from Python's docs, as tests/token_fixtures.py builds them: offline, fixed."""
    from pydoc_data.topics import topics

    from components.tokenizer.bpe import train_bpe
    from components.tokenizer.token_store import TokenStoreInfo, write_token_store

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    texts = [topics[k] for k in sorted(topics)]
    tokenizer = train_bpe(texts, vocab_size)
    tokenizer.save(out / "tokenizer.json")
    write_token_store((tokenizer.encode(t) for t in texts), out / "tokens", tokenizer.vocab_size,
                      tokenizer.bos_id, val_fraction=0.1, seed=0)
    info = TokenStoreInfo.load(out / "tokens")
    return {"source": "pydoc_data.topics", "python": platform.python_version(),
            "vocab_size": tokenizer.vocab_size, "train_tokens": info.n_tokens["train"],
            "val_tokens": info.n_tokens["val"]}


def overrides(root: Path, tokenizer_dir: Path, profile: str, total_steps: int, extra: list[str]) -> list[str]:
    """One config for both loops. Validation, checkpoints and samples fall outside the run (they are
    periodic events, not per-step overhead); logging and the ThroughputLogger keep their cadence."""
    never = total_steps + 1000
    return [f"profile={profile}", f"paths.root={root}", f"pretrain.tokenizer_dir={tokenizer_dir}",
            f"pretrain.max_steps={total_steps}", f"pretrain.val_every_n_steps={never}",
            f"pretrain.checkpoint_every_n_steps={never}", "pretrain.sample.prompts=[]",
            "pretrain.export_hf=false", "pretrain.resume=false", "pretrain.accelerator=cpu",
            "pretrain.devices=1", "pretrain.progress_bar=false", "pretrain.val_sequences=16", *extra]


@dataclass
class Timing:
    """Where the timed window starts and ends (micro-batch indices) and what was seen in between."""

    first: int  # the window opens at the start of this step (after `first` untimed steps)
    steps: int  # ... and closes at the start of step first + steps: exactly `steps` whole iterations
    start: float | None = None
    end: float | None = None
    losses: list[Any] = field(default_factory=list)
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    ticks: list[float] = field(default_factory=list)

    def mark(self, step: int) -> None:
        if self.first <= step <= self.first + self.steps:
            now = time.perf_counter()
            self.ticks.append(now)
            if step == self.first:
                self.start = now
            elif step == self.first + self.steps:
                self.end = now

    def step_ms(self) -> list[float]:
        """Each timed step's wall time: the spread says how noisy the machine was."""
        return [1000 * (b - a) for a, b in zip(self.ticks, self.ticks[1:], strict=False)]

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError(f"the timed window [{self.first}, {self.first + self.steps}) was not reached")
        return self.end - self.start


# --- the two loops ------------------------------------------------------------------------------


def run_plain(cfg: Any, timing: Timing) -> dict[str, Any]:
    """The bare loop: next batch, forward, backward, clip, step, schedule, zero grads. Everything it
    needs comes from the same config and the same production classes as run_pretraining's."""
    import torch
    from torch.utils.data import DataLoader

    from components.tokenizer.bpe import Tokenizer
    from components.training.data import PretrainData, TrainWindows
    from components.training.pretrain import model_config
    from components.training.pretrain_module import OptimConfig, PretrainModule

    p = cfg.pretrain
    tokenizer_dir = Path(p.tokenizer_dir)
    model_cfg = model_config(cfg, Tokenizer.load(tokenizer_dir).vocab_size)
    store = tokenizer_dir / "tokens"
    optim = OptimConfig(**dict(p.optim), max_steps=int(p.max_steps))
    torch.manual_seed(int(p.seed))  # what L.seed_everything does for torch: the same initial weights
    # The LightningModule only builds the GPT and the optimizer (configure_optimizers needs no trainer);
    # the loop below calls the GPT directly.
    module = PretrainModule(model_cfg, optim)
    model = module.model
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    plan = PretrainData(store, model_cfg.seq_len, int(p.micro_batch_size), int(p.accumulate), int(p.seed),
                        int(p.val_sequences)).plan(1)
    batches = iter(DataLoader(TrainWindows(store, plan, 0, 1, 0), batch_size=None))
    clip = float(p.grad_clip) if p.grad_clip else None
    # Clip over the optimizer's parameters, in its groups' order, as Lightning does: the global norm is
    # then summed in the same order and the two loops stay bitwise identical.
    params = [q for group in optimizer.param_groups for q in group["params"]]
    timing.threads = torch.get_num_threads()

    model.train()
    for step in range(int(p.max_steps)):
        timing.mark(step)
        x, y = next(batches)
        loss = model(x, y)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        timing.losses.append(loss.detach())
    return {}


def run_lightning(cfg: Any, timing: Timing) -> dict[str, Any]:
    """`run_pretraining` itself, with its ThroughputLogger swapped for a subclass that also marks the
    timed window; every other callback, the module, the data module and the Trainer are production's."""
    from unittest import mock

    import torch

    from components.training import pretrain

    class TimedThroughputLogger(pretrain.ThroughputLogger):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            super().on_train_start(trainer, pl_module)
            timing.threads = torch.get_num_threads()
            timing.extra["callbacks"] = [type(c).__name__ for c in trainer.callbacks]
            timing.extra["precision"] = str(trainer.precision)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            timing.mark(trainer.global_step)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            timing.losses.append(outputs["loss"].detach())

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            # Read here, not per step: trainer.callback_metrics recomputes the logged metrics.
            logged = trainer.callback_metrics.get("train/tokens_per_s")
            if logged is not None:  # its last logging window, for comparison with ours
                timing.extra["throughput_logger_tokens_per_s"] = round(float(logged), 1)

    shutil.rmtree(cfg.pretrain.output_dir, ignore_errors=True)
    with mock.patch.object(pretrain, "ThroughputLogger", TimedThroughputLogger):
        result = pretrain.run_pretraining(cfg)
    return {"fit_seconds": round(result.metrics["train_seconds_this_run"], 3),
            "steps_trained": result.metrics["steps"]}


# --- driver -------------------------------------------------------------------------------------


def run_once(variant: str, cfg: Any, untimed: int, steps: int, tokens_per_step: int) -> dict[str, Any]:
    timing = Timing(untimed, steps)
    load = load_average()
    cpu = CpuMeter()
    wall = time.perf_counter()
    extra = (run_plain if variant == "plain" else run_lightning)(cfg, timing)
    wall = time.perf_counter() - wall
    usage = cpu.stop()
    usage.pop("prefect_server_s", None)
    seconds, per_step = timing.seconds, sorted(timing.step_ms())
    return {"variant": variant, "seconds": round(seconds, 4), "steps": steps,
            "tokens_per_s": round(steps * tokens_per_step / seconds, 1),
            "ms_per_step": round(1000 * seconds / steps, 3),
            "step_ms_min_median_max": [round(per_step[0], 3), round(statistics.median(per_step), 3),
                                       round(per_step[-1], 3)],
            "call_seconds": round(wall, 3), "torch_threads": timing.threads, "load_before": load,
            "cpu": usage, "losses": [float(x) for x in timing.losses], **extra, **timing.extra}


def measure(cfg: Any, rounds: int, untimed: int, steps: int, tokens_per_step: int, label: str
            ) -> list[dict[str, Any]]:
    """Both loops `rounds` times, ABBA (plain, lightning, lightning, plain, ...): drift hits both alike."""
    runs: list[dict[str, Any]] = []
    for rnd in range(1, rounds + 1):
        for variant in VARIANTS if rnd % 2 else VARIANTS[::-1]:
            run = {"round": rnd, **run_once(variant, cfg, untimed, steps, tokens_per_step)}
            runs.append(run)
            log(f"{label} round {rnd} {variant}: {run['tokens_per_s']} tokens/s ({run['ms_per_step']} "
                f"ms/step), final loss {run['losses'][-1]:.4f}, other processes "
                f"{run['cpu']['other_processes_s']} CPU-s")
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per loop; ratio of the medians (the goal's measure) and the median of each round's ratio
    (a pair ran back to back, so slow drift cancels within it)."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        out[variant] = {"tokens_per_s": [r["tokens_per_s"] for r in mine],
                        "ms_per_step": [r["ms_per_step"] for r in mine],
                        "median_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in mine), 1),
                        "median_ms_per_step": round(statistics.median(r["ms_per_step"] for r in mine), 3)}
    plain, lightning = out["plain"], out["lightning"]
    ratio = lightning["median_tokens_per_s"] / plain["median_tokens_per_s"]
    pairs = [lt / pt for pt, lt in zip(plain["tokens_per_s"], lightning["tokens_per_s"], strict=True)]
    out.update({
        "ratio": round(ratio, 4), "overhead": round(1 - ratio, 4),
        "overhead_ms_per_step": round(lightning["median_ms_per_step"] - plain["median_ms_per_step"], 3),
        "round_ratios": [round(x, 4) for x in pairs],
        "median_round_ratio": round(statistics.median(pairs), 4),
    })
    return out


def compare_losses(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Same init, data, optimizer and order of floating-point work: the loss curves should agree."""
    plain = [r["losses"] for r in runs if r["variant"] == "plain"]
    lightning = [r["losses"] for r in runs if r["variant"] == "lightning"]
    a, b = plain[0], lightning[0]
    if len(a) != len(b):
        raise RuntimeError(f"plain ran {len(a)} steps, lightning {len(b)}")
    return {"steps": len(a), "first_loss": {"plain": a[0], "lightning": b[0]},
            "final_loss": {"plain": a[-1], "lightning": b[-1]},
            "max_abs_diff": max(abs(x - y) for x, y in zip(a, b, strict=True)),
            "bitwise_identical": a == b,
            "repeatable": all(x == a for x in plain) and all(x == b for x in lightning)}


def strip_losses(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "losses"} | {"final_loss": r["losses"][-1]} for r in runs]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo", help="config profile (demo: the 4 x 128, 256-token model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override for both loops, e.g. model.n_layer=2 (repeatable)")
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary of the benchmark's store")
    p.add_argument("--untimed-steps", type=int, default=5, help="steps at the start of each run not timed")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--rounds", type=int, default=8, help="runs of each loop, alternating ABBA")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: usable cores)")
    p.add_argument("--no-fixed-cost", action="store_true",
                   help="skip the per-step fixed cost probe (a model so small that a step is mostly Python)")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (default: benchmarks/results/train_overhead_cpu-<cores>core.json)")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "llmops-bench" / "train",
                   help="token store and Lightning outputs (rebuilt each invocation)")
    p.add_argument("--max-load", type=float, default=0.5,
                   help="wait for the 1-minute load average to drop below this before measuring")
    p.add_argument("--max-wait", type=float, default=900, help="give up waiting for low load after this (s)")
    return p.parse_args(argv)


# The fixed-cost probe: one layer of width 16, 16 tokens, batch 1. Its step is a few ms of mostly Python
# and op dispatch, so the Lightning - plain difference (the per-step cost of the Trainer, callbacks and
# logging, which does not grow with the model) stands out of the machine's noise.
PROBE_OVERRIDES = ("model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.seq_len=16",
                   "pretrain.micro_batch_size=1")
PROBE_UNTIMED, PROBE_STEPS, PROBE_ROUNDS = 20, 200, 4


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.untimed_steps < 1:
        raise SystemExit("--rounds, --steps and --untimed-steps must be >= 1")
    import torch

    from components.config import load_config
    from components.tokenizer.bpe import Tokenizer
    from components.training.pretrain import model_config

    machine = machine_info()
    threads = args.threads or machine["usable_cores"]
    torch.set_num_threads(threads)  # both loops run in this process: the same intra-op pool
    work = args.work_dir.expanduser().absolute()
    tokenizer_dir = work / "tokenizer"
    store = build_token_store(tokenizer_dir, args.vocab_size)
    vocab = Tokenizer.load(tokenizer_dir).vocab_size

    def config(steps: int, *extra: str) -> Any:
        extras = [*args.overrides, *extra]
        return load_config(overrides(work / "run", tokenizer_dir, args.profile, steps, extras))

    total = args.untimed_steps + args.steps + 1  # + the step whose start closes the window
    cfg = config(total)
    p = cfg.pretrain
    if int(p.accumulate) != 1:
        raise SystemExit("the plain loop has no gradient accumulation: keep pretrain.accumulate=1")
    model_cfg = model_config(cfg, vocab)
    tokens_per_step = int(p.micro_batch_size) * model_cfg.seq_len
    probe_cfg = config(PROBE_UNTIMED + PROBE_STEPS + 1, *PROBE_OVERRIDES)
    probe_model = model_config(probe_cfg, vocab)
    probe_tokens = int(probe_cfg.pretrain.micro_batch_size) * probe_model.seq_len
    log(f"model {model_cfg.num_params():,} params, batch {p.micro_batch_size} x {model_cfg.seq_len}, "
        f"{threads} threads, {args.untimed_steps} + {args.steps} (+1) steps per run, {args.rounds} rounds")

    log("warm-up (untimed): one short run of each loop (first-use imports, allocator)")
    for variant in VARIANTS:
        run_once(variant, config(3), 1, 1, tokens_per_step)

    waited = wait_for_quiet(args.max_load, args.max_wait)
    load_before = load_average()
    log(f"measuring; load {load_before}")
    runs = measure(cfg, args.rounds, args.untimed_steps, args.steps, tokens_per_step, "main")
    probe_runs = [] if args.no_fixed_cost else measure(probe_cfg, PROBE_ROUNDS, PROBE_UNTIMED, PROBE_STEPS,
                                                       probe_tokens, "fixed-cost probe")
    load_after = load_average()

    summary = summarize(runs)
    fixed_cost = None
    if probe_runs:
        probe = summarize(probe_runs)
        per_step_ms = probe["overhead_ms_per_step"]
        fixed_cost = {
            "what": "the same two loops on a model so small that a step is mostly Python: Lightning's extra "
                    "ms per step here is what the Trainer, callbacks and self.log add per step, whatever "
                    "the model size",
            "overrides": list(PROBE_OVERRIDES), "params": probe_model.num_params(),
            "untimed_steps": PROBE_UNTIMED, "timed_steps": PROBE_STEPS, "rounds": PROBE_ROUNDS,
            **probe, "losses": compare_losses(probe_runs),
            "projected_overhead": round(per_step_ms / summary["lightning"]["median_ms_per_step"], 4),
            "runs": strip_losses(probe_runs),
        }
    result = {
        **result_header("train_overhead", argv, machine, package_versions(PACKAGES)),
        "torch_threads": threads,
        "token_store": store,
        "setup": {
            "profile": args.profile, "overrides": args.overrides, "model": model_cfg.to_dict(),
            "params": model_cfg.num_params(), "micro_batch_size": int(p.micro_batch_size),
            "tokens_per_step": tokens_per_step, "optim": dict(p.optim), "grad_clip": p.grad_clip,
            "precision": "32-true", "seed": int(p.seed), "log_every_n_steps": int(p.log_every_n_steps),
            "untimed_steps": args.untimed_steps, "timed_steps": args.steps, "steps_per_run": total,
            "rounds": args.rounds, "order": "ABBA (plain, lightning, lightning, plain, ...)",
        },
        "timing": ("wall clock over `timed_steps` whole iterations of each loop: from the start of step "
                   "`untimed_steps` to the start of step untimed_steps + timed_steps (plain: top of the "
                   "loop body; lightning: on_train_batch_start). Setup, the first steps, the last step "
                   "and everything after (final validation, checkpoint, model save) are outside."),
        "variants": {
            "plain": "next(DataLoader(TrainWindows)), model(x, y), backward, clip_grad_norm_, "
                     "optimizer.step, scheduler.step, zero_grad(set_to_none=True)",
            "lightning": "components.training.pretrain.run_pretraining(cfg) with its callbacks, no logger "
                         "(as `python -m components.training.pretrain`; the flow adds MLflow's)",
        },
        "load_average": {"waited_s": waited, "before": load_before, "after": load_after,
                         "max_load": args.max_load},
        "runs": strip_losses(runs),
        **summary,
        "goal": f"overhead <= {GOAL}",
        "goal_met": summary["overhead"] <= GOAL,
        "losses": compare_losses(runs),
        "fixed_cost_probe": fixed_cost,
    }
    kind = f"cpu-{machine['usable_cores']}core"
    out = args.out or REPO / "benchmarks" / "results" / f"train_overhead_{kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    probe_note = "" if fixed_cost is None else (
        f"; fixed cost {fixed_cost['overhead_ms_per_step']} ms/step = {fixed_cost['projected_overhead']:.1%} "
        "of a step")
    log(f"plain {summary['plain']['median_tokens_per_s']} tokens/s, lightning "
        f"{summary['lightning']['median_tokens_per_s']} tokens/s: ratio {summary['ratio']}, overhead "
        f"{summary['overhead']:.1%} (goal <= {GOAL:.0%}: {'met' if result['goal_met'] else 'NOT met'})"
        f"{probe_note}; final losses {result['losses']['final_loss']}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
