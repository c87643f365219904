"""The reward and RLHF stages without Prefect or MLflow, on a tiny random GPT standing in for the SFT
model: pairs from the labeler (with the ideal reply in each ranking, as the tiny profile does), a reward
model trained and resumed, PPO with and without the KL leash, the report and the saved policy."""

from __future__ import annotations

import json
import re

import pytest
import torch

from components.config import load_config
from components.model.loading import load_pretrained
from components.rlhf.preferences import PreferencePair
from components.rlhf.reward import run_reward
from components.rlhf.reward_model import load_reward_model
from components.rlhf.rlhf import run_rlhf
from tests.token_fixtures import save_random_chat_model


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    return save_random_chat_model(tmp_path_factory)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("root")


def config(root, sft_dir, *extra: str):
    return load_config(["profile=tiny", f"paths.root={root}", f"reward.init_from={sft_dir}",
                        f"rlhf.init_from={sft_dir}", "rlhf.export_hf=false", *extra])


@pytest.fixture(scope="module")
def reward_result(root, sft_dir):
    return run_reward(config(root, sft_dir, "stage=reward"))


def test_reward_stage_labels_pairs_trains_and_resumes(reward_result, root, sft_dir):
    m = reward_result.metrics
    assert m["steps"] == 10 and m["pairs_train"] > 20 and m["pairs_eval"] > 0
    assert 0.0 <= m["eval/accuracy"] <= 1.0
    assert json.loads((root / "reward" / "metrics.json").read_text()) == pytest.approx(m)
    pairs = [PreferencePair.from_record(json.loads(line))
             for line in (root / "reward" / "data" / "train.jsonl").read_text().splitlines()]
    held_out = (root / "reward" / "data" / "eval.jsonl").read_text().splitlines()
    stats = reward_result.data_stats  # every labeled pair is written; those too long to score are counted
    assert len(pairs) + len(held_out) == m["pairs_train"] + m["pairs_eval"] + stats["pairs_skipped_too_long"]
    assert all(p.source.startswith("generated/") for p in pairs)
    model, _ = load_reward_model(reward_result.model_dir)
    assert load_pretrained(reward_result.model_dir)[0].config == model.config  # a GPT folder too
    assert "pairwise accuracy" in (root / "reward" / "report.md").read_text()

    again = run_reward(config(root, sft_dir, "stage=reward"))
    assert again.resumed_from_step == 10
    assert again.metrics["eval/accuracy"] == pytest.approx(m["eval/accuracy"])


def test_rlhf_stage_runs_both_leashes_from_the_same_start(reward_result, root, sft_dir):
    result = run_rlhf(config(root, sft_dir, "stage=rlhf", f"rlhf.reward_model={reward_result.model_dir}"))
    m, hist = result.metrics, result.histories
    assert len(hist["rlhf"]) == len(hist["no_kl"]) == 3
    # The first rollout comes from the SFT weights in both runs: no KL yet, the same reward.
    assert hist["rlhf"][0]["rl/kl"] == pytest.approx(0.0, abs=1e-5)
    assert hist["rlhf"][0]["rl/reward"] == pytest.approx(hist["no_kl"][0]["rl/reward"])
    assert all(row["rl/kl_coef"] == 0.0 for row in hist["no_kl"])
    assert hist["rlhf"][-1]["rl/kl_coef"] != hist["rlhf"][0]["rl/kl_coef"]  # adaptive controller moved
    for model in ("sft", "rlhf", "no_kl"):
        assert f"eval/reward_{model}" in m and f"eval/labeler_score_{model}" in m
    assert m["eval/kl_sft"] == pytest.approx(0.0, abs=1e-5)
    report = (root / "rlhf" / "report.md").read_text()
    assert "Trajectory with the KL leash" in report and "without the KL leash" in report
    # One row per labeler rate, with both trained policies' values (no row cut from a model's name).
    assert report.count("| eval/labeler_win_rate | - | ") == 1 and "_rate_no |" not in report
    assert re.search(r"\| eval/\w+/labeler_win_rate \| - \| \d", report)  # and per task
    policy, _ = load_pretrained(result.model_dir)
    start = load_pretrained(sft_dir)[0].state_dict()
    assert any(not torch.equal(weight, start[name]) for name, weight in policy.state_dict().items())
    assert sorted(p.name for p in (root / "rlhf" / "samples").iterdir()) == ["iteration_00002.md"]


def test_ppo_needs_one_device_and_prompts_the_labeler_can_judge(root, sft_dir):
    with pytest.raises(ValueError, match="one device"):
        run_rlhf(config(root, sft_dir, "stage=rlhf", "rlhf.devices=2"))
    with pytest.raises(ValueError, match="needs a tool"):
        run_rlhf(config(root, sft_dir, "stage=rlhf", "+reward.prompts.tasks.search={weight: 1.0}"))
