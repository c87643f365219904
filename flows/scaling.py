"""The scaling stage as a Prefect flow: the sweep's runs as mapped tasks (each its own MLflow run nested
under the stage's run), then the fits, the held-out prediction, the DuckDB catalog and the report.

With `scaling.points=PATH.csv` no run is trained: the table is fitted in the stage's run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from components.config import load_config
from components.scaling.stage import (
    ScalingResult,
    finish_sweep,
    fit_table,
    sweep,
    train_point,
)
from components.scaling.sweep import SweepPoint
from components.tracking import StageRun, stage_run
from components.tracking.lightning import StageRunLogger

STAGE = "scaling"
SWEEP_RUN = "scaling.run"  # the `stage` tag of the sweep's runs, nested under the stage's own run
FILES = ("fit.json", "metrics.json", "report.md", "runs.csv")


# One sweep run is a whole (short) pretraining run, resumable from its own checkpoints: a task's result
# cache must not stand in for it, so no cache policy; a rerun of the flow resumes or skips finished runs.
@task(name="scaling-run", task_run_name="{point.name}", cache_policy=NO_CACHE)
def train_point_task(cfg: DictConfig, point: SweepPoint, parent_run_id: str) -> dict:
    """Train one run of the sweep in a child MLflow run (curves, final loss, config)."""
    with stage_run(cfg, SWEEP_RUN, parent_run_id=parent_run_id, run_name=point.name,
                   tags={"scaling.role": point.role}) as run:
        run.log_params({f"point.{k}": v for k, v in point.to_dict().items()})
        row = train_point(cfg, point, logger=StageRunLogger(run))
        run.log_metrics({"val/loss": row["loss"], "val/bpb": row["val_bpb"], "scaling/N": row["N"],
                         "scaling/D": row["D"], "scaling/C": row["C"]})
    return row


@flow(name="scaling")
def scaling_flow(overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, float]:
    """Sweep (or read scaling.points), fit the laws, predict the held-out run, plan the optimal run."""
    cfg = load_config([*(overrides or []), f"stage={STAGE}"])
    with stage_run(cfg, STAGE, parent_run_id=parent_run_id) as run:
        if cfg.scaling.points:
            result = fit_table(cfg)
        else:
            points = sweep(cfg)
            width = max(1, int(cfg.scaling.sweep.max_parallel))
            rows: list[dict] = []
            for start in range(0, len(points), width):  # at most max_parallel runs train at once
                futures = train_point_task.map(unmapped(cfg), points[start:start + width], run.run_id)
                rows += [f.result() for f in futures]
            result = finish_sweep(cfg, rows)
        record(run, result)
    return result.metrics


def record(run: StageRun, result: ScalingResult) -> None:
    """Metrics, the fit, report, runs table, catalog and figures into the stage's run."""
    run.log_metrics(result.metrics)
    for name in (*FILES, "scaling.duckdb"):
        if (result.output_dir / name).exists():
            run.log_artifact(result.output_dir / name)
    run.log_artifacts(result.output_dir / "figures", "figures")
    run.log_dvc_hashes(inputs={}, outputs={"fit": Path(result.output_dir) / "fit.json"})
    create_markdown_artifact((result.output_dir / "report.md").read_text(), key="scaling-report",
                             description="Fitted scaling laws, held-out prediction, compute-optimal plan")
