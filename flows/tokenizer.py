"""The tokenizer stage as a Prefect flow: BPE on the kept text, packed token store, vocab sweep report."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from components.config import load_config
from components.tokenizer.stage import run_tokenizer_stage
from components.tracking import stage_run

STAGE = "tokenizer"


@task
def train_tokenizer(tok_cfg: dict, seed: int) -> dict:
    result = run_tokenizer_stage(OmegaConf.create(tok_cfg), Path(tok_cfg["kept_dir"]),
                                 Path(tok_cfg["output_dir"]), seed=seed)
    paths = {"report": result.report_path, "tokenizer": result.tokenizer_path, "hf": result.hf_dir,
             "store": result.store_dir, "metrics_path": result.metrics_path}
    return {"metrics": result.metrics, **{k: str(v) for k, v in paths.items()}}


@flow(name="tokenizer")
def tokenizer_flow(overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, float]:
    """Byte-level BPE with the chat/tool special tokens, and the documents packed into token ids."""
    cfg = load_config([*(overrides or []), f"stage={STAGE}"])
    tok_cfg = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    with stage_run(cfg, STAGE, parent_run_id=parent_run_id) as run:
        out = train_tokenizer(tok_cfg, int(cfg.seed))
        run.log_metrics(out["metrics"])
        for path in (out["tokenizer"], out["report"], out["metrics_path"]):
            run.log_artifact(path)
        run.log_artifacts(out["hf"], "hf_tokenizer")
        run.log_dvc_hashes(inputs={"kept": Path(tok_cfg["kept_dir"])},
                           outputs={"tokenizer": Path(out["tokenizer"]), "tokens": Path(out["store"])})
        create_markdown_artifact(Path(out["report"]).read_text(), key="tokenizer-report",
                                 description="BPE vocabulary size against held-out bytes per token")
    return out["metrics"]
