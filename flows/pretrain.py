"""The pretraining stage as a Prefect flow: Lightning training logged into the stage's MLflow run, the
final model registered in MLflow's model registry under an alias."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from components.config import load_config
from components.tracking import stage_run
from components.tracking.lightning import StageRunLogger
from components.training.pretrain import run_pretraining

STAGE = "pretrain"


# No Prefect task around training: Lightning owns the process (devices, spawned ranks, signals), and a
# task's result cache must not stand in for a checkpoint. Resuming is Lightning's (checkpoints/last.ckpt).
@flow(name="pretrain")
def pretrain_flow(overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, float]:
    """Train the base model on the packed tokens; rerunning the same command resumes a killed run."""
    cfg = load_config([*(overrides or []), f"stage={STAGE}"])
    with stage_run(cfg, STAGE, parent_run_id=parent_run_id) as run:
        result = run_pretraining(cfg, logger=StageRunLogger(run), text_sink=run.log_text)
        run.log_metrics(result.metrics)
        for name in ("metrics.json", "samples.md"):
            run.log_artifact(result.output_dir / name)
        if result.resumed_from_step is not None:
            run.set_tags({"resumed_from_step": result.resumed_from_step})
        version = run.register_model(result.model_dir, cfg.pretrain.register.name,
                                     cfg.pretrain.register.alias)
        if result.hf_dir.is_dir():  # pretrain.export_hf
            run.log_artifacts(result.hf_dir, "hf")
        run.set_tags({"registered_model": f"{cfg.pretrain.register.name}/{version}"})
        run.log_dvc_hashes(inputs={"tokens": Path(cfg.pretrain.tokenizer_dir) / "tokens"},
                           outputs={"model": result.model_dir})
        create_markdown_artifact((result.output_dir / "samples.md").read_text(), key="pretrain-samples",
                                 description="Generations from fixed prompts at each validation")
    return result.metrics
