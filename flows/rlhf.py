"""The RLHF stage as a Prefect flow: PPO with a KL leash against the reward model (and the same run
without the leash, for the reward-hacking check), compared on held-out prompts; the policy is registered."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from components.config import load_config
from components.rlhf.rlhf import run_rlhf
from components.tracking import stage_run
from components.tracking.lightning import StageRunLogger
from components.tracking.registry import fetch_model

STAGE = "rlhf"


@flow(name="rlhf")
def rlhf_flow(overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, float]:
    """PPO from the SFT model; rerunning the same command resumes a killed run."""
    cfg = load_config([*(overrides or []), f"stage={STAGE}"])
    with stage_run(cfg, STAGE, parent_run_id=parent_run_id) as run:
        init_dir = fetch_model(cfg, str(cfg.rlhf.init_from))
        reward_dir = fetch_model(cfg, str(cfg.rlhf.reward_model))
        result = run_rlhf(cfg, logger=StageRunLogger(run), init_dir=init_dir, reward_dir=reward_dir)
        run.log_metrics(result.metrics)
        # The unleashed run's trajectory beside the main one's (whose metrics Lightning logged live).
        for row in result.histories.get("no_kl", []):
            run.log_metrics({f"no_kl/{k}": v for k, v in row.items() if k != "iteration"},
                            step=int(row["iteration"]))
        for name in ("metrics.json", "report.md", "eval.jsonl", "history_rlhf.jsonl", "history_no_kl.jsonl"):
            if (result.output_dir / name).exists():
                run.log_artifact(result.output_dir / name)
        for folder in ("samples", "no_kl/samples"):
            if (result.output_dir / folder).is_dir():
                run.log_artifacts(result.output_dir / folder, folder)
        if result.resumed_from_step is not None:
            run.set_tags({"resumed_from_step": result.resumed_from_step})
        version = run.register_model(result.model_dir, cfg.rlhf.register.name, cfg.rlhf.register.alias)
        if result.hf_dir.is_dir():
            run.log_artifacts(result.hf_dir, "hf")
        run.set_tags({"registered_model": f"{cfg.rlhf.register.name}/{version}",
                      "init_from": cfg.rlhf.init_from, "reward_model": cfg.rlhf.reward_model})
        run.log_dvc_hashes(inputs={"init_model": init_dir, "reward_model": reward_dir},
                           outputs={"model": result.model_dir})
        create_markdown_artifact((result.output_dir / "report.md").read_text(), key="rlhf-report",
                                 description="PPO with and without the KL leash, on held-out prompts")
    return result.metrics
