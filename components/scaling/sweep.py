"""The sweep: which short pretraining runs to make, the config of each, and one run as one call.

Two designs (`scaling.sweep.mode`):
* `grid`: every model size in `sweep.sizes` at every token budget in `sweep.tokens`;
* `isoflop`: every size at every compute budget in `sweep.flops`, its tokens D = C / (FLOPs per token),
  so each budget traces one IsoFLOP curve (Chinchilla's Approach 2).

Every run is a complete pretraining run of its own length: warmup and cosine decay are set from the run's
own step count, never a longer run cut short (Hoffmann et al. found truncated schedules overestimate the
loss of small budgets). Runs live under `${scaling.output_dir}/runs/<name>/`; each is resumable like any
pretraining run, so rerunning a sweep only trains what is missing.

Counting (`scaling.counting`): N with or without the token embedding (`embeddings`), and C = 6 N D, plus
the attention score/value FLOPs 12 n_layer n_embd seq_len per token when `attention_flops` is on.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from components.model.config import GPTConfig

FIT, HOLDOUT = "fit", "holdout"


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep: a model shape, a step count, and what the counting makes of them."""

    name: str
    role: str  # "fit": used by the fits; "holdout": predicted by them
    n_layer: int
    n_embd: int
    n_head: int
    lr: float
    steps: int
    tokens_per_step: int
    N: int  # parameters as counted (scaling.counting.embeddings)
    N_with_embeddings: int
    N_non_embedding: int
    flops_per_token: float  # as counted: 6 N (+ attention)
    budget: float  # the budget the point was made for: tokens (grid) or FLOPs (isoflop)

    @property
    def D(self) -> int:
        return self.steps * self.tokens_per_step

    @property
    def C(self) -> float:
        return self.flops_per_token * self.D

    def to_dict(self) -> dict:
        return {**asdict(self), "D": self.D, "C": self.C}


def counted(model: GPTConfig, counting: DictConfig) -> tuple[int, float]:
    """(N, FLOPs per token) under the configured counting."""
    n = model.num_params(embeddings=bool(counting.embeddings))
    per_token = 6.0 * n
    if counting.attention_flops:
        per_token += 12.0 * model.n_layer * model.n_embd * model.seq_len
    return n, per_token


def model_for(cfg: DictConfig, size: DictConfig | dict, vocab_size: int) -> GPTConfig:
    """The project's model config with one sweep size's shape (and the sweep's context length)."""
    shape = {k: v for k, v in dict(size).items() if k != "lr"}
    unknown = set(shape) - {"n_layer", "n_embd", "n_head", "n_kv_head", "ffn_hidden"}
    if unknown:
        raise ValueError(f"scaling.sweep.sizes: unknown key(s) {sorted(unknown)} in {dict(size)}; "
                         "use n_layer, n_embd, n_head (optionally n_kv_head, ffn_hidden, lr)")
    base = OmegaConf.to_container(cfg.model, resolve=True)
    return GPTConfig.from_dict({**base, **shape, "seq_len": int(cfg.scaling.sweep.seq_len),
                                "vocab_size": vocab_size})


def make_point(cfg: DictConfig, size: dict, steps: int, role: str, budget: float,
               vocab_size: int) -> SweepPoint:
    s = cfg.scaling
    model = model_for(cfg, size, vocab_size)
    n, per_token = counted(model, s.counting)
    lr = float(size.get("lr", s.sweep.lr))
    name = f"L{model.n_layer}-E{model.n_embd}-{steps}steps"
    return SweepPoint(name, role, model.n_layer, model.n_embd, model.n_head, lr, steps,
                      tokens_per_step(cfg), n, model.num_params(True), model.num_params(False), per_token,
                      float(budget))


def tokens_per_step(cfg: DictConfig) -> int:
    return int(cfg.scaling.sweep.micro_batch_size) * int(cfg.scaling.sweep.seq_len)


def steps_for(tokens: float, cfg: DictConfig) -> int:
    """Optimizer steps that see (closest to) `tokens` tokens; at least sweep.min_steps."""
    return max(int(cfg.scaling.sweep.min_steps), round(float(tokens) / tokens_per_step(cfg)))


