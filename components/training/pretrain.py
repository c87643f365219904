"""The pretraining stage as one call: tokenizer + token store in, a trained base model out.

Callable without Prefect or MLflow (`python -m components.training.pretrain key=value ...`, tests,
torchrun/srun ranks); the flow adds an MLflow logger, text sinks and the model registry."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from components.model.checkpoint import save_model
from components.model.config import GPTConfig
from components.model.engine import SamplingParams
from components.model.export import export_hf
from components.model.gpt import GPT
from components.tokenizer.bpe import Tokenizer
from components.tokenizer.token_store import TokenStoreInfo, load_tokens
from components.training.callbacks import SampleGenerations, TextSink, ThroughputLogger
from components.training.data import PretrainData
from components.training.pretrain_module import OptimConfig, PretrainModule

log = logging.getLogger(__name__)
LAST = "last.ckpt"


@dataclass
class PretrainResult:
    output_dir: Path
    model_dir: Path
    hf_dir: Path
    metrics: dict[str, float]
    samples: list[tuple[int, str]] = field(default_factory=list)
    resumed_from_step: int | None = None


class SaveAtEnd(Callback):
    """The final checkpoint, whatever the interval: a rerun of a finished command resumes at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # with optimizer state: resumable


def model_config(cfg: DictConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig.from_dict({"vocab_size": vocab_size, **OmegaConf.to_container(cfg.model, resolve=True)})


def token_byte_lengths(tokenizer: Tokenizer) -> torch.Tensor:
    """UTF-8 bytes of each token id; 0 for special tokens, which bits-per-byte leaves out."""
    lengths = torch.zeros(tokenizer.vocab_size, dtype=torch.long)
    for token, i in tokenizer.to_tiktoken_ranks().items():
        lengths[i] = len(token)
    return lengths


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the training tokens' unigram distribution: what a model that ignores context
    would score. A model that learned anything beats it by a wide margin."""
    counts = np.bincount(np.asarray(tokens), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# What decides the weights a run ends with; cadence (logging, validation, checkpoints) does not.
RUN_KEYS = ("micro_batch_size", "accumulate", "max_steps", "grad_clip", "optim", "seed", "precision",
            "devices", "num_nodes", "kernels")
CODE_DIRS = tuple(Path(__file__).resolve().parents[1] / d for d in ("training", "model", "kernels"))


def run_fingerprint(tokenizer_dir: Path, cfg: DictConfig) -> str:
    """Identifies a run: its tokenizer and token store, model and training settings, and the training
    code. A checkpoint resumes only a run with the same fingerprint."""
    digest = hashlib.sha256()
    for path in (tokenizer_dir / "tokenizer.json", tokenizer_dir / "tokens" / "meta.json"):
        digest.update(path.read_bytes())
    for split in ("train", "val"):
        digest.update(str((tokenizer_dir / "tokens" / f"{split}.bin").stat().st_size).encode())
    settings = {"model": OmegaConf.to_container(cfg.model, resolve=True),
                **{k: OmegaConf.to_container(cfg.pretrain, resolve=True)[k] for k in RUN_KEYS}}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    update_with_code(digest, CODE_DIRS)
    return digest.hexdigest()[:16]


def update_with_code(digest: hashlib._Hash, dirs: tuple[Path, ...]) -> None:
    """Fold the source of `dirs` into a run fingerprint: a code change is a new run."""
    for source in sorted(f for d in dirs for f in d.glob("*.py")):
        digest.update(source.read_bytes())


def read_checkpoint_info(path: Path) -> tuple[int, dict | None, str | None]:
    """(global step, model config, run fingerprint) of a Lightning checkpoint, loaded weights-only."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt.get("global_step", 0)), ckpt.get("gpt_config"), ckpt.get("run_fingerprint")


def final_model(state: dict[str, torch.Tensor], model_cfg: GPTConfig) -> GPT:
    """The trained weights from the final (full, unsharded) checkpoint's state dict, whatever the
    strategy: FSDP shards the live module's parameters and ddp_spawn trains copies in other processes."""
    model = GPT(model_cfg)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return model


def stage_trainer(s: DictConfig, out: Path, ckpt_dir: Path, logger: Logger | None,
                  callbacks: list[Callback]) -> L.Trainer:
    """The Trainer a training stage's config group describes (hardware, steps, cadence), with
    checkpoints every `checkpoint_every_n_steps` and at the end (ckpt_dir/last.ckpt: rerun resumes)."""
    checkpoints = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:06d}", auto_insert_metric_name=False,
                        every_n_train_steps=int(s.checkpoint_every_n_steps), save_top_k=1, save_last=True),
        SaveAtEnd(ckpt_dir / LAST),
    ]
    return L.Trainer(
        accelerator=s.accelerator, devices=s.devices, num_nodes=int(s.num_nodes), strategy=s.strategy,
        precision=resolve_precision(str(s.precision), str(s.accelerator)),
        max_steps=int(s.max_steps), accumulate_grad_batches=int(s.accumulate),
        gradient_clip_val=float(s.grad_clip) if s.grad_clip else None,
        val_check_interval=int(s.val_every_n_steps) * int(s.accumulate), check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=int(s.log_every_n_steps), logger=logger if logger is not None else False,
        callbacks=[*checkpoints, *callbacks], default_root_dir=out, enable_model_summary=False,
        enable_progress_bar=bool(s.progress_bar), deterministic=bool(s.deterministic),
    )


