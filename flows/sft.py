"""The SFT stage as a Prefect flow: finetune the pretrained model into an assistant, evaluate it against
the base model on held-out prompts, and register it."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from components.config import load_config
from components.tracking import stage_run
from components.tracking.lightning import StageRunLogger
from components.tracking.registry import fetch_model
from components.training.sft import run_sft, summary_markdown

STAGE = "sft"


@flow(name="sft")
def sft_flow(overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, float]:
    """Finetune on the task mixture; rerunning the same command resumes a killed run."""
    cfg = load_config([*(overrides or []), f"stage={STAGE}"])
    with stage_run(cfg, STAGE, parent_run_id=parent_run_id) as run:
        init_dir = fetch_model(cfg, str(cfg.sft.init_from))
        result = run_sft(cfg, logger=StageRunLogger(run), init_dir=init_dir)
        run.log_metrics(result.metrics)
        run.log_metrics({f"data/{k}": v for k, v in result.data_stats.items()})
        for name in ("metrics.json", "data_stats.json", "eval_sft.jsonl", "eval_base.jsonl"):
            if (result.output_dir / name).exists():
                run.log_artifact(result.output_dir / name)
        run.log_artifacts(result.output_dir / "data", "data")
        if result.resumed_from_step is not None:
            run.set_tags({"resumed_from_step": result.resumed_from_step})
        version = run.register_model(result.model_dir, cfg.sft.register.name, cfg.sft.register.alias)
        if result.hf_dir.is_dir():
            run.log_artifacts(result.hf_dir, "hf")
        run.set_tags({"registered_model": f"{cfg.sft.register.name}/{version}",
                      "init_from": cfg.sft.init_from})
        run.log_dvc_hashes(inputs={"init_model": init_dir}, outputs={"model": result.model_dir})
        create_markdown_artifact(summary_markdown(result.metrics), key="sft-eval",
                                 description="Held-out evaluation: SFT model vs the base model")
    return result.metrics
