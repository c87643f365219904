"""Supervised finetuning as a LightningModule: the pretraining step on packed conversations, with the
loss on assistant tokens only (the targets carry the protocol's mask) and weights from a trained model."""

from __future__ import annotations

import torch

from components.model.gpt import GPT
from components.training.pretrain_module import OptimConfig, PretrainModule
from components.training.sft_data import Batch


class SFTModule(PretrainModule):
    config_group = "sft"

    def __init__(self, init: GPT, optim: OptimConfig, compile_model: bool = False,
                 run_fingerprint: str | None = None, kernels: str = "auto") -> None:
        super().__init__(init.config, optim, compile_model=compile_model, run_fingerprint=run_fingerprint,
                         kernels=kernels)
        self.model.load_state_dict(init.state_dict())

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["targets"], positions=batch["positions"],
                          segment_ids=batch["segment_ids"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        total = self.model(batch["input_ids"], batch["targets"], positions=batch["positions"],
                           segment_ids=batch["segment_ids"], loss_reduction="sum")
        self._val_loss += float(total)
        self._val_count += int((batch["targets"] >= 0).sum())
