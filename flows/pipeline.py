"""The whole pipeline: every stage that exists, in order, each a subflow with a nested MLflow run.

Later stages add themselves to STAGES (and to dvc.yaml); each takes the same override list."""

from __future__ import annotations

from prefect import flow

from components.config import load_config
from components.tracking import pipeline_run
from flows.data import data_flow
from flows.pretrain import pretrain_flow
from flows.reward import reward_flow
from flows.rlhf import rlhf_flow
from flows.rlvr import rlvr_flow
from flows.scaling import scaling_flow
from flows.sft import sft_flow
from flows.tokenizer import tokenizer_flow

STAGES = {"data": data_flow, "tokenizer": tokenizer_flow, "pretrain": pretrain_flow,
          "scaling": scaling_flow, "sft": sft_flow, "reward": reward_flow, "rlhf": rlhf_flow,
          "rlvr": rlvr_flow}


@flow(name="pipeline")
def pipeline_flow(overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the stages in order under one parent MLflow run; return each stage's headline metrics."""
    overrides = list(overrides or [])
    cfg = load_config([*overrides, "stage=pipeline"])
    results = {}
    with pipeline_run(cfg) as run:
        for name, stage_flow in STAGES.items():
            results[name] = stage_flow(overrides, parent_run_id=run.run_id)
            # On the parent, every stage's numbers under its own name: `val_loss` means one thing per stage.
            run.log_metrics({key if key.startswith(f"{name}/") else f"{name}/{key}": value
                             for key, value in results[name].items()})
    return results
