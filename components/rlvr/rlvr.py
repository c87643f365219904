"""The RLVR stage as one call: from the SFT model, GRPO on problems with an answer key, rejection-sampling
finetuning beside it, and best-of-n sampling as the inference-time baseline, all scored on the same
held-out problems; the held-out accuracy against training compute is fitted with ScaleRL's sigmoid.

Callable without Prefect or MLflow (`python -m components.rlvr.rlvr key=value ...`); the flow adds
tracking and the registry."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from components.chat.protocol import ChatFormat, assistant_text
from components.model.checkpoint import WEIGHTS, save_model
from components.model.export import export_hf
from components.model.gpt import GPT
from components.model.loading import load_pretrained, resolve_model_dir
from components.rlhf.sampling import fitting
from components.rlvr.evaluation import evaluate_problems, paired_gain, sampling_params
from components.rlvr.grpo import GRPOConfig, GRPOModule, ProblemData
from components.rlvr.problems import build_problems
from components.rlvr.rewards import RewardWeights
from components.rlvr.rft import RFTConfig, run_rft
from components.scaling.sigmoid import fit_sigmoid
from components.tasks.base import TaskExample
from components.training.pretrain import LAST, resume_point, stage_trainer, update_with_code

log = logging.getLogger(__name__)

RUN_KEYS = ("problems", "reward", "grpo", "rft", "eval", "seed", "precision")
CODE_DIRS = tuple(
    Path(__file__).resolve().parents[1] / d for d in ("rlvr", "rlhf", "model", "training", "tasks")
)
# Columns of the report's GRPO trajectory.
TRAJECTORY = {
    "rl/reward": "reward",
    "rl/reward_accuracy": "correct",
    "rl/reward_format": "format",
    "rl/response_length": "length",
    "rl/kl": "KL/token",
    "rl/entropy": "entropy",
    "rl/zero_variance_frac": "zero-var groups",
    "rl/tool_use_rate": "tool use",
}


@dataclass
class RLVRResult:
    output_dir: Path
    model_dir: Path
    hf_dir: Path
    metrics: dict[str, float]
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    resumed_from_step: int | None = None


def reward_weights(cfg: DictConfig) -> RewardWeights:
    w = cfg.rlvr.reward
    return RewardWeights(accuracy=float(w.accuracy), format=float(w.format), working=float(w.working))


def grpo_config(cfg: DictConfig) -> GRPOConfig:
    r, g = cfg.rlvr, cfg.rlvr.grpo
    return GRPOConfig(
        prompts_per_step=int(g.prompts_per_step),
        group_size=int(g.group_size),
        max_new_tokens=int(r.max_new_tokens),
        temperature=float(g.temperature),
        top_k=g.top_k,
        top_p=g.top_p,
        epochs=int(g.epochs),
        minibatches=int(g.minibatches),
        clip_low=float(g.clip_low),
        clip_high=None if g.clip_high is None else float(g.clip_high),
        scale_std=bool(g.scale_std),
        aggregation=str(g.aggregation),
        kl_coef=float(g.kl_coef),
        mask_truncated=bool(g.mask_truncated),
        filter_zero_variance=bool(g.filter_zero_variance),
        max_grad_norm=float(g.max_grad_norm or 0),
        lr=float(g.lr),
        max_steps=int(g.max_steps),
        tools=bool(r.problems.tools),
        weights=reward_weights(cfg),
        seed=int(r.seed),
    )


def rft_config(cfg: DictConfig) -> RFTConfig:
    r, f = cfg.rlvr, cfg.rlvr.rft
    return RFTConfig(
        rounds=int(f.rounds),
        samples_per_problem=int(f.samples_per_problem),
        problems_per_round=int(f.problems_per_round),
        select=str(f.select),
        max_new_tokens=int(r.max_new_tokens),
        temperature=float(f.temperature),
        steps_per_round=int(f.steps_per_round),
        micro_batch_size=int(f.micro_batch_size),
        lr=float(f.lr),
        warmup_steps=int(f.warmup_steps),
        tools=bool(r.problems.tools),
        weights=reward_weights(cfg),
        seed=int(r.seed),
    )


def run_fingerprint(init_dir: Path, cfg: DictConfig, variant: str) -> str:
    """Starting weights, settings, code, and which run (grpo or rft)."""
    digest = hashlib.sha256(variant.encode())
    for path in (init_dir / "tokenizer.json", init_dir / WEIGHTS):
        digest.update(path.read_bytes())
    r = OmegaConf.to_container(cfg.rlvr, resolve=True)
    digest.update(json.dumps({k: r[k] for k in RUN_KEYS}, sort_keys=True, default=str).encode())
    update_with_code(digest, CODE_DIRS)
    return digest.hexdigest()[:16]


class HeldOutEval(Callback):
    """Held-out scores every `every` steps (and before the first): the accuracy-against-compute curve."""

    def __init__(self, every: int, evaluate: Callable[[GPT], dict[str, float]]) -> None:
        self.every, self.evaluate = every, evaluate

    def _record(self, trainer: L.Trainer, module: GRPOModule) -> None:
        if module.eval_history and module.eval_history[-1]["step"] == module.steps_done:
            return
        scores = {f"heldout/{k}": v for k, v in self.evaluate(module.policy).items()}
        module.eval_history.append({"step": module.steps_done, "rl/flops": module.flops, **scores})
        if module.logger is not None:
            module.logger.log_metrics(scores | {"heldout/flops": module.flops}, step=module.steps_done)

    def on_train_start(self, trainer: L.Trainer, module: GRPOModule) -> None:
        if module.steps_done == 0:
            self._record(trainer, module)

    def on_train_batch_end(self, trainer: L.Trainer, module: GRPOModule, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        step = module.steps_done
        if step and (step % self.every == 0 or step >= module.cfg.max_steps):
            self._record(trainer, module)


class SolutionSamples(Callback):
    """Every `every` steps, one group of sampled solutions with their rewards, as a Markdown file."""

    def __init__(self, out_dir: Path, every: int) -> None:
        self.out_dir, self.every = out_dir, every

    def on_train_batch_end(self, trainer: L.Trainer, module: GRPOModule, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        rollout, step = module.last_rollout, module.steps_done
        if not self.every or step % self.every or rollout is None or not module.last_indices:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        problem = module.problems[module.last_indices[0]]
        lines = [
            f"# Sampled solutions at step {step}",
            "",
            f"**user:** {problem.prompt[-1]['content']}",
            "",
            f"**answer key:** {problem.answer}",
            "",
        ]
        for i in range(module.cfg.group_size):
            reply, parts = rollout.replies[i], rollout.parts[i]
            lines += [
                f"## sample {i + 1}: reward {parts.total:.2f} (accuracy {parts.accuracy:.0f}, format "
                f"{parts.format:.1f}, working {parts.working:.0f}), {len(reply.tokens)} tokens",
                "",
                assistant_text(reply.content),
                "",
            ]
        (self.out_dir / f"step_{step:05d}.md").write_text("\n".join(lines))


def train_grpo(
    cfg: DictConfig,
    grpo: GRPOConfig,
    sft: GPT,
    fmt: ChatFormat,
    problems: list[TaskExample],
    evaluate: Callable[[GPT], dict[str, float]],
    out: Path,
    logger: Logger | None,
    fingerprint: str,
) -> tuple[GPT, GRPOModule, int | None]:
    """One GRPO run (resumable from out/checkpoints): (final policy, module with histories, resumed step)."""
    r = cfg.rlvr
    ckpt_dir = out / "checkpoints"
    resume_from, resumed = resume_point(ckpt_dir, sft.config, fingerprint, bool(r.resume), "rlvr")
    L.seed_everything(grpo.seed, workers=True, verbose=False)
    module = GRPOModule(copy.deepcopy(sft).train(), copy.deepcopy(sft), fmt, problems, grpo, fingerprint)
    updates = grpo.epochs * grpo.minibatches
    # The module counts GRPO steps and stops the run; Lightning's counter is optimizer steps.
    trainer_cfg = OmegaConf.merge(
        OmegaConf.to_container(r, resolve=True),
        {
            "max_steps": -1,
            "accumulate": 1,
            "grad_clip": None,
            "log_every_n_steps": 1,
            "val_every_n_steps": 10**9,
            "checkpoint_every_n_steps": int(r.checkpoint_every_n_steps) * updates,
        },
    )
    callbacks = [
        HeldOutEval(int(r.eval.every_n_steps), evaluate),
        SolutionSamples(out / "samples", int(r.sample_every_n_steps)),
    ]
    trainer = stage_trainer(trainer_cfg, out, ckpt_dir, logger, callbacks)
    trainer.fit(
        module, datamodule=ProblemData(len(problems), grpo, module), ckpt_path=resume_from, weights_only=True
    )
    if trainer.interrupted:
        raise KeyboardInterrupt("RLVR was interrupted; rerun the same command to resume")
    final = torch.load(ckpt_dir / LAST, map_location="cpu", weights_only=True)
    module.on_load_checkpoint(final)
    policy = GPT(sft.config)
    policy.load_state_dict(
        {k.removeprefix("policy."): v for k, v in final["state_dict"].items() if k.startswith("policy.")}
    )
    return policy.eval(), module, resumed


def run_rlvr(cfg: DictConfig, logger: Logger | None = None, init_dir: Path | None = None) -> RLVRResult:
    r = cfg.rlvr
    if int(r.devices) * int(r.num_nodes) != 1:
        raise ValueError(
            "rlvr: GRPO runs on one device in this version (rollouts and updates in one "
            "process); set rlvr.devices=1 rlvr.num_nodes=1"
        )
    if not (r.grpo.enabled or r.rft.enabled):
        raise ValueError("rlvr: enable rlvr.grpo or rlvr.rft (both are off)")
    init_dir = resolve_model_dir(init_dir or r.init_from)
    sft, tokenizer = load_pretrained(init_dir)
    fmt = ChatFormat(tokenizer)
    out = Path(r.output_dir)
    problems = build_problems(r.problems)
    max_new = int(r.max_new_tokens)
    train, skipped = fitting(problems.train, fmt, sft.config.seq_len, max_new // 2)
    held_out, skipped_eval = fitting(problems.eval, fmt, sft.config.seq_len, max_new // 2)
    if not train or not held_out:
        raise ValueError(
            f"rlvr: no problem leaves {max_new // 2} tokens for a reply in the model's context "
            f"of {sft.config.seq_len}; use shorter problems or a longer model.seq_len"
        )
    tools, weights, e = bool(r.problems.tools), reward_weights(cfg), r.eval
    k = int(e.samples)

    def scorer(problems_: Sequence[TaskExample], samples: int) -> Callable[[GPT], dict[str, float]]:
        params = sampling_params(max_new, float(e.temperature), fmt, int(e.seed))
        return lambda model: evaluate_problems(
            model, fmt, problems_, samples=samples, params=params, tools=tools, weights=weights
        )[0]

    interval = scorer(held_out[: int(e.during_training.problems)], int(e.during_training.samples))
    models: dict[str, GPT] = {"sft": sft}
    histories: dict[str, list[dict[str, float]]] = {}
    resumed = None
    if r.grpo.enabled:
        models["grpo"], module, resumed = train_grpo(
            cfg,
            grpo_config(cfg),
            sft,
            fmt,
            train,
            interval,
            out / "grpo",
            logger,
            run_fingerprint(init_dir, cfg, "grpo"),
        )
        histories["grpo"], histories["grpo_eval"] = module.history, module.eval_history
    if r.rft.enabled:
        trainer_cfg = OmegaConf.merge(
            OmegaConf.to_container(r, resolve=True),
            {
                "max_steps": int(r.rft.steps_per_round),
                "accumulate": 1,
                "grad_clip": 1.0,
                "log_every_n_steps": 10,
                "val_every_n_steps": int(r.rft.steps_per_round) + 1,
                "checkpoint_every_n_steps": int(r.rft.steps_per_round),
            },
        )
        models["rft"], histories["rft"] = run_rft(
            sft,
            fmt,
            train,
            held_out,
            rft_config(cfg),
            trainer_cfg,
            out / "rft",
            run_fingerprint(init_dir, cfg, "rft"),
            interval,
        )

    metrics: dict[str, float] = {
        "problems_train": len(train),
        "problems_eval": len(held_out),
        "problems_skipped_too_long": skipped + skipped_eval,
    }
    metrics |= {f"data/{k_}": float(v) for k_, v in problems.stats.items()}
    params = sampling_params(max_new, float(e.temperature), fmt, int(e.seed))
    greedy_correct: dict[str, list[bool]] = {}
    for name, model in models.items():
        scores, records = evaluate_problems(
            model, fmt, held_out, samples=k, params=params, tools=tools, weights=weights
        )
        metrics |= {f"eval/{key}_{name}": v for key, v in scores.items()}
        greedy_correct[name] = [rec["greedy"]["correct"] for rec in records]
        with (out / f"eval_{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    for name in models:
        if name != "sft":
            gain, stderr = paired_gain(greedy_correct[name], greedy_correct["sft"])
            metrics[f"eval/accuracy_gain_{name}"] = gain
            metrics[f"eval/accuracy_gain_stderr_{name}"] = stderr
    fit = compute_curve_fit(histories.get("grpo_eval", []))
    metrics |= {f"scaling/{key}": v for key, v in fit.items() if isinstance(v, int | float)}

    final = models["grpo"] if "grpo" in models else models["rft"]
    model_dir = save_model(final, out / "model")
    tokenizer.save(model_dir / "tokenizer.json")
    hf_dir = export_hf(final, out / "hf", tokenizer=tokenizer) if r.export_hf else out / "hf"
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    (out / "sigmoid_fit.json").write_text(json.dumps(fit, indent=1, sort_keys=True))
    for name, hist in histories.items():
        with (out / f"history_{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(row) + "\n" for row in hist)
    (out / "report.md").write_text(report_markdown(metrics, histories, fit, k, float(e.temperature)))
    return RLVRResult(out, model_dir, hf_dir, metrics, histories, resumed)


def compute_curve_fit(eval_history: list[dict[str, float]], key: str = "heldout/pass_at_1") -> dict:
    """ScaleRL's sigmoid through the held-out pass rate (mean over samples, what RL optimises) against
    GRPO training FLOPs, R0 fixed at the start. Intervals come from the fit's covariance: with a handful of
    points, resampling them says little."""
    points = [(row["rl/flops"], row[key]) for row in eval_history if key in row]
    if len(points) < 4:
        return {
            "fitted": 0,
            "metric": key,
            "reason": f"{len(points)} held-out points; the sigmoid needs the start and 3 more",
        }
    r0 = points[0][1]
    compute = np.array([c for c, _ in points[1:]])
    rate = np.array([a for _, a in points[1:]])
    try:
        fit = fit_sigmoid(compute, rate, R0=r0, A_max=1.0, bootstrap=0)
    except (ValueError, RuntimeError) as exc:
        return {"fitted": 0, "metric": key, "reason": str(exc)}
    return {"fitted": 1, "metric": key, **fit.to_dict()}


def report_markdown(
    metrics: dict[str, float],
    histories: dict[str, list[dict[str, float]]],
    fit: dict,
    k: int,
    temperature: float,
    rows: int = 12,
) -> str:
    names = [n for n in ("sft", "grpo", "rft") if f"eval/accuracy_{n}" in metrics]
    stems = [
        "accuracy",
        "accuracy_gain",
        "accuracy_gain_stderr",
        "pass_at_1",
        f"pass_at_{k}",
        f"best_of_{k}_majority",
        "format",
        "response_tokens",
        "response_tokens_greedy",
        "ended_rate",
        "tool_use_rate",
    ]
    lines = [
        "# RLVR: GRPO and rejection-sampling finetuning on problems with an answer key",
        "",
        f"Held-out problems: {int(metrics['problems_eval'])}. `accuracy` is greedy exact match; pass@1 and "
        f"pass@{k} come from {k} samples per problem at temperature {temperature:g}; best-of-{k} (majority) "
        f"is self-consistency, the inference-time baseline at the same sample count (pass@{k} is "
        f"best-of-{k} with an oracle).",
        "",
        "| metric | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for stem in stems:
        cells = [metrics.get(f"eval/{stem}_{n}") for n in names]
        if any(c is not None for c in cells):
            lines.append(f"| {stem} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    if histories.get("grpo"):
        lines += [
            "",
            "## GRPO trajectory (training batches)",
            "",
            "| step | " + " | ".join(TRAJECTORY.values()) + " |",
            "| --- |" + " --- |" * len(TRAJECTORY),
        ]
        hist = histories["grpo"]
        stride = max(1, len(hist) // rows)
        for row in hist[::stride] + ([hist[-1]] if (len(hist) - 1) % stride else []):
            lines.append(
                f"| {int(row['step'])} | "
                + " | ".join(f"{row.get(c, math.nan):.3f}" for c in TRAJECTORY)
                + " |"
            )
    if histories.get("grpo_eval"):
        keys = [key for key in histories["grpo_eval"][0] if key.startswith("heldout/")]
        lines += [
            "",
            "## GRPO held-out curve (a subset of the held-out problems)",
            "",
            "| step | training FLOPs | " + " | ".join(key.removeprefix("heldout/") for key in keys) + " |",
            "| --- | --- |" + " --- |" * len(keys),
        ]
        for row in histories["grpo_eval"]:
            lines.append(
                f"| {int(row['step'])} | {row['rl/flops']:.3g} | "
                + " | ".join(f"{row[key]:.3f}" for key in keys)
                + " |"
            )
    if histories.get("rft"):
        keys = [key for key in histories["rft"][0] if key != "round"]
        lines += [
            "",
            "## Rejection-sampling finetuning, per round",
            "",
            "| round | " + " | ".join(key.removeprefix("rft/") for key in keys) + " |",
            "| --- |" + " --- |" * len(keys),
        ]
        for row in histories["rft"]:
            lines.append(f"| {int(row['round'])} | " + " | ".join(f"{row[key]:.4g}" for key in keys) + " |")
    lines += ["", "## Held-out pass rate against GRPO compute (ScaleRL sigmoid)", ""]
    if fit.get("fitted"):
        lines.append(f"R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B) for `{fit['metric']}`, R0 fixed at its "
                     "start; A is the asymptote, B the efficiency, C_mid the compute at half the gain.")
        lines.append("")
        lines.append("```json\n" + json.dumps(fit, indent=1, sort_keys=True) + "\n```")
    else:
        lines.append(f"Not fitted: {fit.get('reason')}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """RLVR without Prefect or MLflow."""
    from components.config import stage_main

    return stage_main("rlvr", run_rlvr, argv)


if __name__ == "__main__":
    sys.exit(main())
