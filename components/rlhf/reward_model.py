"""A reward model for RLHF: the (SFT) transformer with a scalar head, trained on preference pairs.

The score of a sequence is the head's output at its last real token, the only position that has read the
whole prompt and response. Training is Bradley-Terry: P(chosen beats rejected) = sigmoid(r_c - r_r), with
Llama 2's optional per-pair margin and an optional centring term (Eisenstein et al. 2023) that keeps the
rewards near zero, since BT only pins down their differences. PPO later reads `values` (one number per
position) from the same model as its initial critic.

On disk a reward model is a normal saved GPT folder (model.safetensors, gpt_config.json, tokenizer.json,
so `load_pretrained` still reads it) plus the head in `reward_head.safetensors`; nothing is pickled.

Pair batches follow the SFT data module: training micro-batch m is a pure function of (seed, m), so a run
resumed at optimizer step s continues exactly where it stopped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from components.model.checkpoint import CONFIG, WEIGHTS, save_model
from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.model.loading import load_pretrained
from components.tokenizer.bpe import Tokenizer
from components.training.pretrain_module import OptimConfig, PretrainModule
from components.training.sft_data import TrainRows, ValRows

HEAD_WEIGHTS = "reward_head.safetensors"
TOKENIZER = "tokenizer.json"

Batch = dict[str, torch.Tensor]


# --- the model -----------------------------------------------------------------------------------------

def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last True of each row: where a left- or right-padded sequence ends."""
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, seq), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    if not bool(mask.any(-1).all()):
        empty = (~mask.any(-1)).nonzero().flatten().tolist()
        raise ValueError(f"rows {empty[:10]} of the attention mask are all padding: every sequence needs at "
                         "least one real token to be scored")
    slots = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, slots, -1).amax(-1)


class RewardModel(nn.Module):
    """The transformer with a scalar head: one number per position; the reward is the one read at the last
    real token."""

    def __init__(self, backbone: GPT) -> None:
        """The head starts at N(0, 1/sqrt(n_embd + 1)) with zero bias (OpenAI's lm-human-preferences): the
        final RMSNorm makes hidden states ~unit scale, so initial rewards have std ~1, where the BT
        sigmoid has useful gradients, rather than ~0.02 * sqrt(n_embd) with the GPT's own init.

        The backbone's lm_head is unused; unless tied to the embedding it is frozen (requires_grad False)
        so DDP does not wait for its gradient, but it is kept and saved, so the folder stays a GPT."""
        super().__init__()
        self.backbone = backbone
        n_embd = backbone.config.n_embd
        p = next(backbone.parameters())
        self.head = nn.Linear(n_embd, 1, bias=True, device=p.device, dtype=p.dtype)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 1.0 / math.sqrt(n_embd + 1))
            self.head.bias.zero_()
        if not backbone.config.tie_embeddings:
            backbone.lm_head.weight.requires_grad_(False)

    @property
    def config(self) -> GPTConfig:
        return self.backbone.config

    def values(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) float32 scores at every position. Positions count real tokens only, and no token attends
        to padding, so a row scores the same left-padded (generation) as right-padded (training)."""
        if ids.ndim != 2 or attention_mask.shape != ids.shape:
            raise ValueError(f"ids and attention_mask must both be (batch, seq): got {tuple(ids.shape)} and "
                             f"{tuple(attention_mask.shape)}")
        mask = attention_mask.bool()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        h = self.backbone.hidden_states(ids, positions=positions, attention_mask=mask)
        return self.head(h).squeeze(-1).float()

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) float32 rewards: the value at each row's last real token."""
        last = last_token_index(attention_mask)
        return self.values(ids, attention_mask).gather(1, last[:, None]).squeeze(1)


# --- loss and metrics ----------------------------------------------------------------------------------

