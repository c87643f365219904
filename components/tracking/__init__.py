"""The one place that knows MLflow: stage runs nested under a pipeline run, plus provenance (git, DVC).

`from components.tracking import stage_run` imports MLflow (seconds); `components.tracking.provenance`
(git_commit, dvc_hash) does not, so the names are loaded lazily."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.tracking.provenance import dvc_hash, git_commit
    from components.tracking.runs import (
        StageRun,
        flatten_params,
        get_or_create_experiment,
        pipeline_run,
        stage_run,
        use_tracking_uri,
    )

_EXPORTS = {
    "dvc_hash": "provenance",
    "git_commit": "provenance",
    "StageRun": "runs",
    "flatten_params": "runs",
    "get_or_create_experiment": "runs",
    "pipeline_run": "runs",
    "stage_run": "runs",
    "use_tracking_uri": "runs",
}

__all__ = [
    "StageRun",
    "dvc_hash",
    "flatten_params",
    "get_or_create_experiment",
    "git_commit",
    "pipeline_run",
    "stage_run",
    "use_tracking_uri",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