def plan_sweep(cfg: DictConfig, vocab_size: int) -> list[SweepPoint]:
    """Every run of the sweep (the fit points, then the held-out run if configured), with no duplicates."""
    sw = cfg.scaling.sweep
    sizes = [OmegaConf.to_container(x, resolve=True) for x in sw.sizes]
    if not sizes:
        raise ValueError("scaling.sweep.sizes is empty: give at least one model shape")
    points: list[SweepPoint] = []
    if sw.mode == "grid":
        if not sw.tokens:
            raise ValueError("scaling.sweep.mode=grid needs scaling.sweep.tokens (token budgets)")
        for size in sizes:
            for tokens in sw.tokens:
                points.append(make_point(cfg, size, steps_for(tokens, cfg), FIT, float(tokens), vocab_size))
    elif sw.mode == "isoflop":
        if not sw.flops:
            raise ValueError("scaling.sweep.mode=isoflop needs scaling.sweep.flops (compute budgets)")
        for flops in sw.flops:
            for size in sizes:
                _, per_token = counted(model_for(cfg, size, vocab_size), cfg.scaling.counting)
                points.append(make_point(cfg, size, steps_for(float(flops) / per_token, cfg), FIT,
                                         float(flops), vocab_size))
    else:
        raise ValueError(f"scaling.sweep.mode must be grid or isoflop, got {sw.mode!r}")
    h = cfg.scaling.holdout
    if h.enabled:
        size = OmegaConf.to_container(h.size, resolve=True)
        points.append(make_point(cfg, size, steps_for(h.tokens, cfg), HOLDOUT, float(h.tokens), vocab_size))
    seen: dict[str, SweepPoint] = {}
    for p in points:
        if p.name in seen:
            if p.role == HOLDOUT:
                raise ValueError(f"scaling.holdout ({p.name}) is also a fit point: a held-out run must be "
                                 "one the fit never saw (change holdout.size or holdout.tokens)")
            continue  # the same shape and steps twice (e.g. two budgets rounding alike): train it once
        seen[p.name] = p
    return list(seen.values())


def point_config(cfg: DictConfig, point: SweepPoint) -> DictConfig:
    """The full pretraining config of one run: the project's config with the point's shape, length and
    schedule, validation only at the end, no sample generations, no transformers export."""
    sw = cfg.scaling.sweep
    out = copy.deepcopy(cfg)
    OmegaConf.set_struct(out, False)
    out.stage = "scaling"
    out.model = {**OmegaConf.to_container(cfg.model, resolve=True), "n_layer": point.n_layer,
                 "n_embd": point.n_embd, "n_head": point.n_head, "seq_len": int(sw.seq_len)}
    out.pretrain = OmegaConf.merge(cfg.pretrain, {
        "tokenizer_dir": str(cfg.scaling.tokenizer_dir),
        "output_dir": str(Path(cfg.scaling.output_dir) / "runs" / point.name),
        "micro_batch_size": int(sw.micro_batch_size), "accumulate": 1, "max_steps": point.steps,
        "seed": int(cfg.scaling.seed),
        "optim": {"lr": point.lr, "warmup_steps": max(1, math.ceil(float(sw.warmup_fraction) * point.steps)),
                  "min_lr_ratio": float(sw.min_lr_ratio)},
        "val_every_n_steps": point.steps, "checkpoint_every_n_steps": point.steps,
        "log_every_n_steps": max(1, point.steps // 20), "val_sequences": int(sw.val_sequences),
        "sample": {"prompts": []}, "export_hf": False,
    })
    OmegaConf.set_struct(out, True)
    return out


def train_point(cfg: DictConfig, point: SweepPoint, logger: Logger | None = None) -> dict:
    """Train one run of the sweep (or finish/resume it) -> its row: the point plus its final losses."""
    from components.training.pretrain import run_pretraining

    result = run_pretraining(point_config(cfg, point), logger=logger)
    steps = int(result.metrics["steps"])
    if steps != point.steps:
        raise RuntimeError(f"scaling run {point.name} ended at step {steps}, planned {point.steps}")
    row = {**point.to_dict(), "loss": float(result.metrics["val_loss"]),
           "val_bpb": float(result.metrics["val_bpb"]),
           "train_seconds": float(result.metrics["train_seconds_this_run"]),
           "resumed_from_step": result.resumed_from_step}
    if not math.isfinite(row["loss"]):
        raise FloatingPointError(f"scaling run {point.name} ended with a non-finite loss")
    (result.output_dir / "row.json").write_text(json.dumps(row, indent=1, sort_keys=True))
    return row
