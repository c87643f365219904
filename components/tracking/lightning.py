"""A Lightning logger that writes into the stage's MLflow run (rank 0 only).

Lightning's own MLFlowLogger would re-log hyperparameters (the resolved config is already the run's
params) and end the run when training ends, before the stage logs its artifacts."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from components.tracking.runs import StageRun


class StageRunLogger(Logger):
    def __init__(self, run: StageRun) -> None:
        super().__init__()
        self.run = run

    @property
    def name(self) -> str:
        return self.run.stage

    @property
    def version(self) -> str:
        return self.run.run_id

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=step)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The stage run already holds the resolved config as params."""
