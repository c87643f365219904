"""Next-token pretraining as a LightningModule: AdamW, warmup then cosine decay, loss and bits per byte.

Gradient clipping, accumulation, precision, compile and the parallel strategy are the Trainer's (see
components/training/pretrain.py); this module only says what one step is."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch

from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.model.ops import cross_entropy


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: training stops, the last good checkpoint stays."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    max_steps: int = 200
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Linear warmup to 1, then cosine down to min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class PretrainModule(L.LightningModule):
    def __init__(self, model_cfg: GPTConfig, optim: OptimConfig, token_bytes: torch.Tensor | None = None,
                 compile_model: bool = False, run_fingerprint: str | None = None,
                 kernels: str = "auto") -> None:
        """token_bytes: UTF-8 length of each token id (0 for special tokens), for bits per byte."""
        super().__init__()
        self.model = GPT(model_cfg, kernels=kernels)
        self.optim = optim
        self.compile_model = compile_model
        self.run_fingerprint = run_fingerprint
        if token_bytes is not None:
            self.register_buffer("token_bytes", token_bytes.long(), persistent=False)
        else:
            self.token_bytes = None
        self._val_nats = self._val_bytes = self._val_loss = self._val_count = 0.0

    def configure_model(self) -> None:
        if self.compile_model:
            self.model.compile()  # in place: state_dict keys (and checkpoints) stay the same

    # The config group named in error messages (subclasses train other stages).
    config_group = "pretrain"

    def batch_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return self.model(x, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.batch_loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.global_step}: training stopped; the last good "
                f"checkpoint is kept. Lower {self.config_group}.optim.lr, raise warmup_steps or check "
                "the data.")
        # Lightning hands metrics to loggers every log_every_n_steps only, but `self.log` costs ~0.6 ms a
        # call every step (benchmarks/train_overhead.py): call it on those steps alone.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_nats = self._val_bytes = self._val_loss = self._val_count = 0.0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        losses = cross_entropy(logits, y, reduction="none")
        self._val_loss += float(losses.sum())
        self._val_count += losses.numel()
        if self.token_bytes is not None:
            nbytes = self.token_bytes[y.reshape(-1)]
            self._val_nats += float((losses * (nbytes > 0)).sum())
            self._val_bytes += float(nbytes.sum())

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor([self._val_loss, self._val_count, self._val_nats, self._val_bytes],
                              device=self.device, dtype=torch.float64)
        totals = self.all_gather(totals).reshape(-1, 4).sum(0) if self.trainer.world_size > 1 else totals
        loss_sum, count, nats, nbytes = totals.tolist()
        self.log("val/loss", loss_sum / max(count, 1), prog_bar=True, rank_zero_only=True)
        if nbytes > 0:
            self.log("val/bpb", nats / (math.log(2) * nbytes), rank_zero_only=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What a resume checks: the same architecture, then the same run (data, settings, code).
        checkpoint["gpt_config"] = self.model.config.to_dict()
        checkpoint["run_fingerprint"] = self.run_fingerprint

    def configure_optimizers(self):  # noqa: ANN201 (Lightning's union of return types)
        """AdamW; no weight decay on norms and embeddings (1-D weights and the lookup table)."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or "embed_tokens" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.optim.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=self.optim.lr, betas=(self.optim.beta1, self.optim.beta2),
                                      fused=self.device.type == "cuda")
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, self.optim))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
