"""The RLHF stage as one call: PPO from the SFT model against the reward model, with a KL leash, then
the held-out comparison, and (the reward-hacking check) the same PPO run without the leash.

Both runs start from the same SFT weights, prompts and seeds; only the KL coefficient differs. The report
puts their trajectories side by side: reward-model score, KL, repetition and the labeler's judgement, so
a reader sees whether the reward model is gamed without the leash. Callable without Prefect or MLflow
(`python -m components.rlhf.rlhf key=value ...`); the flow adds tracking and the registry."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
from dataclasses import dataclass, field, replace
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
from components.rlhf.evaluation import evaluate_policies
from components.rlhf.ppo import PPOConfig, PPOModule, PromptData
from components.rlhf.reward import labeler_from_config, sampling_params
from components.rlhf.reward_model import HEAD_WEIGHTS, RewardModel, load_reward_model
from components.rlhf.sampling import fitting, prompt_mixture
from components.tasks.base import TaskExample
from components.tokenizer.token_store import load_tokens
from components.training.pretrain import LAST, resume_point, stage_trainer, update_with_code

log = logging.getLogger(__name__)

RUN_KEYS = ("prompts", "rollout", "ppo", "kl", "ptx", "optim", "max_steps", "seed", "precision")
CODE_DIRS = tuple(Path(__file__).resolve().parents[1] / d for d in ("rlhf", "model", "training", "tasks"))
# Keys of each run's trajectory shown in the report, with their column titles.
TRAJECTORY = {"rl/reward": "reward model", "rl/kl": "KL", "rl/kl_coef": "KL coef",
              "rl/repetition": "repetition", "rl/labeler_score": "labeler", "rl/labeler_correct": "correct",
              "rl/ended_rate": "ended", "rl/response_length": "length"}


@dataclass
class RLHFResult:
    output_dir: Path
    model_dir: Path
    hf_dir: Path
    metrics: dict[str, float]
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    resumed_from_step: int | None = None


def ppo_config(cfg: DictConfig) -> PPOConfig:
    r = cfg.rlhf
    return PPOConfig(
        batch_size=int(r.rollout.batch_size), max_new_tokens=int(r.rollout.max_new_tokens),
        temperature=float(r.rollout.temperature), top_k=r.rollout.top_k, top_p=r.rollout.top_p,
        epochs=int(r.ppo.epochs), minibatches=int(r.ppo.minibatches), clip_range=float(r.ppo.clip_range),
        clip_range_value=float(r.ppo.clip_range_value), gamma=float(r.ppo.gamma), lam=float(r.ppo.lam),
        vf_coef=float(r.ppo.vf_coef), entropy_coef=float(r.ppo.entropy_coef),
        whiten_advantages=bool(r.ppo.whiten_advantages), missing_eos_penalty=float(r.ppo.missing_eos_penalty),
        max_grad_norm=float(r.ppo.max_grad_norm or 0), kl_estimator=str(r.kl.estimator),
        kl_coef=float(r.kl.coef), kl_adaptive=bool(r.kl.adaptive),
        kl_target=None if r.kl.target is None else float(r.kl.target), kl_horizon=int(r.kl.horizon),
        ptx_coef=float(r.ptx.coef), lr=float(r.optim.lr), critic_lr=float(r.optim.critic_lr),
        seed=int(r.seed))


def run_fingerprint(init_dir: Path, reward_dir: Path, cfg: DictConfig, variant: str) -> str:
    """Starting weights, reward model, settings, code and which run (leashed or not)."""
    digest = hashlib.sha256(variant.encode())
    for path in (init_dir / "tokenizer.json", init_dir / WEIGHTS, reward_dir / WEIGHTS,
                 reward_dir / HEAD_WEIGHTS):
        digest.update(path.read_bytes())
    r = OmegaConf.to_container(cfg.rlhf, resolve=True)
    digest.update(json.dumps({k: r[k] for k in RUN_KEYS}, sort_keys=True, default=str).encode())
    update_with_code(digest, CODE_DIRS)
    return digest.hexdigest()[:16]


class RolloutSamples(Callback):
    """Every `every` iterations, a few of the rollout's replies with their scores, as Markdown files."""

    def __init__(self, out_dir: Path, every: int, n: int = 4) -> None:
        self.out_dir, self.every, self.n = out_dir, every, n

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: PPOModule, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        iteration = pl_module.iteration
        rollout = pl_module.last_rollout
        if not self.every or iteration % self.every or rollout is None or not trainer.is_global_zero:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"# Rollout samples after iteration {iteration}", ""]
        for i, (idx, reply) in enumerate(zip(batch.tolist()[:self.n], rollout.replies, strict=False)):
            prompt = pl_module.examples[idx].question
            lines += [f"## {i + 1}. reward {float(rollout.scores[i]):.3f}, ended {reply.ended}", "",
                      f"**user:** {prompt}", "", f"**assistant:** {assistant_text(reply.content)}", ""]
        (self.out_dir / f"iteration_{iteration:05d}.md").write_text("\n".join(lines))


