"""The reward stage as one call: the SFT model's sampled replies ranked by the labeler, a reward model
trained on the ranking pairs (plus any preference files given), scored on held-out prompts' pairs.

No human preference labels can be downloaded, so the programmatic labeler (components/rlhf/labeler.py)
stands in for the human: the SFT model answers each prompt K times, the labeler ranks the K replies, and
the ranking becomes K(K-1)/2 pairs as in InstructGPT. Callable without Prefect or MLflow
(`python -m components.rlhf.reward key=value ...`); the flow adds tracking and the registry."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from components.chat.protocol import ChatFormat
from components.model.checkpoint import WEIGHTS
from components.model.engine import SamplingParams
from components.model.gpt import GPT
from components.model.loading import load_pretrained, resolve_model_dir
from components.rlhf.labeler import Labeler, LabelerWeights, near_miss
from components.rlhf.preferences import PreferencePair, load_preferences, save_pairs
from components.rlhf.reward_model import (
    PairData,
    RewardModel,
    RewardModule,
    TokenPairs,
    from_pretrained,
    save_reward_model,
)
from components.rlhf.sampling import fitting, prompt_mixture, sample_replies, stop_tokens
from components.tasks.base import TaskExample
from components.training.pretrain import LAST, fit_and_validate, resume_point, stage_trainer, update_with_code
from components.training.pretrain_module import OptimConfig

log = logging.getLogger(__name__)

RUN_KEYS = ("prompts", "sampling", "labeler", "min_gap", "reference_in_ranking", "extra_files",
            "micro_batch_size", "max_steps", "optim", "margin_in_loss", "center_coef", "seed", "precision",
            "devices", "num_nodes")
CODE_DIRS = tuple(Path(__file__).resolve().parents[1] / d for d in ("rlhf", "model", "training", "tasks"))


@dataclass
class RewardResult:
    output_dir: Path
    model_dir: Path
    metrics: dict[str, float]
    data_stats: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int | None = None


def labeler_from_config(cfg: DictConfig) -> Labeler:
    weights = OmegaConf.to_container(cfg.reward.labeler, resolve=True)
    ngram = int(weights.pop("ngram", 3))
    return Labeler(LabelerWeights(**weights), ngram=ngram)


def sampling_params(s: DictConfig, fmt: ChatFormat, seed: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=int(s.max_new_tokens), temperature=float(s.temperature),
                          top_k=s.top_k, top_p=s.top_p, stop_token_ids=stop_tokens(fmt), seed=seed)


def labeled_pairs(model: GPT, fmt: ChatFormat, labeler: Labeler, examples: list[TaskExample],
                  cfg: DictConfig, seed: int, with_reference: bool
                  ) -> tuple[list[PreferencePair], dict[str, float]]:
    """Sample K replies per prompt from `model`, rank them with the labeler (with the task's own ideal
    reply among them when `with_reference`), return the pairs and the labeler's numbers for the samples.

    Each pair's source says what decided it: `generated/correctness` when exactly one side has the right
    answer, else `generated/style` (working shown, turn ended, repetition)."""
    r = cfg.reward
    groups = [[] for _ in examples]
    for i, temperature in enumerate(sample_temperatures(r.sampling)):
        params = replace(sampling_params(r.sampling, fmt, seed + 7919 * i), temperature=temperature)
        for group, replies in zip(groups, sample_replies(model, fmt, examples, params), strict=True):
            group += replies
    pairs: list[PreferencePair] = []
    judged = []
    for example, group in zip(examples, groups, strict=True):
        candidates = [reply.judged for reply in group]
        judged += [labeler.judge(example, *c) for c in candidates]
        if with_reference:
            candidates.append((example.conversation["messages"][-1]["content"], True))
        for pair in labeler.pairs(example, candidates, min_gap=float(r.min_gap)):
            better = labeler.judge(example, pair.chosen, pair.chosen_ended).correct
            worse = labeler.judge(example, pair.rejected, pair.rejected_ended).correct
            pairs.append(replace(pair, source="generated/" + ("correctness" if better != worse else "style")))
    stats = {"replies": len(judged), "pairs": len(pairs),
             "labeler_score": _mean(j.score for j in judged),
             "correct_rate": _mean(float(j.correct) for j in judged if j.correct is not None),
             "ended_rate": _mean(float(j.ended) for j in judged),
             "repetition": _mean(j.repetition for j in judged)}
    return pairs, stats


def sample_temperatures(s: DictConfig) -> list[float]:
    """One temperature per reply of a prompt: `temperatures` when given (replies from hotter and colder
    samplers, as comparisons from several policies), else `responses_per_prompt` x `temperature`."""
    if s.get("temperatures"):
        return [float(t) for t in s.temperatures]
    return [float(s.temperature)] * int(s.responses_per_prompt)


def tokenize_pairs(pairs: list[PreferencePair], fmt: ChatFormat, seq_len: int
                   ) -> tuple[TokenPairs, list[PreferencePair]]:
    """Token ids of both sides, and the pairs kept: a pair with a side longer than the context is
    skipped (the caller counts them)."""
    chosen, rejected, kept = [], [], []
    for pair in pairs:
        c, r = pair.token_ids(fmt)
        if max(len(c), len(r)) <= seq_len:
            chosen.append(c)
            rejected.append(r)
            kept.append(pair)
    return TokenPairs(chosen, rejected, fmt.pad, [float(p.margin) for p in kept]), kept


@torch.no_grad()
def accuracy_by_source(model: RewardModel, pairs: TokenPairs, kept: list[PreferencePair],
                       batch_size: int = 32) -> dict[str, float]:
    """Held-out pairwise accuracy per pair source (e.g. generated/correctness vs generated/style), and on
    the near misses among them (`labeler.near_miss`: the wrong reply looks right)."""
    model.eval()
    right: list[bool] = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs.batch(range(start, min(len(pairs), start + batch_size)))
        scores = model(batch["input_ids"], batch["attention_mask"])
        n = len(scores) // 2
        right += (scores[:n] > scores[n:]).tolist()
    by_source: dict[str, list[bool]] = {}
    for pair, ok in zip(kept, right, strict=True):
        by_source.setdefault(pair.source.removeprefix("generated/"), []).append(ok)
        if near_miss(pair):
            by_source.setdefault("near_miss", []).append(ok)
    metrics = {f"eval/accuracy_{source}": _mean(oks) for source, oks in by_source.items()}
    metrics |= {f"pairs_eval_{source}": len(oks) for source, oks in by_source.items()}
    return metrics


def run_fingerprint(init_dir: Path, cfg: DictConfig) -> str:
    """The starting weights, the reward settings and the code: a checkpoint resumes only the same run."""
    digest = hashlib.sha256()
    digest.update((init_dir / "tokenizer.json").read_bytes())
    digest.update((init_dir / WEIGHTS).read_bytes())
    for extra in cfg.reward.extra_files or []:
        digest.update(Path(extra).read_bytes())
    r = OmegaConf.to_container(cfg.reward, resolve=True)
    digest.update(json.dumps({k: r[k] for k in RUN_KEYS}, sort_keys=True, default=str).encode())
    update_with_code(digest, CODE_DIRS)
    return digest.hexdigest()[:16]


def build_pairs(cfg: DictConfig, model: GPT, fmt: ChatFormat, out: Path
                ) -> tuple[list[PreferencePair], list[PreferencePair], dict[str, float]]:
    """Training pairs (labeled samples on training prompts, plus extra files) and held-out pairs
    (labeled samples on held-out prompts), written to out/data/{train,eval}.jsonl."""
    r = cfg.reward
    labeler = labeler_from_config(cfg)
    mixture = prompt_mixture(r.prompts)
    seq_len = model.config.seq_len
    train_ex, skipped_train = fitting(mixture.train, fmt, seq_len, int(r.sampling.max_new_tokens) // 2)
    eval_ex, skipped_eval = fitting(mixture.eval, fmt, seq_len, int(r.sampling.max_new_tokens) // 2)
    stats: dict[str, float] = {"prompts_train": len(train_ex), "prompts_eval": len(eval_ex),
                               "prompts_skipped_too_long": skipped_train + skipped_eval}
    seed = int(r.seed)
    train, train_stats = labeled_pairs(model, fmt, labeler, train_ex, cfg, seed,
                                       bool(r.reference_in_ranking.train))
    held_out, eval_stats = labeled_pairs(model, fmt, labeler, eval_ex, cfg, seed + 1,
                                         bool(r.reference_in_ranking.eval))
    stats |= {f"sampled_train/{k}": v for k, v in train_stats.items()}
    stats |= {f"sampled_eval/{k}": v for k, v in eval_stats.items()}
    for path in r.extra_files or []:
        extra, file_stats = load_preferences(path)
        train += extra
        stats |= {f"file/{Path(path).name}/{k}": v for k, v in file_stats.items()}
    (out / "data").mkdir(parents=True, exist_ok=True)
    save_pairs(train, out / "data" / "train.jsonl")
    save_pairs(held_out, out / "data" / "eval.jsonl")
    return train, held_out, stats


def run_reward(cfg: DictConfig, logger: Logger | None = None, init_dir: Path | None = None) -> RewardResult:
    """Label sampled replies, train the reward model on the pairs (or resume), score it on held-out
    pairs."""
    r = cfg.reward
    init_dir = resolve_model_dir(init_dir or r.init_from)
    sft, tokenizer = load_pretrained(init_dir)
    fmt = ChatFormat(tokenizer)
    out = Path(r.output_dir)
    ckpt_dir = out / "checkpoints"
    train_pairs, eval_pairs, stats = build_pairs(cfg, sft.eval(), fmt, out)
    seq_len = sft.config.seq_len
    train, train_kept = tokenize_pairs(train_pairs, fmt, seq_len)
    val, val_kept = tokenize_pairs(eval_pairs, fmt, seq_len)
    stats |= {"pairs_train": len(train), "pairs_eval": len(val),
              "pairs_skipped_too_long": len(train_pairs) + len(eval_pairs) - len(train) - len(val)}
    if len(val) == 0:
        raise ValueError("the labeler found no held-out pair (every held-out prompt's replies tied): raise "
                         "reward.sampling.responses_per_prompt or reward.prompts.n_eval, or lower "
                         "reward.min_gap")

    fingerprint = run_fingerprint(init_dir, cfg)
    resume_from, resumed_step = resume_point(ckpt_dir, sft.config, fingerprint, bool(r.resume), "reward")
    L.seed_everything(int(r.seed), workers=True, verbose=False)
    reward_model = from_pretrained(init_dir)[0].train()
    optim = OptimConfig(**OmegaConf.to_container(r.optim, resolve=True), max_steps=int(r.max_steps))
    module = RewardModule(reward_model, optim, margin_in_loss=bool(r.margin_in_loss),
                          center_coef=float(r.center_coef), run_fingerprint=fingerprint)
    data = PairData(train, val, int(r.micro_batch_size), int(r.seed))
    trainer = stage_trainer(r, out, ckpt_dir, logger, [])
    final, seconds = fit_and_validate(trainer, module, data, resume_from, "reward model training")
    if not trainer.is_global_zero:
        return RewardResult(out, out / "model", {}, stats, resumed_step)
    final_ckpt = torch.load(ckpt_dir / LAST, map_location="cpu", weights_only=True)
    trained = RewardModel(GPT(sft.config))
    trained.load_state_dict({k.removeprefix("model."): v for k, v in final_ckpt["state_dict"].items()})
    model_dir = save_reward_model(trained, tokenizer, out / "model")
    metrics = {"eval/accuracy": float(final.get("val/accuracy", math.nan)),
               "eval/margin": float(final.get("val/margin", math.nan)),
               "val/loss": float(final.get("val/loss", math.nan)),
               "steps": int(final_ckpt["global_step"]), "train_seconds_this_run": seconds,
               "pairs_train": len(train), "pairs_eval": len(val)}
    metrics |= accuracy_by_source(trained, val, val_kept)
    # What the SFT model's own held-out samples look like to the labeler (the pairs' raw material).
    metrics |= {f"eval/sft_{k.removeprefix('sampled_eval/')}": v for k, v in stats.items()
                if k.startswith("sampled_eval/") and not k.endswith(("replies", "pairs"))}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    (out / "data_stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    (out / "report.md").write_text(summary_markdown(metrics, stats))
    return RewardResult(out, model_dir, metrics, stats, resumed_step)


def summary_markdown(metrics: dict[str, float], stats: dict[str, float]) -> str:
    lines = ["# Reward model", "",
             f"Held-out pairwise accuracy **{metrics['eval/accuracy']:.3f}** on {int(metrics['pairs_eval'])} "
             f"pairs the labeler ranked (mean margin {metrics['eval/margin']:.3f}); trained on "
             f"{int(metrics['pairs_train'])} pairs for {int(metrics['steps'])} steps.", "",
             "| data | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in sorted(stats.items())]
    return "\n".join(lines) + "\n"


def _mean(values) -> float:  # noqa: ANN001 (any iterable of numbers)
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan


def main(argv: list[str] | None = None) -> int:
    """Reward-model training without Prefect or MLflow."""
    from components.config import stage_main

    return stage_main("reward", run_reward, argv)


if __name__ == "__main__":
    sys.exit(main())
