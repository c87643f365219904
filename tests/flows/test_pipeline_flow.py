"""The pipeline flow for real (data -> tokenizer -> pretrain -> scaling, sft -> reward -> rlhf, rlvr):
Prefect's test harness, MLflow on SQLite, datatrove with two workers on the tiny demo corpus, Lightning
on the CPU. One run, many checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline_run(prefect_harness, tmp_path_factory):
    from flows.pipeline import pipeline_flow

    root = tmp_path_factory.mktemp("pipeline")
    overrides = ["profile=tiny", f"paths.root={root}"]
    state = pipeline_flow(overrides, return_state=True)
    return root, state


def _runs(root: Path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root}/.state/mlflow.db")
    experiment = client.get_experiment_by_name("llmops")
    runs = client.search_runs([experiment.experiment_id])
    return client, {r.data.tags["stage"]: r for r in runs}


def test_pipeline_flow_completes_and_returns_stage_metrics(pipeline_run):
    root, state = pipeline_run
    assert state.is_completed()
    metrics = state.result()["data"]
    assert metrics == json.loads((root / "data" / "metrics.json").read_text())
    assert metrics["data/documents_kept"] > 100
    assert metrics["eval/lost_documents"] == 0


def test_outputs_are_written_under_the_stage_folder(pipeline_run):
    root, _ = pipeline_run
    out = root / "data"
    for name in ("kept", "excluded", "catalog.duckdb", "report/report.md", "report/funnel.png", "stats.json"):
        assert (out / name).exists(), name
    assert list((out / "kept").glob("*.parquet"))


def test_stage_run_is_nested_and_records_config_commit_and_dvc_hashes(pipeline_run):
    from components.tracking import dvc_hash

    root, _ = pipeline_run
    client, runs = _runs(root)
    assert set(runs) == {"pipeline", "data", "tokenizer", "pretrain", "scaling", "scaling.run", "sft",
                         "reward", "rlhf", "rlvr"}
    data_run, parent = runs["data"], runs["pipeline"]
    assert data_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert data_run.info.status == parent.info.status == "FINISHED"
    assert data_run.data.params["data.minhash.n_grams"] == "5"
    assert data_run.data.tags["profile"] == "tiny"
    assert len(data_run.data.tags["git.commit"]) == 40
    assert data_run.data.tags["dvc.out.kept"] == dvc_hash(root / "data" / "kept")
    assert data_run.data.tags["dvc.in.corpus"] == dvc_hash(root / "corpus")
    metrics = json.loads((root / "data" / "metrics.json").read_text())
    assert data_run.data.metrics["data/documents_kept"] == metrics["data/documents_kept"]
    assert parent.data.metrics["data/documents_kept"] == metrics["data/documents_kept"]
    artifacts = {a.path for a in client.list_artifacts(data_run.info.run_id)}
    assert {"config.yaml", "report", "metrics.json", "stats.json"} <= artifacts
    reports = {a.path for a in client.list_artifacts(data_run.info.run_id, "report")}
    assert reports == {"report/report.md", "report/funnel.png"}


def test_report_is_a_prefect_artifact(pipeline_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    root, _ = pipeline_run
    with get_client(sync_client=True) as client:
        key = ArtifactFilter(key=ArtifactFilterKey(any_=["data-report"]))
        artifacts = client.read_artifacts(artifact_filter=key)
    assert artifacts and "Funnel" in artifacts[-1].data


def test_tokenizer_stage_is_tracked_with_its_report_and_store(pipeline_run):
    from components.tracking import dvc_hash

    root, state = pipeline_run
    _, runs = _runs(root)
    run = runs["tokenizer"]
    metrics = state.result()["tokenizer"]
    assert metrics["vocab_size"] == 512 and metrics["bytes_per_token"] > 1.5
    assert run.data.metrics["bytes_per_token"] == pytest.approx(metrics["bytes_per_token"])
    assert run.data.tags["dvc.in.kept"] == dvc_hash(root / "data" / "kept")
    assert run.data.tags["dvc.out.tokens"] == dvc_hash(root / "tokenizer" / "tokens")
    assert (root / "tokenizer" / "tokens" / "train.bin").stat().st_size > 0


def test_pretrain_stage_learns_logs_curves_samples_and_registers_the_model(pipeline_run):
    import mlflow

    root, state = pipeline_run
    client, runs = _runs(root)
    run = runs["pretrain"]
    metrics = state.result()["pretrain"]
    assert metrics["val_loss"] < metrics["train_unigram_entropy"] - 1.0
    assert run.info.status == "FINISHED"
    parent = runs["pipeline"].data.metrics
    assert parent["pretrain/val_loss"] == pytest.approx(metrics["val_loss"])
    tokenizer_metrics = state.result()["tokenizer"]
    assert parent["tokenizer/bytes_per_token"] == pytest.approx(tokenizer_metrics["bytes_per_token"])
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(losses) >= 10 and losses[-1].value < losses[0].value
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) >= 4  # every 50 of 200 steps
    assert client.get_metric_history(run.info.run_id, "train/tokens_per_s")
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "samples/step_000050.txt" in samples
    version = client.get_model_version_by_alias("llmops-base", "current")
    assert version.run_id == run.info.run_id
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri("llmops-base", version.version),
        dst_path=str(root / "download"), tracking_uri=f"sqlite:///{root}/.state/mlflow.db")
    from components.model.checkpoint import load_model

    assert load_model(local).config.num_params() == metrics["params"]


def test_scaling_stage_sweeps_in_child_runs_fits_and_predicts(pipeline_run):
    root, state = pipeline_run
    client, runs = _runs(root)
    run = runs["scaling"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == runs["pipeline"].info.run_id
    children = client.search_runs([run.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert len(children) == 7 and {c.data.tags["stage"] for c in children} == {"scaling.run"}
    assert sorted(c.data.tags["scaling.role"] for c in children) == ["fit"] * 6 + ["holdout"]
    assert all(c.info.status == "FINISHED" and c.data.metrics["val/loss"] > 0 for c in children)
    assert len(client.get_metric_history(children[0].info.run_id, "train/loss")) > 1
    metrics = state.result()["scaling"]
    assert metrics == json.loads((root / "scaling" / "metrics.json").read_text())
    assert metrics["scaling/runs_fitted"] == 6 and "eval/holdout_rel_error" in metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"fit.json", "report.md", "runs.csv", "scaling.duckdb", "figures", "config.yaml"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
        "figures/isoflop.png", "figures/frontier.png", "figures/residuals.png"}


def test_sft_stage_trains_evaluates_against_the_base_model_and_registers(pipeline_run):
    root, state = pipeline_run
    client, runs = _runs(root)
    run = runs["sft"]
    metrics = state.result()["sft"]
    assert run.info.status == "FINISHED" and metrics["steps"] == 20
    for name in ("turn_end_rate", "identity_accuracy", "arithmetic_tool_accuracy",
                 "arithmetic_no_tool_accuracy", "idk_rate_out_of_scope", "idk_rate_in_scope"):
        for model in ("sft", "base"):
            assert 0.0 <= metrics[f"eval/{name}_{model}"] <= 1.0, (name, model)
    assert run.data.metrics["eval/turn_end_rate_sft"] == pytest.approx(metrics["eval/turn_end_rate_sft"])
    assert run.data.metrics["data/train_conversations"] > 100
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "data_stats.json", "eval_sft.jsonl", "eval_base.jsonl", "data",
            "model"} <= artifacts
    version = client.get_model_version_by_alias("llmops-sft", "current")
    assert version.run_id == run.info.run_id
    train = (root / "sft" / "data" / "train.jsonl").read_text().splitlines()
    tasks = {json.loads(line)["task"] for line in train}
    assert tasks == {"identity", "arithmetic", "text_tools", "out_of_scope", "search"}


def test_reward_stage_trains_on_labeled_pairs_and_registers(pipeline_run):
    root, state = pipeline_run
    client, runs = _runs(root)
    run = runs["reward"]
    metrics = state.result()["reward"]
    assert run.info.status == "FINISHED" and metrics["steps"] == 10
    assert 0.0 <= metrics["eval/accuracy"] <= 1.0 and metrics["pairs_train"] > 0
    assert run.data.metrics["eval/accuracy"] == pytest.approx(metrics["eval/accuracy"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "report.md", "data", "model"} <= artifacts
    assert client.get_model_version_by_alias("llmops-reward", "current").run_id == run.info.run_id


def test_rlhf_stage_runs_ppo_with_and_without_the_leash_and_registers(pipeline_run):
    root, state = pipeline_run
    client, runs = _runs(root)
    run = runs["rlhf"]
    metrics = state.result()["rlhf"]
    assert run.info.status == "FINISHED"
    assert metrics["iterations_rlhf"] == metrics["iterations_no_kl"] == 3
    for model in ("sft", "rlhf", "no_kl"):
        assert f"eval/reward_{model}" in metrics and f"eval/kl_{model}" in metrics
    for key in ("rl/reward", "rl/kl", "rl/entropy", "rl/clipfrac", "rl/value_loss", "rl/response_length"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 3, key
    assert len(client.get_metric_history(run.info.run_id, "no_kl/rl/kl_coef")) == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "eval.jsonl", "history_rlhf.jsonl", "history_no_kl.jsonl", "samples",
            "model"} <= artifacts
    assert client.get_model_version_by_alias("llmops-rlhf", "current").run_id == run.info.run_id


def test_rlvr_stage_runs_grpo_and_rft_and_registers(pipeline_run):
    root, state = pipeline_run
    client, runs = _runs(root)
    run = runs["rlvr"]
    metrics = state.result()["rlvr"]
    assert run.info.status == "FINISHED"
    for model in ("sft", "grpo", "rft"):
        for key in ("accuracy", "pass_at_1", "pass_at_4", "best_of_4_majority", "response_tokens"):
            assert 0 <= metrics[f"eval/{key}_{model}"] < float("inf"), (key, model)
    for key in ("rl/reward", "rl/reward_accuracy", "rl/reward_format", "rl/response_length", "rl/kl",
                "rl/entropy", "rl/zero_variance_frac", "rl/tool_use_rate"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 3, key
    # held-out curve: before the first step, at step 2 (every_n_steps) and at the last step
    assert [m.step for m in client.get_metric_history(run.info.run_id, "heldout/accuracy")] == [0, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "rft/kept")) == 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "sigmoid_fit.json", "history_grpo.jsonl", "history_grpo_eval.jsonl",
            "history_rft.jsonl", "eval_grpo.jsonl", "samples", "model"} <= artifacts
    assert client.get_model_version_by_alias("llmops-rlvr", "current").run_id == run.info.run_id


def test_chat_cli_talks_to_the_registered_model(pipeline_run, monkeypatch, capsys):
    import io

    from flows.cli import main

    root, _ = pipeline_run
    monkeypatch.setattr("sys.stdin", io.StringIO("Who are you?\n/reset\nHow many r's are in strawberry?\n"))
    assert main(["chat", "profile=tiny", f"paths.root={root}", "chat.max_new_tokens=12",
                 "chat.temperature=0"]) == 0
    out = capsys.readouterr().out
    assert "models:/llmops-sft@current" in out and out.count("assistant> ") == 2
    assert "(conversation forgotten)" in out
    assert (root / ".state" / "registry" / "llmops-sft").is_dir()  # downloaded once, reused next time