def fit_and_validate(trainer: L.Trainer, module: L.LightningModule, data: L.LightningDataModule,
                     resume_from: str | None, what: str) -> tuple[dict, float]:
    """Train (resuming from `resume_from`), then the final validation: (its metrics, training seconds).
    The final validation ends every run, so metrics.json always describes the final weights; every rank
    takes part (a launcher-started DDP run would hang otherwise)."""
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
    seconds = time.perf_counter() - started
    if trainer.interrupted:
        raise KeyboardInterrupt(f"{what} was interrupted; rerun the same command to resume")
    return trainer.validate(module, datamodule=data, verbose=False)[0], seconds


def resolve_precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu else "32-true"


def run_pretraining(cfg: DictConfig, logger: Logger | None = None, text_sink: TextSink | None = None
                    ) -> PretrainResult:
    """Train (or resume) the base model described by `cfg.model` on the tokenizer stage's store."""
    p = cfg.pretrain
    tokenizer_dir = Path(p.tokenizer_dir)
    tokenizer = Tokenizer.load(tokenizer_dir)
    store = tokenizer_dir / "tokens"
    info = TokenStoreInfo.load(store)
    if info.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"token store {store} was written with a {info.vocab_size}-token vocabulary but "
                         f"the tokenizer has {tokenizer.vocab_size}: rerun `llmops tokenizer`")
    model_cfg = model_config(cfg, tokenizer.vocab_size)
    out = Path(p.output_dir)
    ckpt_dir = out / "checkpoints"
    fingerprint = run_fingerprint(tokenizer_dir, cfg)
    resume_from, resumed_step = resume_point(ckpt_dir, model_cfg, fingerprint, bool(p.resume))

    L.seed_everything(int(p.seed), workers=True, verbose=False)
    optim = OptimConfig(**OmegaConf.to_container(p.optim, resolve=True), max_steps=int(p.max_steps))
    module = PretrainModule(model_cfg, optim, token_byte_lengths(tokenizer), compile_model=bool(p.compile),
                            run_fingerprint=fingerprint, kernels=str(p.kernels))
    data = PretrainData(store, model_cfg.seq_len, int(p.micro_batch_size), int(p.accumulate), int(p.seed),
                        int(p.val_sequences))
    tokens_per_device_step = int(p.micro_batch_size) * model_cfg.seq_len * int(p.accumulate)
    sampler = SampleGenerations(
        list(p.sample.prompts), tokenizer.encode, tokenizer.decode, tokenizer.bos_id,
        tokenizer.special_id("<|pad|>"),
        SamplingParams(max_new_tokens=int(p.sample.max_new_tokens), temperature=float(p.sample.temperature),
                       top_k=p.sample.top_k, top_p=p.sample.top_p, seed=int(p.sample.seed)),
        sink=text_sink)
    trainer = stage_trainer(p, out, ckpt_dir, logger, [
        sampler,
        ThroughputLogger(tokens_per_device_step, model_cfg.flops_per_token(), int(p.log_every_n_steps)),
    ])
    final, seconds = fit_and_validate(trainer, module, data, resume_from, "pretraining")
    if not trainer.is_global_zero:
        return PretrainResult(out, out / "model", out / "hf", {}, [], resumed_step)
    # The final checkpoint, read once: the weights, and the step count (with ddp_spawn, this process's
    # trainer never counted the workers' steps).
    final_ckpt = torch.load(ckpt_dir / LAST, map_location="cpu", weights_only=True)
    model = final_model(final_ckpt["state_dict"], model_cfg)
    model_dir = save_model(model, out / "model")
    tokenizer.save(model_dir / "tokenizer.json")
    hf_dir = export_hf(model, out / "hf", tokenizer=tokenizer) if p.export_hf else out / "hf"
    train_tokens = load_tokens(store, "train")
    steps = int(final_ckpt["global_step"])
    tokens_per_step = tokens_per_device_step * trainer.world_size
    metrics = {
        "val_loss": float(final.get("val/loss", math.nan)),
        "val_bpb": float(final.get("val/bpb", math.nan)),
        "train_unigram_entropy": unigram_entropy(train_tokens, tokenizer.vocab_size),
        "steps": steps,
        "tokens_seen": steps * tokens_per_step,
        "train_seconds_this_run": seconds,
        "params": model_cfg.num_params(),
        "params_non_embedding": model_cfg.num_params(embeddings=False),
        "flops_per_token": model_cfg.flops_per_token(),
        "train_tokens_available": int(len(train_tokens)),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    (out / "samples.md").write_text("\n".join(text for _, text in sampler.history))
    return PretrainResult(out, model_dir, hf_dir, metrics, sampler.history, resumed_step)


def resume_point(ckpt_dir: Path, model_cfg: GPTConfig, fingerprint: str, resume: bool,
                 group: str = "pretrain") -> tuple[str | None, int | None]:
    """The checkpoint to resume from (None: start fresh), refusing one of another architecture.

    Checkpoints of another run (other data, settings or training code: e.g. `dvc repro` after any of
    them changed) are discarded: resuming would mix two runs, or skip training altogether."""
    last = ckpt_dir / LAST
    if not last.exists():
        return None, None
    step, saved, saved_fingerprint = read_checkpoint_info(last)
    if not resume:
        log.warning("%s.resume=false: discarding the checkpoints in %s", group, ckpt_dir)
        shutil.rmtree(ckpt_dir)
        return None, None
    if saved is not None and saved != model_cfg.to_dict():
        diff = [f"{k}: checkpoint {saved.get(k)} vs config {v}" for k, v in model_cfg.to_dict().items()
                if saved.get(k) != v]
        raise ValueError(f"the checkpoint in {ckpt_dir} is another architecture ({'; '.join(diff)}): "
                         f"train with the model config it was made with, set {group}.resume=false to "
                         f"start over, or use another {group}.output_dir")
    if saved_fingerprint != fingerprint:
        log.warning("the data, training settings or code changed since %s was written: discarding the "
                    "checkpoints in %s and training from scratch", last, ckpt_dir)
        shutil.rmtree(ckpt_dir)
        return None, None
    log.info("resuming %s from %s at step %d", group, last, step)
    return str(last), step


def main(argv: list[str] | None = None) -> int:
    """Pretraining without Prefect or MLflow: the entry point for torchrun/srun ranks and scripts."""
    from components.config import stage_main

    return stage_main("pretrain", run_pretraining, argv)


if __name__ == "__main__":
    sys.exit(main())
