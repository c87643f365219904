"""The RLVR stage as a Prefect flow: GRPO and rejection-sampling finetuning from the SFT model on problems
with an answer key, compared with best-of-n on held-out problems; the GRPO policy is registered."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from components.config import load_config
from components.rlvr.rlvr import run_rlvr
from components.tracking import stage_run
from components.tracking.lightning import StageRunLogger
from components.tracking.registry import fetch_model

STAGE = "rlvr"
FILES = (
    "metrics.json",
    "report.md",
    "sigmoid_fit.json",
    "eval_sft.jsonl",
    "eval_grpo.jsonl",
    "eval_rft.jsonl",
    "history_grpo.jsonl",
    "history_grpo_eval.jsonl",
    "history_rft.jsonl",
)


@flow(name="rlvr")
def rlvr_flow(overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, float]:
    """GRPO (resumable) and RFT rounds from the SFT model; rerunning the same command resumes."""
    cfg = load_config([*(overrides or []), f"stage={STAGE}"])
    with stage_run(cfg, STAGE, parent_run_id=parent_run_id) as run:
        init_dir = fetch_model(cfg, str(cfg.rlvr.init_from))
        result = run_rlvr(cfg, logger=StageRunLogger(run), init_dir=init_dir)
        run.log_metrics(result.metrics)
        # GRPO's curves were logged live by Lightning; the RFT rounds go in with the round as step.
        for row in result.histories.get("rft", []):
            run.log_metrics({k: v for k, v in row.items() if k != "round"}, step=int(row["round"]))
        for name in FILES:
            if (result.output_dir / name).exists():
                run.log_artifact(result.output_dir / name)
        if (result.output_dir / "grpo" / "samples").is_dir():
            run.log_artifacts(result.output_dir / "grpo" / "samples", "samples")
        if result.resumed_from_step is not None:
            run.set_tags({"resumed_from_step": result.resumed_from_step})
        version = run.register_model(result.model_dir, cfg.rlvr.register.name, cfg.rlvr.register.alias)
        if result.hf_dir.is_dir():
            run.log_artifacts(result.hf_dir, "hf")
        run.set_tags(
            {"registered_model": f"{cfg.rlvr.register.name}/{version}", "init_from": cfg.rlvr.init_from}
        )
        run.log_dvc_hashes(inputs={"init_model": init_dir}, outputs={"model": result.model_dir})
        create_markdown_artifact(
            (result.output_dir / "report.md").read_text(),
            key="rlvr-report",
            description="GRPO, rejection-sampling finetuning and best-of-n on held-out problems",
        )
    return result.metrics
