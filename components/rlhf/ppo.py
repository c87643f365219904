"""PPO against a reward model, with a KL leash to the SFT model, as a LightningModule.

One training step is one PPO iteration (InstructGPT / Ziegler et al.; knobs named as in TRL):
  1. rollout: the policy samples replies to a batch of prompts (the KV-cached engine, batched);
  2. score: the frozen reward model reads each reply's last token; a reply that did not end its turn
     pays `missing_eos_penalty`; every token pays `kl_coef * KL(policy || reference)` (k1 or k3);
  3. advantages: GAE over the per-token rewards with the critic's values, whitened;
  4. `epochs` passes over the rollout in `minibatches`, each a clipped policy loss + clipped value loss
     (+ the SFT loss on pretraining text with PPO-ptx) and one optimizer step;
  5. the KL controller updates its coefficient from the rollout's KL (fixed, or adaptive to a target).
The reference and the reward model are frozen and kept out of checkpoints (they are the stage's inputs).
Metrics go to the logger every iteration with the iteration as step, and into `history` (checkpointed),
which the stage's report reads."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from components.chat.protocol import ChatFormat
from components.model.engine import SamplingParams
from components.model.gpt import GPT
from components.rlhf.labeler import Labeler, repetition_rate
from components.rlhf.ppo_math import (
    entropy_from_logits,
    gae,
    kl_controller,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from components.rlhf.reward_model import RewardModel
from components.rlhf.sampling import Reply, SequenceBatch, sample_replies, sequence_batch, stop_tokens
from components.tasks.base import TaskExample
from components.training.data import epoch_order
from components.training.pretrain_module import NonFiniteLossError


@dataclass(frozen=True)
class PPOConfig:
    batch_size: int = 32             # prompts per rollout (one PPO iteration)
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    epochs: int = 2                  # passes over each rollout
    minibatches: int = 2             # optimizer steps per pass
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    vf_coef: float = 0.5
    entropy_coef: float = 0.0
    whiten_advantages: bool = True
    missing_eos_penalty: float = 1.0
    max_grad_norm: float = 1.0
    kl_estimator: str = "k1"
    kl_coef: float = 0.1
    kl_adaptive: bool = True
    kl_target: float | None = 4.0    # nats per reply (summed over its tokens)
    kl_horizon: int = 1000           # replies over which the adaptive controller closes the gap
    ptx_coef: float = 0.0            # PPO-ptx: + ptx_coef x next-token loss on pretraining text
    lr: float = 1e-5
    critic_lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size % self.minibatches:
            raise ValueError(f"rlhf: rollout.batch_size ({self.batch_size}) must be a multiple of "
                             f"ppo.minibatches ({self.minibatches})")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"rlhf.kl.estimator must be k1 or k3 (in the reward), got {self.kl_estimator!r}")

    @property
    def updates_per_iteration(self) -> int:
        return self.epochs * self.minibatches


class PromptBatches(IterableDataset):
    """Iteration i's prompt indices: a pure function of (seed, i), so a resumed run sees the same ones."""

    def __init__(self, n_prompts: int, batch_size: int, seed: int, start: int) -> None:
        if n_prompts < batch_size:
            raise ValueError(f"only {n_prompts} RL prompts for a rollout batch of {batch_size}: raise "
                             "reward.prompts.size or lower rlhf.rollout.batch_size")
        self.n, self.batch_size, self.seed, self.start = n_prompts, batch_size, seed, start

    def indices(self, iteration: int) -> torch.Tensor:
        sample = np.arange(iteration * self.batch_size, (iteration + 1) * self.batch_size)
        epochs, within = np.divmod(sample, self.n)
        return torch.tensor([int(epoch_order(self.seed, self.n, int(e))[w])
                             for e, w in zip(epochs, within, strict=True)])

    def __iter__(self) -> Iterator[torch.Tensor]:
        i = self.start
        while True:
            yield self.indices(i)
            i += 1


class PromptData(L.LightningDataModule):
    def __init__(self, n_prompts: int, cfg: PPOConfig) -> None:
        super().__init__()
        self.n_prompts, self.cfg = n_prompts, cfg

    def train_dataloader(self) -> DataLoader:
        start = self.trainer.global_step // self.cfg.updates_per_iteration
        return DataLoader(PromptBatches(self.n_prompts, self.cfg.batch_size, self.cfg.seed, start),
                          batch_size=None)


@dataclass
class Rollout:
    seqs: SequenceBatch
    replies: list[Reply]
    old_logp: torch.Tensor      # (B, R) policy log-probs at sampling time
    ref_logp: torch.Tensor      # (B, R)
    values: torch.Tensor        # (B, R) critic
    scores: torch.Tensor        # (B,) reward model, before the missing-<|im_end|> penalty
    rewards: torch.Tensor       # (B, R) per-token: -kl_coef * kl, + penalised score at the end
    kl: torch.Tensor            # (B, R) per-token KL estimate used in the reward
    advantages: torch.Tensor    # (B, R)
    returns: torch.Tensor       # (B, R)