def train_policy(cfg: DictConfig, ppo: PPOConfig, sft: GPT, reward_model: RewardModel, fmt: ChatFormat,
                 examples: list[TaskExample], out: Path, logger: Logger | None, fingerprint: str,
                 ptx_tokens: np.ndarray | None) -> tuple[GPT, list[dict[str, float]], int | None]:
    """One PPO run (resumable from out/checkpoints): (final policy, per-iteration history, resumed step)."""
    r = cfg.rlhf
    updates = ppo.updates_per_iteration
    ckpt_dir = out / "checkpoints"
    resume_from, resumed = resume_point(ckpt_dir, sft.config, fingerprint, bool(r.resume), "rlhf")
    L.seed_everything(ppo.seed, workers=True, verbose=False)
    module = PPOModule(copy.deepcopy(sft).train(), copy.deepcopy(sft), copy.deepcopy(reward_model).train(),
                       reward_model, fmt, examples, ppo, labeler_from_config(cfg), ptx_tokens, fingerprint)
    # Lightning counts optimizer steps; one PPO iteration makes `updates` of them.
    trainer_cfg = OmegaConf.merge(OmegaConf.to_container(r, resolve=True), {
                                      "max_steps": int(r.max_steps) * updates, "accumulate": 1,
                                      "grad_clip": None, "log_every_n_steps": 1,
                                      "val_every_n_steps": int(r.max_steps) + 1,
                                      "checkpoint_every_n_steps": int(r.checkpoint_every_n_steps) * updates})
    trainer = stage_trainer(trainer_cfg, out, ckpt_dir, logger,
                            [RolloutSamples(out / "samples", int(r.sample_every_n_steps))])
    trainer.fit(module, datamodule=PromptData(len(examples), ppo), ckpt_path=resume_from, weights_only=True)
    if trainer.interrupted:
        raise KeyboardInterrupt("RLHF was interrupted; rerun the same command to resume")
    final = torch.load(ckpt_dir / LAST, map_location="cpu", weights_only=True)
    policy = GPT(sft.config)
    policy.load_state_dict({k.removeprefix("policy."): v for k, v in final["state_dict"].items()
                            if k.startswith("policy.")})
    return policy.eval(), list(final.get("history", [])), resumed