def _check_pairs(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> None:
    if chosen.ndim != 1 or chosen.shape != rejected.shape or chosen.numel() == 0:
        raise ValueError(f"chosen and rejected must be non-empty (B,) scores of the same shape: got "
                         f"{tuple(chosen.shape)} and {tuple(rejected.shape)}")
    if margin is not None and margin.shape != chosen.shape:
        raise ValueError(f"margin must be (B,) like the scores: got {tuple(margin.shape)} for "
                         f"{tuple(chosen.shape)}")


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                       center_coef: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """-log sigmoid(chosen - rejected - margin) + center_coef * (chosen + rejected)^2, per pair.

    margin (Llama 2): how much better chosen must score, larger for clearer preferences. The centring
    term is zero only when the two rewards sum to zero, so over training their mean drifts to 0 (BT alone
    leaves it free), which keeps PPO's reward scale stable. reduction: mean (default), sum or none."""
    _check_pairs(chosen, rejected, margin)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r}: choose mean, sum or none")
    chosen, rejected = chosen.float(), rejected.float()
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.to(diff)
    losses = -F.logsigmoid(diff)
    if center_coef:
        losses = losses + center_coef * (chosen + rejected) ** 2
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def _pair_counts(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, margin) sums: a tie counts half, as a coin flip would score."""
    correct = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return correct.sum(), (chosen.float() - rejected.float()).sum()


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """accuracy: fraction of pairs where chosen scores higher (ties 0.5); margin: mean chosen - rejected."""
    _check_pairs(chosen, rejected)
    correct, margin = _pair_counts(chosen.detach(), rejected.detach())
    n = chosen.numel()
    return {"accuracy": float(correct) / n, "margin": float(margin) / n}


# --- saving and loading --------------------------------------------------------------------------------

def save_reward_model(model: RewardModel, tokenizer: Tokenizer, out_dir: Path) -> Path:
    """The backbone as a normal saved GPT with its tokenizer (load_pretrained reads the folder), plus the
    head in HEAD_WEIGHTS. Returns out_dir."""
    out_dir = Path(out_dir)
    model = getattr(model, "_orig_mod", model)
    save_model(model.backbone, out_dir)
    tokenizer.save(out_dir / TOKENIZER)
    head = {k: v.detach().float().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(head, out_dir / HEAD_WEIGHTS, metadata={"format": "pt", "architecture": "llmops-reward-head"})
    return out_dir


def _model_folder(model_dir: Path, needed: tuple[str, ...]) -> Path:
    """model_dir, or its model/ (a stage's output folder); FileNotFoundError naming what is missing."""
    model_dir = Path(model_dir)
    candidates = [model_dir, model_dir / "model"]
    folder = next((c for c in candidates if all((c / n).exists() for n in needed)), None)
    if folder is not None:
        return folder
    folder = next((c for c in candidates if any((c / n).exists() for n in needed)), model_dir)
    missing = [n for n in needed if not (folder / n).exists()]
    raise FileNotFoundError(f"{folder} is not a complete saved model: missing {', '.join(missing)}. Point "
                            "at the reward model stage's output (or its model/ folder)")


def load_reward_model(model_dir: Path) -> tuple[RewardModel, Tokenizer]:
    """A reward model written by save_reward_model (fp32, CPU, eval mode)."""
    folder = _model_folder(Path(model_dir), (CONFIG, WEIGHTS, TOKENIZER, HEAD_WEIGHTS))
    backbone, tokenizer = load_pretrained(folder)
    model = RewardModel(backbone)
    head = load_file(folder / HEAD_WEIGHTS)
    expected = {k: tuple(v.shape) for k, v in model.head.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in head.items()}
    if found != expected:
        raise ValueError(f"{folder / HEAD_WEIGHTS} does not fit the model: has {found}, expected {expected} "
                         "(was it saved with another backbone?)")
    model.head.load_state_dict(head)
    return model.eval(), tokenizer


def from_pretrained(model_dir: Path) -> tuple[RewardModel, Tokenizer]:
    """A fresh head on a saved GPT (the SFT model), ready for reward training. The head draws from torch's
    global RNG: seed it (lightning.seed_everything) for a reproducible start."""
    backbone, tokenizer = load_pretrained(model_dir)
    return RewardModel(backbone), tokenizer


# --- data ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenPairs:
    """Tokenised preference pairs: chosen[i] is preferred to rejected[i] (both prompt + response ids),
    by margin[i] (0 when not given; used only with RewardModule(margin_in_loss=True))."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    pad_id: int
    margin: list[float] | None = None

    def __post_init__(self) -> None:
        n = len(self.chosen)
        if len(self.rejected) != n:
            raise ValueError(f"{n} chosen but {len(self.rejected)} rejected sequences: they come in pairs")
        if self.margin is None:
            object.__setattr__(self, "margin", [0.0] * n)
        elif len(self.margin) != n:
            raise ValueError(f"{len(self.margin)} margins for {n} pairs")
        empty = [i for i in range(n) if not self.chosen[i] or not self.rejected[i]]
        if empty:
            raise ValueError(f"pairs {empty[:10]} have an empty sequence: nothing to score")

    def __len__(self) -> int:
        return len(self.chosen)

    def batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """input_ids (2B, T): the B chosen rows, then their B rejected rows, right-padded with pad_id to
        the longest; attention_mask (2B, T) bool; margin (B,) float32."""
        index = [int(i) for i in np.asarray(indices).reshape(-1)]
        if not index:
            raise ValueError("a batch needs at least one pair")
        rows = [self.chosen[i] for i in index] + [self.rejected[i] for i in index]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, ids in enumerate(rows):
            input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[r, :len(ids)] = True
        margin = torch.tensor([self.margin[i] for i in index], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "margin": margin}


class PairData(L.LightningDataModule):
    """Endless seeded training batches of pairs (epoch by epoch, each a fresh permutation) and the whole
    validation set in order. Reuses SFT's TrainRows/ValRows, which need only len() and batch()."""

    def __init__(self, train: TokenPairs, val: TokenPairs, batch_size: int, seed: int,
                 accumulate: int = 1) -> None:
        super().__init__()
        if batch_size < 1 or accumulate < 1:
            raise ValueError(f"batch_size ({batch_size}) and accumulate ({accumulate}) must be >= 1")
        if len(train) < batch_size:
            raise ValueError(f"only {len(train)} training pairs for a batch of {batch_size}: use more "
                             "preference data or lower reward.batch_size")
        if len(val) == 0:
            raise ValueError("no validation pairs: hold some preference pairs out for validation")
        self.train, self.val = train, val
        self.batch_size, self.seed, self.accumulate = batch_size, seed, accumulate

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = trainer.global_step * self.accumulate  # restored before this is called: the next batch
        global_batch = self.batch_size * trainer.world_size
        if len(self.train) < global_batch:
            raise ValueError(f"only {len(self.train)} training pairs for a global batch of {global_batch} "
                             f"({self.batch_size} x {trainer.world_size} devices): use more preference "
                             "data or lower reward.batch_size")
        dataset = TrainRows(self.train, global_batch, self.seed, trainer.global_rank,  # type: ignore[arg-type]
                            trainer.world_size, start)
        return DataLoader(dataset, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ValRows(self.val, self.batch_size), batch_size=None)  # type: ignore[arg-type]


# --- training ------------------------------------------------------------------------------------------

class RewardModule(PretrainModule):
    """Bradley-Terry training of a RewardModel. Inherits PretrainModule's AdamW + warmup/cosine schedule,
    non-finite-loss stop, logging cadence, compile hook and checkpoint metadata (gpt_config and
    run_fingerprint, which resume_point checks)."""

    config_group = "reward"

    def __init__(self, model: RewardModel, optim: OptimConfig, margin_in_loss: bool = False,
                 center_coef: float = 0.0, run_fingerprint: str | None = None,
                 compile_model: bool = False) -> None:
        if center_coef < 0:
            raise ValueError(f"center_coef={center_coef} must be >= 0")
        # PretrainModule builds a GPT of the config; on the meta device that costs no memory or init time,
        # and the given model replaces it at once.
        with torch.device("meta"):
            super().__init__(model.config, optim, compile_model=compile_model,
                             run_fingerprint=run_fingerprint, kernels="torch")
        self.model = model
        self.margin_in_loss, self.center_coef = margin_in_loss, center_coef
        self._train_pair: tuple[torch.Tensor, torch.Tensor] | None = None
        self._val_sums: list[float] = [0.0, 0.0, 0.0, 0.0]

    def pair_scores(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) rewards of a PairData batch: one forward over all 2B rows."""
        scores = self.model(batch["input_ids"], batch["attention_mask"])
        n = batch["margin"].shape[0]
        if scores.shape[0] != 2 * n:
            raise ValueError(f"a pair batch holds 2 x {n} rows (chosen, then rejected); got "
                             f"{scores.shape[0]}")
        return scores[:n], scores[n:]

    def batch_loss(self, batch: Batch, reduction: str = "mean") -> torch.Tensor:
        chosen, rejected = self.pair_scores(batch)
        self._train_pair = (chosen.detach(), rejected.detach())
        margin = batch["margin"] if self.margin_in_loss else None
        return bradley_terry_loss(chosen, rejected, margin, self.center_coef, reduction=reduction)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)  # NaN check, train/loss and train/lr
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0 and self._train_pair is not None:
            self.log("train/accuracy", pair_metrics(*self._train_pair)["accuracy"])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = [0.0, 0.0, 0.0, 0.0]  # loss, correct, margin, pairs

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        chosen, rejected = self.pair_scores(batch)
        margin = batch["margin"] if self.margin_in_loss else None
        loss = bradley_terry_loss(chosen, rejected, margin, self.center_coef, reduction="sum")
        correct, diff = _pair_counts(chosen, rejected)
        for i, value in enumerate((float(loss), float(correct), float(diff), chosen.numel())):
            self._val_sums[i] += value

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor(self._val_sums, device=self.device, dtype=torch.float64)
        totals = self.all_gather(totals).reshape(-1, 4).sum(0) if self.trainer.world_size > 1 else totals
        loss, correct, diff, n = totals.tolist()
        n = max(n, 1.0)
        self.log("val/loss", loss / n, prog_bar=True, rank_zero_only=True)
        self.log("val/accuracy", correct / n, prog_bar=True, rank_zero_only=True)
        self.log("val/margin", diff / n, rank_zero_only=True)
