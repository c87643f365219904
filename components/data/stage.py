"""The data stage as one call: filter the crawl, then stats, catalog, report and metrics.json.

Callable without Prefect or MLflow (tests, notebooks, the benchmark); the flow adds tracking."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from components.data.catalog import build_catalog
from components.data.evaluation import Evaluation, evaluate
from components.data.pipeline import DataStageLayout, run_jobs
from components.data.report import write_report
from components.data.summary import DataSummary, summarize


@dataclass
class DataStageResult:
    """Where the outputs are and the headline numbers (the same as metrics.json)."""

    layout: DataStageLayout
    files: list[str]
    metrics: dict[str, float]
    report_path: Path
    summary: DataSummary = field(repr=False)
    evaluation: Evaluation | None = field(default=None, repr=False)


def run_data_stage(
    data_cfg: DictConfig, files: list[str], ground_truth: Path | None = None
) -> DataStageResult:
    """Run the FineWeb-style jobs on `files` and write every output under `data_cfg.output_dir`.

    Stats that do not add up (a block's total != forwarded + dropped, documents unaccounted for) fail
    the stage: a silent loss of documents is worse than a failed run."""
    layout = DataStageLayout(Path(data_cfg.output_dir))
    stats = run_jobs(data_cfg, files, layout)
    summary = summarize(layout, stats, strict=True)
    evaluation = evaluate(layout, ground_truth, order=list(data_cfg.filters)) if ground_truth else None
    metrics = dict(summary.metrics)
    if evaluation is not None:
        metrics |= evaluation.metrics
    build_catalog(layout, summary, evaluation)
    report = write_report(layout, summary, evaluation,
                          extra={"config": OmegaConf.to_container(data_cfg, resolve=True)})
    layout.stats.write_text(json.dumps(summary.to_dict(), indent=1, default=str))
    layout.metrics.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    return DataStageResult(layout, files, metrics, report, summary, evaluation)
