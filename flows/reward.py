"""The reward stage as a Prefect flow: the labeler ranks the SFT model's sampled replies, a reward model
learns the ranking, and it is registered."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from components.config import load_config
from components.rlhf.reward import run_reward
from components.tracking import stage_run
from components.tracking.lightning import StageRunLogger
from components.tracking.registry import fetch_model

STAGE = "reward"


@flow(name="reward")
def reward_flow(overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, float]:
    """Label, train the reward model (rerunning the same command resumes), score it on held-out pairs."""
    cfg = load_config([*(overrides or []), f"stage={STAGE}"])
    with stage_run(cfg, STAGE, parent_run_id=parent_run_id) as run:
        init_dir = fetch_model(cfg, str(cfg.reward.init_from))
        result = run_reward(cfg, logger=StageRunLogger(run), init_dir=init_dir)
        run.log_metrics(result.metrics)
        run.log_metrics({f"data/{k}": v for k, v in result.data_stats.items()})
        for name in ("metrics.json", "data_stats.json", "report.md"):
            run.log_artifact(result.output_dir / name)
        run.log_artifacts(result.output_dir / "data", "data")
        if result.resumed_from_step is not None:
            run.set_tags({"resumed_from_step": result.resumed_from_step})
        version = run.register_model(result.model_dir, cfg.reward.register.name, cfg.reward.register.alias)
        run.set_tags({"registered_model": f"{cfg.reward.register.name}/{version}",
                      "init_from": cfg.reward.init_from})
        run.log_dvc_hashes(inputs={"init_model": init_dir}, outputs={"model": result.model_dir})
        create_markdown_artifact((result.output_dir / "report.md").read_text(), key="reward-model",
                                 description="Reward model: held-out pairwise accuracy and its data")
    return result.metrics
