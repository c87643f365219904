"""The RLVR stage without Prefect or MLflow, on a tiny random GPT standing in for the SFT model: GRPO
(resumable) and an RFT round run, every model is scored on the same held-out problems, and the report,
histories and saved policy are written."""

from __future__ import annotations

import json

import pytest

from components.config import load_config
from components.rlvr.evaluation import paired_gain
from components.rlvr.rlvr import compute_curve_fit, run_rlvr
from tests.token_fixtures import save_random_chat_model


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    return save_random_chat_model(tmp_path_factory)


def config(root, sft_dir, *extra: str):
    return load_config(
        [
            "profile=tiny",
            f"paths.root={root}",
            f"rlvr.init_from={sft_dir}",
            "rlvr.export_hf=false",
            "stage=rlvr",
            *extra,
        ]
    )


def test_rlvr_stage_runs_grpo_and_rft_and_resumes(tmp_path, sft_dir):
    cfg = config(tmp_path, sft_dir)
    result = run_rlvr(cfg)
    m, hist = result.metrics, result.histories
    assert [row["step"] for row in hist["grpo"]] == [1, 2, 3]
    assert [row["step"] for row in hist["grpo_eval"]] == [0, 2, 3]
    assert all(hist["grpo"][i]["rl/flops"] < hist["grpo"][i + 1]["rl/flops"] for i in range(2))
    assert len(hist["rft"]) == 1 and hist["rft"][0]["rft/problems"] == 8
    for model in ("sft", "grpo", "rft"):
        assert 0.0 <= m[f"eval/accuracy_{model}"] <= m[f"eval/pass_at_4_{model}"] <= 1.0
        assert f"eval/best_of_4_majority_{model}" in m
    out = tmp_path / "rlvr"
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(m, nan_ok=True)
    report = (out / "report.md").read_text()
    assert "GRPO trajectory" in report and "Rejection-sampling" in report and "sigmoid" in report
    assert f"4 samples per problem at temperature {cfg.rlvr.eval.temperature:g}" in report
    records = [json.loads(line) for line in (out / "eval_grpo.jsonl").read_text().splitlines()]
    assert len(records) == m["problems_eval"] and len(records[0]["samples"]) == 4
    sft_records = [json.loads(line) for line in (out / "eval_sft.jsonl").read_text().splitlines()]
    assert m["eval/accuracy_gain_grpo"] == pytest.approx(m["eval/accuracy_grpo"] - m["eval/accuracy_sft"])
    greedy = [[r["greedy"]["correct"] for r in rs] for rs in (records, sft_records)]
    stats = (m["eval/accuracy_gain_grpo"], m["eval/accuracy_gain_stderr_grpo"])
    assert stats == pytest.approx(paired_gain(*greedy), nan_ok=True)
    assert (result.model_dir / "model.safetensors").exists()

    again = run_rlvr(config(tmp_path, sft_dir))
    assert again.resumed_from_step is not None
    assert json.dumps(again.histories) == json.dumps(hist)  # (nan-safe comparison)


def test_grpo_and_rft_can_be_switched_off_but_not_both(tmp_path, sft_dir):
    result = run_rlvr(config(tmp_path, sft_dir, "rlvr.grpo.enabled=false"))
    assert "eval/accuracy_rft" in result.metrics and "eval/accuracy_grpo" not in result.metrics
    with pytest.raises(ValueError, match="both are off"):
        run_rlvr(config(tmp_path, sft_dir, "rlvr.grpo.enabled=false", "rlvr.rft.enabled=false"))


def test_sigmoid_curve_fit_needs_enough_points_and_recovers_a_curve():
    assert compute_curve_fit([{"step": 0, "rl/flops": 0.0, "heldout/pass_at_1": 0.2}])["fitted"] == 0
    compute = [0.0, 1e12, 2e12, 4e12, 8e12, 1.6e13, 3.2e13]
    truth = {"A": 0.8, "B": 1.5, "C_mid": 4e12}
    rows = [
        {
            "step": i,
            "rl/flops": c,
            "heldout/pass_at_1": 0.2
            if c == 0
            else 0.2 + (truth["A"] - 0.2) / (1 + (truth["C_mid"] / c) ** truth["B"]),
        }
        for i, c in enumerate(compute)
    ]
    fit = compute_curve_fit(rows)
    assert fit["fitted"] == 1
    assert fit["metric"] == "heldout/pass_at_1"
    assert fit["A"] == pytest.approx(0.8, abs=0.02) and fit["C_mid"] == pytest.approx(4e12, rel=0.1)
    assert fit["intervals"]["A"][0] <= 0.8 <= fit["intervals"]["A"][1]


def test_paired_gain_is_the_mean_difference_with_its_paired_standard_error():
    model = [True, True, False, True, False, True]
    sft = [False, True, False, False, False, True]
    gain, stderr = paired_gain(model, sft)
    # differences 1, 0, 0, 1, 0, 0: mean 1/3, sample variance (2 x (2/3)^2 + 4 x (1/3)^2) / 5 = 4/15
    assert gain == pytest.approx(1 / 3)
    assert stderr == pytest.approx((4 / 15) ** 0.5 / 6 ** 0.5)
    assert paired_gain(sft, model)[0] == pytest.approx(-1 / 3)
    assert paired_gain([True] * 4, [True] * 4) == (0.0, 0.0)  # agreeing on every problem: no noise
    with pytest.raises(ValueError, match="equally long"):
        paired_gain([True], [True, False])
