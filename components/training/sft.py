"""The SFT stage as one call: a pretrained model in, an assistant out, scored against where it started.

Steps: build the task mixture (seeded generators, plus any standard JSONL given), render it in the chat
protocol, pack it, finetune with Lightning (checkpoints and resume as in pretraining), then answer the
held-out prompts with the finetuned model and with the model it started from. Callable without Prefect
or MLflow (`python -m components.training.sft key=value ...`); the flow adds tracking and the registry."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from components.chat.protocol import ChatFormat
from components.evaluation.chat_eval import evaluate_chat
from components.model.checkpoint import WEIGHTS, save_model
from components.model.export import export_hf
from components.model.gpt import GPT
from components.model.loading import load_pretrained, resolve_model_dir
from components.sandbox.search import SearchTool
from components.tasks.base import TaskExample
from components.tasks.jsonl import load_conversations
from components.tasks.mixture import Mixture, build_mixture, write_mixture
from components.training.pretrain import (
    LAST,
    final_model,
    fit_and_validate,
    resume_point,
    stage_trainer,
    update_with_code,
)
from components.training.pretrain_module import OptimConfig
from components.training.sft_data import PackedRows, SFTData, pack
from components.training.sft_module import SFTModule

log = logging.getLogger(__name__)

RUN_KEYS = ("mixture", "micro_batch_size", "accumulate", "max_steps", "grad_clip", "optim", "seed",
            "precision", "devices", "num_nodes", "kernels")
CODE_DIRS = tuple(Path(__file__).resolve().parents[1] / d
                  for d in ("training", "model", "kernels", "chat", "tasks", "sandbox"))


@dataclass
class SFTResult:
    output_dir: Path
    model_dir: Path
    hf_dir: Path
    metrics: dict[str, float]
    data_stats: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int | None = None


def run_fingerprint(init_dir: Path, catalog: Path | None, cfg: DictConfig) -> str:
    """The starting weights, the search index, the SFT settings and the code: a checkpoint resumes only
    a run with the same fingerprint."""
    digest = hashlib.sha256()
    digest.update((init_dir / "tokenizer.json").read_bytes())
    with (init_dir / WEIGHTS).open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    if catalog is not None:
        digest.update(str(catalog.stat().st_size).encode())
    for extra in cfg.sft.mixture.extra_jsonl or []:
        digest.update(Path(extra).read_bytes())
    s = OmegaConf.to_container(cfg.sft, resolve=True)
    digest.update(json.dumps({k: s[k] for k in RUN_KEYS}, sort_keys=True, default=str).encode())
    update_with_code(digest, CODE_DIRS)
    return digest.hexdigest()[:16]


def _search_tool(cfg: DictConfig, stack: ExitStack) -> SearchTool | None:
    """The catalog search, when the mixture uses it (a missing catalog is then an error, not a skip)."""
    if float(cfg.sft.mixture.tasks.get("search", {}).get("weight", 0)) <= 0:
        return None
    return stack.enter_context(SearchTool(cfg.sft.catalog, max_results=int(cfg.sft.search.max_results),
                                          snippet_chars=int(cfg.sft.search.snippet_chars)))


def build_data(cfg: DictConfig, search: SearchTool | None, out: Path) -> tuple[Mixture, dict[str, int]]:
    """The generated mixture plus the configured JSONL files, written under out/data."""
    m = cfg.sft.mixture
    tasks = OmegaConf.to_container(m.tasks, resolve=True)
    mixture = build_mixture(tasks, size=int(m.size), n_eval=int(m.n_eval), seed=int(cfg.sft.seed),
                            resources={"search": search} if search is not None else {})
    stats = dict(mixture.stats)
    for path in m.extra_jsonl or []:
        conversations, file_stats = load_conversations(path)
        mixture.train.extend(TaskExample("jsonl", c) for c in conversations)
        stats.update({f"jsonl/{Path(path).name}/{k}": v for k, v in file_stats.items()})
    write_mixture(mixture, out / "data")
    return mixture, stats


def _pack(fmt: ChatFormat, examples: list[TaskExample], seq_len: int, what: str
          ) -> tuple[PackedRows, dict[str, int]]:
    packed, stats = pack([fmt.render(ex.conversation) for ex in examples], seq_len, fmt.pad)
    if stats["skipped_too_long"]:
        log.warning("%d of %d %s conversations are longer than the context (%d tokens) and were skipped",
                    stats["skipped_too_long"], len(examples), what, seq_len)
    if len(packed) == 0:
        raise ValueError(f"no {what} conversation fits the model's context of {seq_len} tokens: use a model "
                         "with a longer model.seq_len or shorter tasks")
    return packed, stats


@torch.no_grad()
def held_out_loss(model: GPT, rows: PackedRows, batch_size: int = 16) -> float:
    """Mean loss on the held-out assistant tokens: the before/after number for the same rows."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        b = rows.batch(range(start, min(len(rows), start + batch_size)))
        total += float(model(b["input_ids"], b["targets"], positions=b["positions"],
                             segment_ids=b["segment_ids"], loss_reduction="sum"))
        count += int((b["targets"] >= 0).sum())
    return total / max(count, 1)