def run_rlhf(cfg: DictConfig, logger: Logger | None = None, init_dir: Path | None = None,
             reward_dir: Path | None = None) -> RLHFResult:
    r = cfg.rlhf
    if int(r.devices) * int(r.num_nodes) != 1:
        raise ValueError("rlhf: PPO runs on one device in this version (rollouts and updates in one "
                         "process); set rlhf.devices=1 rlhf.num_nodes=1")
    init_dir = resolve_model_dir(init_dir or r.init_from)
    reward_dir = Path(reward_dir or r.reward_model)
    sft, tokenizer = load_pretrained(init_dir)
    reward_model, _ = load_reward_model(reward_dir)
    if reward_model.config.vocab_size != sft.config.vocab_size:
        raise ValueError(f"reward model {reward_dir} has a {reward_model.config.vocab_size}-token "
                         f"vocabulary, the policy {init_dir} {sft.config.vocab_size}: train both from the "
                         "same tokenizer")
    fmt = ChatFormat(tokenizer)
    out = Path(r.output_dir)
    mixture = prompt_mixture(r.prompts)
    ppo = ppo_config(cfg)
    train_ex, skipped = fitting(mixture.train, fmt, sft.config.seq_len, ppo.max_new_tokens // 2)
    eval_ex, skipped_eval = fitting(mixture.eval, fmt, sft.config.seq_len, ppo.max_new_tokens // 2)
    ptx = load_tokens(Path(r.ptx.tokens), "train") if ppo.ptx_coef > 0 else None

    policy, history, resumed = train_policy(cfg, ppo, sft, reward_model, fmt, train_ex, out, logger,
                                            run_fingerprint(init_dir, reward_dir, cfg, "kl"), ptx)
    models = {"sft": sft, "rlhf": policy}
    histories = {"rlhf": history}
    if r.hacking_check.enabled:
        unleashed = replace(ppo, kl_coef=float(r.hacking_check.kl_coef), kl_adaptive=False)
        models["no_kl"], histories["no_kl"], _ = train_policy(
            cfg, unleashed, sft, reward_model, fmt, train_ex, out / "no_kl", None,
            run_fingerprint(init_dir, reward_dir, cfg, f"no_kl:{unleashed.kl_coef}"), ptx)

    e = r.eval
    params = replace(sampling_params(r.rollout, fmt, int(e.seed)), temperature=float(e.temperature),
                     max_new_tokens=int(r.rollout.max_new_tokens))
    metrics, records = evaluate_policies(models, sft, reward_model, fmt, labeler_from_config(cfg), eval_ex,
                                         params, int(e.samples_per_prompt))
    metrics |= _run_metrics(histories, ppo, len(train_ex), len(eval_ex), skipped + skipped_eval)
    model_dir = save_model(policy, out / "model")
    tokenizer.save(model_dir / "tokenizer.json")
    hf_dir = export_hf(policy, out / "hf", tokenizer=tokenizer) if r.export_hf else out / "hf"
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    with (out / "eval.jsonl").open("w") as f:
        f.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    for name, hist in histories.items():
        with (out / f"history_{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(row) + "\n" for row in hist)
    (out / "report.md").write_text(report_markdown(metrics, histories, ppo))
    return RLHFResult(out, model_dir, hf_dir, metrics, histories, resumed)


def _run_metrics(histories: dict[str, list[dict[str, float]]], ppo: PPOConfig, n_train: int, n_eval: int,
                 skipped: int) -> dict[str, float]:
    """Trajectory summaries: each run's first and last-tenth means of reward, KL and labeler score."""
    target = ppo.kl_target if ppo.kl_adaptive and ppo.kl_target else math.nan
    metrics: dict[str, float] = {"prompts_train": n_train, "prompts_eval": n_eval,
                                 "prompts_skipped_too_long": skipped, "kl_target": target}
    for name, hist in histories.items():
        if not hist:
            continue
        tail = hist[-max(1, len(hist) // 10):]
        metrics[f"iterations_{name}"] = len(hist)
        for key in ("rl/reward", "rl/kl", "rl/labeler_score", "rl/repetition"):
            metrics[f"{key}_first_{name}"] = float(hist[0][key])
            metrics[f"{key}_last_{name}"] = float(np.mean([row[key] for row in tail]))
        metrics[f"rl/kl_max_{name}"] = float(max(row["rl/kl"] for row in hist))
    return metrics


def report_markdown(metrics: dict[str, float], histories: dict[str, list[dict[str, float]]], ppo: PPOConfig,
                    rows: int = 12) -> str:
    """The held-out comparison, then each run's trajectory (about `rows` evenly spaced iterations)."""
    names = [n for n in ("sft", "rlhf", "no_kl") if f"eval/reward_{n}" in metrics]
    stems = sorted({k.removesuffix("_sft") for k in metrics if k.startswith("eval/") and k.endswith("_sft")})
    stems += sorted({k.removesuffix(f"_{n}") for k in metrics for n in names
                     if k.startswith("eval/") and "/labeler_" in k and "_rate_" in k and k.endswith(f"_{n}")})
    lines = ["# RLHF: PPO against the reward model, with and without the KL leash", "",
             f"KL leash: {_leash(ppo)}, initial coefficient {ppo.kl_coef}, estimator {ppo.kl_estimator}. "
             f"Held-out prompts: {int(metrics['prompts_eval'])}.", "",
             "## Held-out prompts", "", "| metric | " + " | ".join(names) + " |",
             "| --- |" + " --- |" * len(names)]
    for stem in dict.fromkeys(stems):
        cells = [metrics.get(f"{stem}_{n}") for n in names]
        lines.append(f"| {stem} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    for name, hist in histories.items():
        if not hist:
            continue
        title = "with the KL leash" if name == "rlhf" else "without the KL leash (coefficient 0)"
        lines += ["", f"## Trajectory {title}", "", "| iteration | " + " | ".join(TRAJECTORY.values()) + " |",
                  "| --- |" + " --- |" * len(TRAJECTORY)]
        step = max(1, len(hist) // rows)
        shown = hist[::step] + ([hist[-1]] if (len(hist) - 1) % step else [])
        for row in shown:
            lines.append(f"| {int(row['iteration'])} | "
                         + " | ".join(f"{row.get(k, math.nan):.3f}" for k in TRAJECTORY) + " |")
    return "\n".join(lines) + "\n"


def _leash(ppo: PPOConfig) -> str:
    return f"adaptive to a target of {ppo.kl_target} nats per reply" if ppo.kl_adaptive else "fixed"


def main(argv: list[str] | None = None) -> int:
    """RLHF without Prefect or MLflow."""
    from components.config import stage_main

    return stage_main("rlhf", run_rlhf, argv)


if __name__ == "__main__":
    sys.exit(main())
