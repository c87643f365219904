"""Rejection-sampling finetuning (expert iteration), the seed's recipe: sample n solutions per problem,
keep the correct ones, pick one per problem (the shortest or the first), finetune on them, and repeat for
a number of rounds, each round sampling from the model the last one produced.

A kept solution must have the right marked answer and end its turn (training on a cut-off reply would
teach the model not to stop). Finetuning is the SFT step (loss on the assistant's sampled tokens, tool
outputs masked) with its own short schedule per round. A finished round is saved with a fingerprint of
everything that made it, so a rerun resumes after the last finished round."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from components.chat.protocol import ChatFormat, Conversation, assistant_text, validate_conversation
from components.model.checkpoint import WEIGHTS, load_model, save_model
from components.model.gpt import GPT
from components.rlhf.ppo import PromptBatches
from components.rlhf.sampling import Reply, sample_replies
from components.rlvr.evaluation import sampling_params
from components.rlvr.rewards import RewardWeights, verify
from components.tasks.base import TaskExample
from components.training.pretrain import LAST, final_model, fit_and_validate, resume_point, stage_trainer
from components.training.pretrain_module import OptimConfig
from components.training.sft_data import SFTData, pack
from components.training.sft_module import SFTModule

log = logging.getLogger(__name__)
SELECTIONS = ("shortest", "first")


@dataclass(frozen=True)
class RFTConfig:
    rounds: int = 2
    samples_per_problem: int = 8
    problems_per_round: int = 256
    select: str = "shortest"
    max_new_tokens: int = 96
    temperature: float = 1.0
    steps_per_round: int = 60
    micro_batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 5
    tools: bool = False
    weights: RewardWeights = field(default_factory=RewardWeights)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.select not in SELECTIONS:
            raise ValueError(f"rlvr.rft.select must be one of {SELECTIONS}, got {self.select!r}")
        if min(self.rounds, self.samples_per_problem, self.problems_per_round, self.steps_per_round) < 1:
            raise ValueError(
                "rlvr.rft: rounds, samples_per_problem, problems_per_round and steps_per_round must be >= 1"
            )


def is_kept(example: TaskExample, reply: Reply, weights: RewardWeights) -> bool:
    return (
        reply.ended
        and verify(assistant_text(reply.content), reply.ended, example.answer, weights).accuracy > 0
    )


def select_solutions(
    problems: Sequence[TaskExample], groups: Sequence[Sequence[Reply]], how: str, weights: RewardWeights
) -> list[tuple[TaskExample, Reply]]:
    """One kept reply per problem that has any: the shortest (fewest tokens, first on ties) or the first."""
    if how not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {how!r}")
    chosen = []
    for example, group in zip(problems, groups, strict=True):
        correct = [r for r in group if is_kept(example, r, weights)]
        if correct:
            chosen.append(
                (example, min(correct, key=lambda r: len(r.tokens)) if how == "shortest" else correct[0])
            )
    return chosen


def solution_conversation(example: TaskExample, reply: Reply) -> Conversation:
    return validate_conversation(
        {"messages": [*example.prompt, {"role": "assistant", "content": reply.content}]}
    )


def round_problems(n: int, per_round: int, seed: int, round_index: int) -> list[int]:
    """Round r's problems: the r-th slice of a seeded order over all rounds (fresh problems while they
    last, then the next epoch's order), exactly as PPO draws its prompt batches."""
    return PromptBatches(n, per_round, seed, 0).indices(round_index).tolist()


