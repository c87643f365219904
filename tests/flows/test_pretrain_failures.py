"""A diverged pretraining run under the flow: it stops with a clear error and its MLflow run is FAILED."""

from __future__ import annotations

import pytest

from tests.token_fixtures import build_pydoc_token_store

pytestmark = pytest.mark.slow


def test_nan_loss_fails_the_flow_and_marks_the_mlflow_run_failed(prefect_harness, tmp_path, monkeypatch):
    import mlflow

    from components.model.gpt import GPT
    from components.training.pretrain_module import NonFiniteLossError
    from flows.pretrain import pretrain_flow

    tokenizer_dir = build_pydoc_token_store(tmp_path / "tokenizer")
    forward = GPT.forward

    def nan_after_warmup(self, idx, targets=None, **kwargs):
        out = forward(self, idx, targets, **kwargs)
        return out * float("nan") if targets is not None and self.training and torch_step(self) else out

    steps = []

    def torch_step(_model) -> bool:
        steps.append(1)
        return len(steps) > 7

    monkeypatch.setattr(GPT, "forward", nan_after_warmup)
    overrides = ["profile=tiny", f"paths.root={tmp_path}", f"pretrain.tokenizer_dir={tokenizer_dir}",
                 "pretrain.checkpoint_every_n_steps=5", "pretrain.log_every_n_steps=2",
                 "pretrain.export_hf=false"]
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 7"):
        pretrain_flow(overrides)

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/.state/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("llmops").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert client.get_metric_history(runs[0].info.run_id, "train/loss")  # curves up to the failure
    assert (tmp_path / "pretrain" / "checkpoints" / "last.ckpt").exists()  # step 5, the last good one
    assert not client.search_model_versions("name='llmops-base'")
