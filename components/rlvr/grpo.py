"""GRPO on problems with an answer key (DeepSeekMath / DeepSeek-R1), as a LightningModule.

One training step is one GRPO step:
  1. sample `group_size` replies to each of `prompts_per_step` problems (KV-cached engine; the calculator
     runs in the sandbox when tools are offered);
  2. reward each reply by rule: the marked final answer against the key, plus format (rlvr.rewards);
  3. advantage = reward minus its group's mean (divided by the group's std unless `scale_std` is off,
     as Dr. GRPO argues); groups whose replies all scored the same carry no signal and are dropped;
     replies cut off by the token limit are masked out of the loss when `mask_truncated` (DAPO);
  4. `epochs` passes in `minibatches` of the clipped surrogate (asymmetric clip with `clip_high`, DAPO),
     plus `kl_coef` x k3 KL to the frozen reference when > 0, aggregated per `aggregation`.
No critic: the group is the baseline. The reference is frozen and outside checkpoints; KL to it is
logged every step whether or not it is in the loss. Steps are counted by the module (checkpointed), not
by Lightning's optimizer-step counter, since dropped groups make the number of optimizer steps vary."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from components.chat.protocol import ChatFormat, assistant_text
from components.model.engine import SamplingParams
from components.model.gpt import GPT
from components.rlhf.ppo import PromptBatches
from components.rlhf.ppo_math import entropy_from_logits, kl_estimate, logprobs_from_logits, masked_mean
from components.rlhf.sampling import Reply, SequenceBatch, sample_replies, sequence_batch
from components.rlvr.evaluation import sampling_params, used_tool
from components.rlvr.grpo_math import (
    AGGREGATIONS,
    GRPOLossConfig,
    completion_mask,
    group_advantages,
    grpo_loss,
    zero_variance_groups,
)
from components.rlvr.rewards import RewardParts, RewardWeights, verify
from components.tasks.base import TaskExample
from components.training.pretrain_module import NonFiniteLossError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GRPOConfig:
    prompts_per_step: int = 16
    group_size: int = 8
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    epochs: int = 1
    minibatches: int = 2
    clip_low: float = 0.2
    clip_high: float | None = None  # DAPO's clip-higher: a larger upper clip keeps exploration alive
    scale_std: bool = True  # False: Dr. GRPO's unscaled advantages
    aggregation: str = "grpo"  # grpo | dr_grpo | dapo
    kl_coef: float = 0.0  # k3 KL to the reference in the loss (0: logged only)
    mask_truncated: bool = True
    filter_zero_variance: bool = True
    max_grad_norm: float = 1.0
    lr: float = 1e-4
    max_steps: int = 50
    tools: bool = False
    weights: RewardWeights = field(default_factory=RewardWeights)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"rlvr.grpo.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.group_size < 2:
            raise ValueError(
                f"rlvr.grpo.group_size must be >= 2 (the group is the baseline), got {self.group_size}"
            )
        if min(self.prompts_per_step, self.epochs, self.minibatches, self.max_steps) < 1:
            raise ValueError("rlvr.grpo: prompts_per_step, epochs, minibatches and max_steps must be >= 1")

    @property
    def loss(self) -> GRPOLossConfig:
        return GRPOLossConfig(
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            kl_coef=self.kl_coef,
            aggregation=self.aggregation,
            max_len=self.max_new_tokens,
        )


class ProblemData(L.LightningDataModule):
    def __init__(self, n_problems: int, cfg: GRPOConfig, module: GRPOModule) -> None:
        super().__init__()
        self.n_problems, self.cfg, self.module = n_problems, cfg, module

    def train_dataloader(self) -> DataLoader:
        """Step i's problems are a pure function of (seed, i), as for PPO's prompts: a resumed run sees the
        same ones."""
        if self.n_problems < self.cfg.prompts_per_step:
            raise ValueError(
                f"only {self.n_problems} training problems for {self.cfg.prompts_per_step} per step: "
                "raise rlvr.problems.size or lower rlvr.grpo.prompts_per_step"
            )
        batches = PromptBatches(
            self.n_problems, self.cfg.prompts_per_step, self.cfg.seed, self.module.steps_done
        )
        return DataLoader(batches, batch_size=None)


@dataclass
class GroupRollout:
    seqs: SequenceBatch
    replies: list[Reply]
    parts: list[RewardParts]
    rewards: torch.Tensor  # (P, G)
    advantages: torch.Tensor  # (P * G,)
    keep: torch.Tensor  # (P * G,) bool: rows of groups with a learning signal
    loss_mask: torch.Tensor  # (P * G, R) tokens the loss sees (sampled, and not truncated if masked)
    old_logp: torch.Tensor  # (P * G, R)
    ref_logp: torch.Tensor  # (P * G, R)
    entropy: torch.Tensor  # (P * G, R)


class GRPOModule(L.LightningModule):
    config_group = "rlvr"

    def __init__(
        self,
        policy: GPT,
        reference: GPT,
        fmt: ChatFormat,
        problems: Sequence[TaskExample],
        cfg: GRPOConfig,
        run_fingerprint: str | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy = policy
        self._frozen = (reference.eval().requires_grad_(False),)  # not a submodule: not trained or saved
        self.fmt, self.problems, self.cfg = fmt, list(problems), cfg
        self.prompts = [fmt.render_prompt(ex.prompt) for ex in self.problems]
        self.run_fingerprint = run_fingerprint
        self.steps_done = 0
        self.flops = 0.0  # training compute so far: sampling, scoring and updates (see step_flops)
        self.history: list[dict[str, float]] = []
        self.eval_history: list[dict[str, float]] = []  # held-out scores at intervals (HeldOutEval)
        self.last_rollout: GroupRollout | None = None
        self.last_indices: list[int] = []

    @property
    def reference(self) -> GPT:
        return self._frozen[0]

    def on_fit_start(self) -> None:
        self.reference.to(self.device)

    def params(self, seed: int) -> SamplingParams:
        c = self.cfg
        return sampling_params(c.max_new_tokens, c.temperature, self.fmt, seed, c.top_k, c.top_p)

    @torch.no_grad()
    def rollout(self, indices: Sequence[int], seed: int) -> GroupRollout:
        c = self.cfg
        problems = [self.problems[i] for i in indices]
        groups = sample_replies(
            self.policy,
            self.fmt,
            problems,
            self.params(seed),
            c.group_size,
            batch_size=len(problems),
            tools=c.tools,
        )
        replies = [r for group in groups for r in group]
        parts = [
            verify(assistant_text(r.content), r.ended, ex.answer, c.weights, ex.question)
            for ex, group in zip(problems, groups, strict=True)
            for r in group
        ]
        rewards = torch.tensor([p.total for p in parts], dtype=torch.float).view(len(problems), c.group_size)
        advantages = group_advantages(rewards, c.scale_std).flatten()
        keep = torch.ones(len(replies), dtype=torch.bool)
        if c.filter_zero_variance:
            keep = (~zero_variance_groups(rewards)).repeat_interleave(c.group_size)
        prompts = [self.prompts[i] for i in indices for _ in range(c.group_size)]
        seqs = sequence_batch(prompts, replies, self.fmt.pad, self.device)
        ended = torch.tensor([r.ended for r in replies], device=self.device)
        loss_mask = completion_mask(seqs.action_mask, ended, c.mask_truncated)
        logits = seqs.response_logits(self.policy, c.temperature)
        old_logp = logprobs_from_logits(logits, seqs.response)
        entropy = entropy_from_logits(logits)
        ref_logp = logprobs_from_logits(seqs.response_logits(self.reference, c.temperature), seqs.response)
        return GroupRollout(
            seqs,
            replies,
            parts,
            rewards,
            advantages.to(self.device),
            keep.to(self.device),
            loss_mask,
            old_logp,
            ref_logp,
            entropy,
        )

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        if self.steps_done >= self.cfg.max_steps:
            self.trainer.should_stop = True
            return
        indices = batch.tolist()
        seed = self.cfg.seed * 1_000_003 + self.steps_done
        rollout = self.rollout(indices, seed)
        update_stats = self.update(rollout, seed)
        self.flops += self.step_flops(rollout)
        self.steps_done += 1
        stats = self.rollout_stats(rollout) | update_stats | {"rl/flops": self.flops}
        self.history.append({"step": self.steps_done, **stats})
        self.last_rollout, self.last_indices = rollout, indices
        if self.logger is not None:
            self.logger.log_metrics(stats, step=self.steps_done)
        log.info(
            "GRPO step %d/%d: reward %.3f, correct %.3f, length %.1f, KL/token %.4f",
            self.steps_done,
            self.cfg.max_steps,
            stats["rl/reward"],
            stats["rl/reward_accuracy"],
            stats["rl/response_length"],
            stats["rl/kl"],
        )
        if self.steps_done >= self.cfg.max_steps:
            self.trainer.should_stop = True

    def update(self, rollout: GroupRollout, seed: int) -> dict[str, float]:
        """`epochs` passes over the kept rows in `minibatches`; means of the loss statistics."""
        c = self.cfg
        rows = rollout.keep.nonzero().flatten()
        if len(rows) == 0:
            return {"rl/optimizer_steps": 0.0}
        optimizer = self.optimizers()
        generator = torch.Generator().manual_seed(seed)
        sums: dict[str, float] = {}
        steps = 0
        for _ in range(c.epochs):
            order = rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
            for chunk in order.chunk(min(c.minibatches, len(order))):
                for k, v in self.minibatch_step(rollout, chunk, optimizer).items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
        return {k: v / steps for k, v in sums.items()} | {"rl/optimizer_steps": float(steps)}

    def minibatch_step(self, rollout: GroupRollout, rows: torch.Tensor, optimizer) -> dict[str, float]:  # noqa: ANN001
        c = self.cfg
        seqs = rollout.seqs.select(rows)
        logp = logprobs_from_logits(seqs.response_logits(self.policy, c.temperature), seqs.response)
        loss, stats = grpo_loss(
            logp,
            rollout.old_logp[rows],
            rollout.advantages[rows],
            rollout.loss_mask[rows],
            c.loss,
            rollout.ref_logp[rows] if c.kl_coef > 0 else None,
        )
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"GRPO loss is {loss.item()} at step {self.steps_done}: lower "
                "rlvr.grpo.lr; the last good checkpoint is kept"
            )
        optimizer.zero_grad()
        self.manual_backward(loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm or float("inf"))
        optimizer.step()
        return {
            "rl/loss": loss.item(),
            "rl/clipfrac": stats["clipfrac"],
            "rl/ratio_max": stats["ratio_max"],
            "rl/grad_norm": float(grad_norm),
        }

    def step_flops(self, rollout: GroupRollout) -> float:
        """Compute of one step, counted as forward passes (2N per token, attention included) over every
        sequence for sampling, the old-policy and the reference log-probs, plus 3x forward for each update
        pass over the kept rows (forward + backward, 6N per token)."""
        per_token_forward = self.policy.config.flops_per_token() / 3
        tokens = float(rollout.seqs.attention_mask.sum())
        kept = float(rollout.seqs.attention_mask[rollout.keep].sum())
        return per_token_forward * (3 * tokens + 3 * self.cfg.epochs * kept)

    def rollout_stats(self, rollout: GroupRollout) -> dict[str, float]:
        """The R1 curves: reward and its parts, response length, KL to the reference, and what the group
        filter and the truncation mask did."""
        seqs, replies = rollout.seqs, rollout.replies
        lengths = seqs.response_mask.sum(-1)
        correct = torch.tensor([p.accuracy > 0 for p in rollout.parts], device=lengths.device)
        kl = kl_estimate(rollout.old_logp, rollout.ref_logp, "k3")
        return {
            "rl/reward": float(rollout.rewards.mean()),
            "rl/reward_accuracy": float(np.mean([p.accuracy for p in rollout.parts])),
            "rl/reward_format": float(np.mean([p.format for p in rollout.parts])),
            "rl/reward_working": float(np.mean([p.working for p in rollout.parts])),
            "rl/response_length": float(lengths.mean()),
            "rl/response_length_correct": float(lengths[correct].mean()) if correct.any() else float("nan"),
            "rl/kl": float(masked_mean(kl, seqs.action_mask)),
            "rl/kl_per_reply": float((kl * seqs.action_mask).sum(-1).mean()),
            "rl/entropy": float(masked_mean(rollout.entropy, seqs.action_mask)),
            "rl/zero_variance_frac": float(zero_variance_groups(rollout.rewards).float().mean()),
            "rl/truncated_rate": float(np.mean([not r.ended for r in replies])),
            "rl/tool_use_rate": float(np.mean([used_tool(r) for r in replies])),
            "rl/kept_rows": float(rollout.keep.sum()),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.policy.parameters(), lr=self.cfg.lr, betas=(0.9, 0.95), weight_decay=0.0, eps=1e-8
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gpt_config"] = self.policy.config.to_dict()
        checkpoint["run_fingerprint"] = self.run_fingerprint
        checkpoint["grpo_state"] = {
            "steps_done": self.steps_done,
            "flops": self.flops,
            "history": self.history,
            "eval_history": self.eval_history,
        }
        checkpoint["grpo_config"] = {k: v for k, v in asdict(self.cfg).items() if k != "weights"}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["grpo_state"]
        self.steps_done, self.flops = int(state["steps_done"]), float(state["flops"])
        self.history = list(state["history"])
        self.eval_history = list(state["eval_history"])
