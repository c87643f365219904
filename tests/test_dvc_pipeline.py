"""`dvc repro` in a fresh copy of the repository: the first run builds the corpus and runs every stage
with no remote to pull from, the second does nothing, a changed data parameter reruns data and what
depends on it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def _chain_and_scaling(ran: list[str]) -> list[str]:
    """The stages in order with `scaling` left out, after checking it ran once, after the tokenizer (it
    is a branch of its own beside pretrain, so DVC may place it anywhere after its input)."""
    assert ran.count("scaling") == 1 and ran.index("scaling") > ran.index("tokenizer"), ran
    return [name for name in ran if name != "scaling"]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> tuple[Path, dict]:
    """The committed tree (what `git clone` gives), with the tiny profile, as its own git repo."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("clone") / "llmops"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, files):
        if (PROJECT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, repo / name)
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("profile: demo", "profile: tiny"))
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "LLMOPS_ROOT")}
    # `llmops` must run this copy's code and configs, not the installed checkout's.
    env |= {"PYTHONPATH": str(repo), "PATH": f"{bin_dir}:{env.get('PATH', '')}"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"]):
        _run(cmd, repo, env)
    return repo, env


def test_repro_runs_then_skips_then_reruns_on_a_param_change(fresh_clone):
    repo, env = fresh_clone
    assert not (repo / "data").exists() and not (repo / ".dvc" / "cache").exists()

    first = _run(["dvc", "repro"], repo, env)
    assert _chain_and_scaling(_ran(first)) == ["corpus", "data", "tokenizer", "pretrain", "sft", "reward",
                                               "rlhf", "rlvr"], first
    assert (repo / "data" / "ground_truth.jsonl").exists()  # data.dvc imported the built corpus
    assert list((repo / "outputs" / "data" / "kept").glob("*.parquet"))

    second = _run(["dvc", "repro"], repo, env)
    assert _ran(second) == [] and "Data and pipelines are up to date" in second, second

    params = repo / "conf" / "data" / "default.yaml"
    params.write_text(params.read_text().replace("language_threshold: 0.65", "language_threshold: 0.7"))
    third = _run(["dvc", "repro"], repo, env)
    # downstream of the changed data
    assert _chain_and_scaling(_ran(third)) == ["data", "tokenizer", "pretrain", "sft", "reward", "rlhf",
                                               "rlvr"], third
    assert "filters.language_filter.language_threshold" in _run(["dvc", "params", "diff"], repo, env)
    metrics = _run(["dvc", "metrics", "show"], repo, env)
    assert "data/documents_kept" in metrics and "bytes_per_token" in metrics and "val_loss" in metrics
    assert "eval/turn_end_rate_sft" in metrics and "eval/accuracy" in metrics
    assert "eval/reward_rlhf" in metrics and "eval/accuracy_grpo" in metrics
    assert "scaling/alpha" in metrics and "eval/holdout_rel_error" in metrics
