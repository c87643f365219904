"""The data stage as a Prefect flow: compose the config, open the MLflow run, call the component."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from components.config import load_config
from components.data.inputs import stage_inputs
from components.data.stage import DataStageResult, run_data_stage
from components.tracking import stage_run

STAGE = "data"


@task(retries=3, retry_delay_seconds=10)
def find_inputs(data_cfg: dict) -> tuple[list[str], list[str], str | None]:
    """List (or build) the raw input files: remote listings and disk writes are what fail transiently."""
    specs, files, truth = stage_inputs(OmegaConf.create(data_cfg))
    return specs, files, str(truth) if truth else None


@task
def filter_crawl(data_cfg: dict, files: list[str], ground_truth: str | None) -> DataStageResult:
    return run_data_stage(OmegaConf.create(data_cfg), files, Path(ground_truth) if ground_truth else None)


# No `log_prints`: it swaps `builtins.print`, which the demo corpus reads docstrings from, so a corpus
# built inside the flow would differ from `llmops corpus`'s by one passage.
@flow(name="data")
def data_flow(overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, float]:
    """FineWeb-style filtering of a raw crawl into kept shards, a DuckDB catalog and a report."""
    cfg = load_config([*(overrides or []), f"stage={STAGE}"])
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    with stage_run(cfg, STAGE, parent_run_id=parent_run_id) as run:
        specs, files, ground_truth = find_inputs(data_cfg)
        result = filter_crawl(data_cfg, files, ground_truth)
        run.log_metrics(result.metrics)
        run.log_artifacts(result.layout.report, "report")
        for path in (result.layout.stats, result.layout.metrics):
            run.log_artifact(path)
        run.log_dvc_hashes(
            inputs={Path(s).name or s: Path(s) for s in specs if "://" not in s},
            outputs={"kept": result.layout.kept, "excluded": result.layout.excluded},
        )
        create_markdown_artifact(result.report_path.read_text(), key="data-report",
                                 description="Data stage funnel, drop reasons and filter quality")
    return result.metrics