def run_rft(
    start: GPT,
    fmt: ChatFormat,
    train: Sequence[TaskExample],
    held_out: Sequence[TaskExample],
    cfg: RFTConfig,
    trainer_cfg: DictConfig,
    out: Path,
    fingerprint: str,
    evaluate: Callable[[GPT], dict[str, float]],
) -> tuple[GPT, list[dict[str, float]]]:
    """All rounds (resuming after the last finished one): (final model, one history row per round, with
    the held-out scores `evaluate` returns after the round)."""
    model = start
    history: list[dict[str, float]] = []
    flops = 0.0
    per_token_forward = start.config.flops_per_token() / 3
    for r in range(1, cfg.rounds + 1):
        round_dir = out / f"round_{r}"
        fingerprint = hashlib.sha256(f"{fingerprint}:{r}".encode()).hexdigest()[:16]
        done = round_dir / "round.json"
        if done.exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            if (round_dir / "model" / WEIGHTS).exists():
                model = load_model(round_dir / "model", model.config).eval()
            row = json.loads(done.read_text())["history"]
            history.append(row)
            flops = row["rft/flops"]
            log.info("RFT round %d already done (%s)", r, round_dir)
            continue
        indices = round_problems(len(train), min(cfg.problems_per_round, len(train)), cfg.seed, r - 1)
        problems = [train[i] for i in indices]
        params = sampling_params(cfg.max_new_tokens, cfg.temperature, fmt, cfg.seed * 7919 + r)
        groups = sample_replies(
            model.eval(),
            fmt,
            problems,
            params,
            cfg.samples_per_problem,
            batch_size=max(1, 128 // cfg.samples_per_problem),
            tools=cfg.tools,
        )
        chosen = select_solutions(problems, groups, cfg.select, cfg.weights)
        hits = [
            [is_kept(ex, reply, cfg.weights) for reply in group]
            for ex, group in zip(problems, groups, strict=True)
        ]
        sampled_tokens = sum(
            len(fmt.render_prompt(ex.prompt)) + len(reply.tokens)
            for ex, group in zip(problems, groups, strict=True)
            for reply in group
        )
        flops += per_token_forward * sampled_tokens
        row = {
            "round": r,
            "rft/problems": len(problems),
            "rft/solved_rate": float(np.mean([any(h) for h in hits])),
            "rft/sample_accuracy": float(np.mean(hits)),
            "rft/kept": len(chosen),
            "rft/kept_tokens_mean": float(np.mean([len(reply.tokens) for _, reply in chosen]))
            if chosen
            else 0.0,
        }
        round_dir.mkdir(parents=True, exist_ok=True)
        with (round_dir / "solutions.jsonl").open("w") as f:
            f.writelines(
                json.dumps(
                    {"prompt": ex.prompt, "expected": ex.answer, "reply": reply.content}, ensure_ascii=False
                )
                + "\n"
                for ex, reply in chosen
            )
        if chosen:
            model, trained_tokens = finetune(
                model,
                fmt,
                [solution_conversation(ex, rep) for ex, rep in chosen],
                [ex.conversation for ex in held_out],
                cfg,
                trainer_cfg,
                round_dir,
                fingerprint,
            )
            flops += model.config.flops_per_token() * trained_tokens
            save_model(model, round_dir / "model")
        else:
            log.warning(
                "RFT round %d: no correct solution among %d problems x %d samples; model unchanged",
                r,
                len(problems),
                cfg.samples_per_problem,
            )
        row |= {"rft/flops": flops} | {f"rft/eval/{k}": v for k, v in evaluate(model).items()}
        history.append(row)
        done.write_text(
            json.dumps(
                {"fingerprint": fingerprint, "history": row, "config": asdict(cfg)}, indent=1, default=str
            )
        )
    return model, history


def finetune(
    model: GPT,
    fmt: ChatFormat,
    conversations: list[Conversation],
    val_conversations: list[Conversation],
    cfg: RFTConfig,
    trainer_cfg: DictConfig,
    out: Path,
    fingerprint: str,
) -> tuple[GPT, int]:
    """`steps_per_round` SFT steps on the kept solutions: (finetuned model, tokens processed)."""
    seq_len = model.config.seq_len
    train, _ = pack([fmt.render(c) for c in conversations], seq_len, fmt.pad)
    val, _ = pack([fmt.render(c) for c in val_conversations], seq_len, fmt.pad)
    if len(train) == 0:
        raise ValueError(f"RFT: no kept solution fits the context of {seq_len} tokens")
    micro_batch = min(cfg.micro_batch_size, len(train))
    ckpt_dir = out / "checkpoints"
    resume_from, _ = resume_point(ckpt_dir, model.config, fingerprint, True, "rlvr.rft")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    optim = OptimConfig(
        lr=cfg.lr,
        min_lr_ratio=0.0,
        warmup_steps=cfg.warmup_steps,
        max_steps=cfg.steps_per_round,
        weight_decay=0.0,
    )
    module = SFTModule(model, optim, run_fingerprint=fingerprint)
    trainer = stage_trainer(trainer_cfg, out, ckpt_dir, None, [])
    fit_and_validate(trainer, module, SFTData(train, val, micro_batch, 1, cfg.seed), resume_from, "RFT")
    state = torch.load(ckpt_dir / LAST, map_location="cpu", weights_only=True)["state_dict"]
    return final_model(state, model.config).eval(), cfg.steps_per_round * micro_batch * seq_len