class PPOModule(L.LightningModule):
    config_group = "rlhf"

    def __init__(self, policy: GPT, reference: GPT, critic: RewardModel, reward_model: RewardModel,
                 fmt: ChatFormat, examples: Sequence[TaskExample], cfg: PPOConfig, labeler: Labeler,
                 ptx_tokens: np.ndarray | None = None, run_fingerprint: str | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy, self.critic = policy, critic
        # Frozen, and not submodules: outside the optimizer, the state dict and the checkpoints.
        self._frozen = (reference.eval().requires_grad_(False), reward_model.eval().requires_grad_(False))
        self.fmt, self.examples, self.cfg, self.labeler = fmt, list(examples), cfg, labeler
        self.prompts = [fmt.render_prompt(ex.prompt) for ex in self.examples]
        self.ptx_tokens = ptx_tokens
        if cfg.ptx_coef > 0 and ptx_tokens is None:
            raise ValueError("rlhf.ptx.coef > 0 needs pretraining tokens (rlhf.ptx.tokens)")
        self.kl_ctl = kl_controller(cfg.kl_adaptive, cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.run_fingerprint = run_fingerprint
        self.history: list[dict[str, float]] = []
        self.last_rollout: Rollout | None = None

    @property
    def reference(self) -> GPT:
        return self._frozen[0]

    @property
    def reward_model(self) -> RewardModel:
        return self._frozen[1]

    @property
    def iteration(self) -> int:
        return self.global_step // self.cfg.updates_per_iteration

    def on_fit_start(self) -> None:
        for model in self._frozen:
            model.to(self.device)

    def sampling_params(self, seed: int) -> SamplingParams:
        c = self.cfg
        return SamplingParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_k=c.top_k,
                              top_p=c.top_p, stop_token_ids=stop_tokens(self.fmt), seed=seed)

    @torch.no_grad()
    def rollout(self, indices: Sequence[int], seed: int) -> Rollout:
        examples = [self.examples[i] for i in indices]
        prompts = [self.prompts[i] for i in indices]
        replies = [group[0] for group in sample_replies(self.policy, self.fmt, examples,
                                                        self.sampling_params(seed),
                                                        batch_size=len(examples))]
        seqs = sequence_batch(prompts, replies, self.fmt.pad, self.device)
        t = self.cfg.temperature
        old_logp = logprobs_from_logits(seqs.response_logits(self.policy, t), seqs.response)
        ref_logp = logprobs_from_logits(seqs.response_logits(self.reference, t), seqs.response)
        values = self.critic.values(seqs.input_ids, seqs.attention_mask)[:, seqs.prompt_len - 1:-1]
        values = values * seqs.response_mask
        scores = self.reward_model(seqs.input_ids, seqs.attention_mask).float()
        ended = torch.tensor([r.ended for r in replies], device=self.device)
        penalised = scores - self.cfg.missing_eos_penalty * (~ended).float()
        kl = kl_estimate(old_logp, ref_logp, self.cfg.kl_estimator) * seqs.action_mask
        rewards = token_rewards(penalised, kl, seqs.response_mask, self.kl_ctl.value)
        advantages, returns = gae(rewards, values, seqs.response_mask, self.cfg.gamma, self.cfg.lam)
        if self.cfg.whiten_advantages:
            advantages = masked_whiten(advantages, seqs.action_mask)
        return Rollout(seqs, replies, old_logp, ref_logp, values, scores, rewards, kl, advantages, returns)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        iteration = self.iteration
        seed = self.cfg.seed * 1_000_003 + iteration
        rollout = self.rollout(batch.tolist(), seed)
        update_stats = self.update(rollout, seed)
        stats = self.rollout_stats(rollout, [self.examples[i] for i in batch.tolist()]) | update_stats
        stats["rl/kl_coef"] = self.kl_ctl.value
        self.kl_ctl.update(stats["rl/kl"], len(rollout.replies))
        stats["iteration"] = iteration + 1
        self.history.append(stats)
        self.last_rollout = rollout
        if self.logger is not None:
            self.logger.log_metrics({k: v for k, v in stats.items() if k != "iteration"}, step=iteration + 1)

    def update(self, rollout: Rollout, seed: int) -> dict[str, float]:
        """`epochs` x `minibatches` clipped PPO steps on one rollout; mean of each statistic."""
        c = self.cfg
        optimizer = self.optimizers()
        generator = torch.Generator().manual_seed(seed)
        n = len(rollout.replies)
        sums: dict[str, float] = {}
        for _ in range(c.epochs):
            order = torch.randperm(n, generator=generator)
            for rows in order.chunk(c.minibatches):
                rows = rows.to(self.device)
                stats = self.minibatch_step(rollout, rows, optimizer)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
        return {k: v / c.updates_per_iteration for k, v in sums.items()}

    def minibatch_step(self, rollout: Rollout, rows: torch.Tensor, optimizer) -> dict[str, float]:  # noqa: ANN001
        c = self.cfg
        seqs = rollout.seqs.select(rows)
        logits = seqs.response_logits(self.policy, c.temperature)
        logp = logprobs_from_logits(logits, seqs.response)
        pg_loss, pg_stats = policy_loss(logp, rollout.old_logp[rows], rollout.advantages[rows],
                                        seqs.action_mask, c.clip_range)
        entropy = masked_mean(entropy_from_logits(logits), seqs.action_mask)
        values = self.critic.values(seqs.input_ids, seqs.attention_mask)[:, seqs.prompt_len - 1:-1]
        vf_loss, vf_stats = value_loss(values, rollout.values[rows], rollout.returns[rows],
                                       seqs.response_mask, c.clip_range_value)
        loss = pg_loss + c.vf_coef * vf_loss - c.entropy_coef * entropy
        stats = {"rl/policy_loss": pg_loss.item(), "rl/value_loss": vf_loss.item(),
                 "rl/entropy": entropy.item(), "rl/clipfrac": pg_stats["clipfrac"],
                 "rl/approx_kl": pg_stats["approx_kl"], "rl/vf_clipfrac": vf_stats["vf_clipfrac"]}
        if c.ptx_coef > 0:
            ptx = self.ptx_loss(len(rows))
            loss = loss + c.ptx_coef * ptx
            stats["rl/ptx_loss"] = ptx.item()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"PPO loss is {loss.item()} at iteration {self.iteration}: lower "
                                     "rlhf.optim.lr or raise rlhf.kl.coef; the last good checkpoint is kept")
        optimizer.zero_grad()
        self.manual_backward(loss)
        if c.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), c.max_grad_norm)
        optimizer.step()
        return stats

    def ptx_loss(self, n_rows: int) -> torch.Tensor:
        """Next-token loss on random windows of pretraining text (InstructGPT's PPO-ptx)."""
        seq_len = self.policy.config.seq_len
        rng = np.random.default_rng([self.cfg.seed, self.global_step])
        starts = rng.integers(0, len(self.ptx_tokens) - seq_len - 1, size=n_rows)
        windows = np.stack([self.ptx_tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)
        block = torch.from_numpy(windows).to(self.device)
        return self.policy(block[:, :-1], block[:, 1:])

    def rollout_stats(self, rollout: Rollout, examples: Sequence[TaskExample]) -> dict[str, float]:
        """What makes reward hacking visible: the reward model's score beside the labeler's judgement,
        KL, repetition, length and how often replies end their turn."""
        seqs = rollout.seqs
        judged = [self.labeler.judge(ex, *r.judged) for ex, r in zip(examples, rollout.replies, strict=True)]
        correct = [float(j.correct) for j in judged if j.correct is not None]
        return {
            "rl/reward": float(rollout.scores.mean()),
            "rl/kl": float((rollout.kl * seqs.action_mask).sum(-1).mean()),
            "rl/kl_k3": float((kl_estimate(rollout.old_logp, rollout.ref_logp, "k3") * seqs.action_mask)
                              .sum(-1).mean()),
            "rl/non_score_reward": float((-self.kl_ctl.value * rollout.kl).sum(-1).mean()),
            "rl/response_length": float(seqs.response_mask.sum(-1).mean()),
            "rl/ended_rate": float(np.mean([r.ended for r in rollout.replies])),
            "rl/repetition": float(np.mean([repetition_rate(" ".join(p["text"] for p in r.content))
                                            for r in rollout.replies])),
            "rl/labeler_score": float(np.mean([j.score for j in judged])),
            "rl/labeler_correct": float(np.mean(correct)) if correct else math.nan,
            "rl/value_mean": float(masked_mean(rollout.values, seqs.response_mask)),
            "rl/return_mean": float(masked_mean(rollout.returns, seqs.response_mask)),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        c = self.cfg
        return torch.optim.AdamW([{"params": self.policy.parameters(), "lr": c.lr},
                                  {"params": self.critic.parameters(), "lr": c.critic_lr}],
                                 betas=(0.9, 0.95), weight_decay=0.0, eps=1e-5)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gpt_config"] = self.policy.config.to_dict()
        checkpoint["run_fingerprint"] = self.run_fingerprint
        checkpoint["kl_controller"] = self.kl_ctl.state_dict()
        checkpoint["history"] = self.history
        checkpoint["ppo_config"] = asdict(self.cfg)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.kl_ctl.load_state_dict(checkpoint["kl_controller"])
        self.history = list(checkpoint.get("history", []))

