"""Pretraining callbacks: throughput (tokens/s, MFU) and sample generations from fixed prompts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.utilities import rank_zero_only

from components.model.engine import Engine, SamplingParams

TextSink = Callable[[str, str], None]  # (text, artifact file name): e.g. StageRun.log_text


class ThroughputLogger(L.Callback):
    """Logs tokens/s over each logging window, and MFU where the device's peak FLOP/s is known
    (Lightning's table of GPUs; None on CPUs, so no MFU there)."""

    def __init__(self, tokens_per_device_step: int, flops_per_token: int, every_n_steps: int) -> None:
        self.tokens_per_device_step, self.flops_per_token = tokens_per_device_step, flops_per_token
        self.every = max(1, every_n_steps)
        self._t0: float | None = None
        self._step0 = 0
        self.peak_flops: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else torch.float32
        if pl_module.device.type == "cuda":
            self.peak_flops = get_available_flops(pl_module.device, dtype)
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        steps = trainer.global_step - self._step0
        if steps < self.every or self._t0 is None:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        tokens_per_s = steps * self.tokens_per_device_step * trainer.world_size / (now - self._t0)
        metrics = {"train/tokens_per_s": tokens_per_s}
        if self.peak_flops:
            achieved = tokens_per_s * self.flops_per_token
            metrics["train/mfu"] = achieved / (self.peak_flops * trainer.world_size)
        pl_module.log_dict(metrics, rank_zero_only=True)
        self._t0, self._step0 = now, trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Validation (and the samples after it) is not training time: restart the window."""
        self._t0, self._step0 = time.perf_counter(), trainer.global_step


class SampleGenerations(L.Callback):
    """After each validation, continue fixed prompts and hand the text to `sink` (watch it learn)."""

    def __init__(self, prompts: Sequence[str], encode: Callable[[str], list[int]],
                 decode: Callable[[list[int]], str], bos_id: int, pad_id: int, params: SamplingParams,
                 sink: TextSink | None = None) -> None:
        self.prompts, self.encode, self.decode = list(prompts), encode, decode
        self.bos_id, self.pad_id, self.params, self.sink = bos_id, pad_id, params, sink
        self.history: list[tuple[int, str]] = []

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.prompts:
            return
        text = self.sample(pl_module.model, trainer.global_step)
        self.history.append((trainer.global_step, text))
        if self.sink is not None:
            self.sink(text, f"samples/step_{trainer.global_step:06d}.txt")

    def sample(self, model: torch.nn.Module, step: int) -> str:
        model = getattr(model, "_orig_mod", model)
        engine = Engine(model, self.pad_id)
        completions = engine.generate([[self.bos_id, *self.encode(p)] for p in self.prompts], self.params)
        lines = [f"# step {step}"]
        for prompt, completion in zip(self.prompts, completions, strict=True):
            lines.append(f"\n## {prompt!r}\n{prompt}{self.decode(completion.tokens)}")
        return "\n".join(lines) + "\n"