def run_sft(cfg: DictConfig, logger: Logger | None = None, init_dir: Path | None = None) -> SFTResult:
    """Finetune (or resume) from `init_dir` (default: cfg.sft.init_from, a folder), then evaluate."""
    s = cfg.sft
    init_dir = resolve_model_dir(init_dir or s.init_from)
    base, tokenizer = load_pretrained(init_dir)
    fmt = ChatFormat(tokenizer)
    out = Path(s.output_dir)
    ckpt_dir = out / "checkpoints"
    with ExitStack() as stack:
        search = _search_tool(cfg, stack)
        mixture, data_stats = build_data(cfg, search, out)
        seq_len = base.config.seq_len
        train, train_stats = _pack(fmt, mixture.train, seq_len, "training")
        val, val_stats = _pack(fmt, mixture.eval, seq_len, "held-out")
        data_stats.update({f"train_{k}": v for k, v in train_stats.items()})
        data_stats.update({f"val_{k}": v for k, v in val_stats.items()})

        fingerprint = run_fingerprint(init_dir, Path(s.catalog) if search else None, cfg)
        resume_from, resumed_step = resume_point(ckpt_dir, base.config, fingerprint, bool(s.resume), "sft")
        L.seed_everything(int(s.seed), workers=True, verbose=False)
        optim = OptimConfig(**OmegaConf.to_container(s.optim, resolve=True), max_steps=int(s.max_steps))
        module = SFTModule(base, optim, compile_model=bool(s.compile), run_fingerprint=fingerprint,
                           kernels=str(s.kernels))
        data = SFTData(train, val, int(s.micro_batch_size), int(s.accumulate), int(s.seed))
        trainer = stage_trainer(s, out, ckpt_dir, logger, [])
        final, seconds = fit_and_validate(trainer, module, data, resume_from, "SFT")
        if not trainer.is_global_zero:
            return SFTResult(out, out / "model", out / "hf", {}, data_stats, resumed_step)
        final_ckpt = torch.load(ckpt_dir / LAST, map_location="cpu", weights_only=True)
        model = final_model(final_ckpt["state_dict"], base.config).eval()
        model_dir = save_model(model, out / "model")
        tokenizer.save(model_dir / "tokenizer.json")
        hf_dir = export_hf(model, out / "hf", tokenizer=tokenizer) if s.export_hf else out / "hf"

        metrics = {"val/loss": float(final.get("val/loss", math.nan)),
                   "val/loss_base": held_out_loss(base, val),
                   "steps": int(final_ckpt["global_step"]), "train_seconds_this_run": seconds}
        metrics |= _evaluate(cfg, {"sft": model, "base": base if s.eval.base_model else None}, fmt,
                             mixture.eval, search, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    (out / "data_stats.json").write_text(json.dumps(data_stats, indent=1, sort_keys=True))
    (out / "report.md").write_text(summary_markdown(metrics))
    return SFTResult(out, model_dir, hf_dir, metrics, data_stats, resumed_step)


def _evaluate(cfg: DictConfig, models: dict[str, GPT | None], fmt: ChatFormat, examples: list[TaskExample],
              search: SearchTool | None, out: Path) -> dict[str, float]:
    """Held-out metrics per model, suffixed with its name (eval/turn_end_rate_sft, ..._base)."""
    metrics: dict[str, float] = {}
    for name, model in models.items():
        if model is None:
            continue
        scores, records = evaluate_chat(model, fmt, examples, max_new_tokens=int(cfg.sft.eval.max_new_tokens),
                                        search=search.search if search else None)
        metrics |= {f"{k}_{name}": v for k, v in scores.items()}
        with (out / f"eval_{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return metrics


def summary_markdown(metrics: dict[str, float]) -> str:
    """The held-out evaluation as a table: one row per metric, base model beside the SFT model."""
    names = sorted({k.rsplit("_", 1)[0] for k in metrics if k.startswith("eval/")})
    rows = ["| metric | base | sft |", "| --- | --- | --- |"]
    for name in names:
        cells = [metrics.get(f"{name}_{model}") for model in ("base", "sft")]
        rows.append(f"| {name} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "# SFT: held-out evaluation\n\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """SFT without Prefect or MLflow: the entry point for torchrun/srun ranks and scripts."""
    from components.config import stage_main

    return stage_main("sft", run_sft, argv)


if __name__ == "__main__":
    sys.exit(main())
