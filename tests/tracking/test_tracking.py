"""components.tracking against real MLflow (SQLite in a tmp dir), real git and the real DVC CLI.

Creating an MLflow SQLite database runs its migrations (seconds), so the module shares one database;
the MLFLOW_TRACKING_URI test points at a copy of it rather than migrating a second one."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from components.config import load_config
from components.tracking import (
    StageRun,
    dvc_hash,
    flatten_params,
    git_commit,
    pipeline_run,
    stage_run,
    use_tracking_uri,
)
from components.tracking.runs import MAX_PARAM_VALUE_LENGTH, _current_global_uri, sqlite_path

GIT = [
    "git",
    "-c",
    "user.name=llmops-test",
    "-c",
    "user.email=test@llmops.invalid",
    "-c",
    "commit.gpgsign=false",
]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _make_git_repo(path: Path) -> str:
    path.mkdir(parents=True)
    _git(path, "init", "-q")
    (path / "code.py").write_text("print('hi')\n")
    _git(path, "add", "code.py")
    _git(path, "commit", "-q", "-m", "init")
    return _git(path, "rev-parse", "HEAD").strip()


def _compose(root: Path, *overrides: str) -> DictConfig:
    """The project config for `root`, with MLFLOW_TRACKING_URI unset unless a test sets it."""
    return load_config([f"paths.root={root}", *overrides])


@pytest.fixture(scope="module")
def env() -> dict:
    """Unset the caller's MLFLOW_TRACKING_URI so the default (SQLite in the tmp root) applies."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("DVC_NO_ANALYTICS", "1")
        yield {}


@pytest.fixture(scope="module")
def project_repo(tmp_path_factory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("project") / "repo"
    return repo, _make_git_repo(repo)


@pytest.fixture(scope="module")
def cfg(env, tmp_path_factory, project_repo) -> DictConfig:
    """One root (one SQLite DB) for the module; `paths.project` is a clean tmp git repo."""
    root = tmp_path_factory.mktemp("root")
    return _compose(root, f"paths.project={project_repo[0]}")


@pytest.fixture(scope="module")
def runs(cfg) -> dict[str, StageRun]:
    """A pipeline run with one nested stage run that logs a bit of everything."""
    with pipeline_run(cfg) as parent, stage_run(cfg, "data", parent_run_id=parent.run_id) as child:
        child.log_metrics({"data/kept_documents": 42, "data/kept_ratio": 0.5}, step=1)
    return {"parent": parent, "child": child}


@pytest.fixture(scope="module")
def client(cfg, runs) -> MlflowClient:
    return MlflowClient(tracking_uri=cfg.tracking.uri)


# --- runs ---------------------------------------------------------------------------------------


def test_default_store_is_sqlite_in_state_dir(cfg, runs, client):
    db = Path(cfg.paths.state) / "mlflow.db"
    assert cfg.tracking.uri == f"sqlite:///{db}"
    assert sqlite_path(cfg.tracking.uri) == db
    assert db.is_file()
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    assert exp is not None and exp.experiment_id == runs["child"].experiment_id
    assert Path(exp.artifact_location) == Path(cfg.tracking.artifact_root)


def test_stage_run_is_nested_under_pipeline_run(cfg, runs, client):
    parent = client.get_run(runs["parent"].run_id)
    child = client.get_run(runs["child"].run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "mlflow.parentRunId" not in parent.data.tags
    assert child.info.run_name == "data-demo"
    assert parent.info.run_name == "pipeline-demo"
    assert child.data.tags["stage"] == "data"
    assert child.data.tags["profile"] == cfg.profile_name == "demo"
    assert parent.info.status == child.info.status == "FINISHED"
    found = client.search_runs(
        [child.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert [r.info.run_id for r in found] == [child.info.run_id]


def test_config_artifact_and_params(cfg, runs, client):
    run = client.get_run(runs["child"].run_id)
    artifact = Path(cfg.tracking.artifact_root) / run.info.run_id / "artifacts" / "config.yaml"
    assert Path(run.info.artifact_uri) == artifact.parent  # artifacts are local files under artifact_root
    assert artifact.read_text() == OmegaConf.to_yaml(cfg, resolve=True)
    assert "${" not in artifact.read_text()
    assert yaml.safe_load(artifact.read_text())["tracking"]["uri"] == cfg.tracking.uri
    params = run.data.params
    assert params == flatten_params(cfg)
    assert params["data.corpus.n_documents"] == "3000"
    assert params["tracking.experiment"] == "llmops"
    assert params["paths.root"] == cfg.paths.root
    assert params["data.filters.language_filter.languages"] == '["en"]'
    assert params["data.max_tasks"] == "None"


def test_git_tags(runs, client, project_repo):
    tags = client.get_run(runs["child"].run_id).data.tags
    assert tags["git.commit"] == project_repo[1]
    assert tags["git.dirty"] == "false"


def test_git_tags_dirty_and_absent(cfg, tmp_path):
    repo = tmp_path / "repo"
    sha = _make_git_repo(repo)
    (repo / "code.py").write_text("print('changed')\n")
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    for project, expected in ((repo, {"git.commit": sha, "git.dirty": "true"}), (not_a_repo, {})):
        c = OmegaConf.merge(cfg, {"paths": {"project": str(project)}})
        with stage_run(c, "data") as run:
            pass
        tags = client.get_run(run.run_id).data.tags
        assert {k: v for k, v in tags.items() if k.startswith("git.")} == expected


def test_metrics(runs, client, caplog):
    child = runs["child"]
    assert client.get_run(child.run_id).data.metrics == {"data/kept_documents": 42.0, "data/kept_ratio": 0.5}
    assert [m.step for m in client.get_metric_history(child.run_id, "data/kept_documents")] == [1]

    with caplog.at_level(logging.WARNING, logger="components.tracking"):
        logged = child.log_metrics(
            {
                "eval/loss": np.float32(0.25),
                "eval/count": 3,
                "nan": float("nan"),
                "inf": float("-inf"),
                "text": "1.0",
                "none": None,
                "obj": object(),
            },
            step=7,
        )
    assert logged == {"eval/loss": 0.25, "eval/count": 3.0}
    history = client.get_metric_history(child.run_id, "eval/loss")
    assert [(m.value, m.step) for m in history] == [(0.25, 7)]
    metrics = client.get_run(child.run_id).data.metrics
    assert not {"nan", "inf", "text", "none", "obj"} & set(metrics)
    skipped = [r.getMessage() for r in caplog.records if "skipping MLflow metric" in r.getMessage()]
    assert len(skipped) == 5


def test_failed_and_killed_status(cfg, client):
    with pytest.raises(ValueError, match="boom"), stage_run(cfg, "data") as run:
        raise ValueError("boom")
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None

    with pytest.raises(KeyboardInterrupt), stage_run(cfg, "data") as run:
        raise KeyboardInterrupt
    assert client.get_run(run.run_id).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_fluent_logging_lands_in_stage_run(cfg, client):
    with pipeline_run(cfg) as parent:
        with stage_run(cfg, "train") as child:  # no parent_run_id: nests under the thread's active run
            mlflow.log_metric("train/loss", 1.5)
        mlflow.log_param("note", "parent")
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(child.run_id).data.metrics == {"train/loss": 1.5}
    assert client.get_run(parent.run_id).data.params["note"] == "parent"
    assert "train/loss" not in client.get_run(parent.run_id).data.metrics


def test_runs_left_open_or_ended_inside_a_stage(cfg, client, caplog):
    """A nested run the body leaves open is ended with the stage; one the body ends is not ended twice."""
    with pipeline_run(cfg) as parent:
        with caplog.at_level(logging.WARNING, logger="components.tracking"), stage_run(cfg, "train") as run:
            leaked = mlflow.start_run(nested=True)
        assert mlflow.active_run().info.run_id == parent.run_id
        with stage_run(cfg, "eval") as ended:
            mlflow.end_run()
        assert mlflow.active_run().info.run_id == parent.run_id  # the pipeline run survives
    assert mlflow.active_run() is None
    assert client.get_run(leaked.info.run_id).info.status == "FINISHED"
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert client.get_run(ended.run_id).info.status == "FINISHED"
    assert client.get_run(parent.run_id).info.status == "FINISHED"
    assert any("left open" in r.getMessage() for r in caplog.records)


def test_stage_run_in_worker_thread(cfg, client):
    """Prefect runs tasks in worker threads: the parent id is passed explicitly, the URI stays held."""

    def task(parent_id: str, stage: str) -> tuple[str, str]:
        with stage_run(cfg, stage, parent_run_id=parent_id) as run:
            run.log_metrics({f"{stage}/ok": 1})
            return run.run_id, threading.current_thread().name

    with pipeline_run(cfg) as parent, ThreadPoolExecutor(2) as pool:
        results = list(pool.map(task, [parent.run_id] * 2, ["a", "b"]))
    for run_id, thread_name in results:
        assert thread_name != threading.current_thread().name
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == parent.run_id
        assert run.info.status == "FINISHED"
    assert _current_global_uri() is None and "MLFLOW_TRACKING_URI" not in os.environ


def test_params_limits(cfg, client):
    long_value = "x" * 2000
    c = OmegaConf.merge(
        OmegaConf.to_container(cfg), {"notes": long_value, "many": {f"k{i}": i for i in range(250)}}
    )
    with stage_run(c, "data") as run:
        run.log_params({"extra": {"bad@key": 1, "a/../b": 2, "ok key": [1, 2]}})
    params = client.get_run(run.run_id).data.params
    assert len(params["notes"]) == MAX_PARAM_VALUE_LENGTH and params["notes"].endswith("...")
    assert params["notes"].startswith("x" * 400)
    assert all(params[f"many.k{i}"] == str(i) for i in range(250))  # > 100 per batch: all logged
    assert params["extra.bad_key"] == "1"
    assert params["extra.ok key"] == "[1, 2]"
    assert not any(".." in k for k in params)
    assert len(params) == len(flatten_params(c)) + 2


def test_artifacts(cfg, tmp_path, client):
    (tmp_path / "report.md").write_text("# report\n")
    (tmp_path / "plots" / "sub").mkdir(parents=True)
    (tmp_path / "plots" / "a.txt").write_text("a")
    (tmp_path / "plots" / "sub" / "b.txt").write_text("b")
    with stage_run(cfg, "data") as run:
        run.log_artifact(tmp_path / "report.md")
        run.log_artifact(tmp_path / "report.md", artifact_path="reports")
        run.log_artifacts(tmp_path / "plots", artifact_path="plots")
        run.log_text("hello", "notes/hello.txt")
    root = Path(client.get_run(run.run_id).info.artifact_uri)
    assert (root / "report.md").read_text() == "# report\n"
    assert (root / "reports" / "report.md").is_file()
    assert (root / "plots" / "sub" / "b.txt").read_text() == "b"
    assert (root / "notes" / "hello.txt").read_text() == "hello"
    assert (root / "config.yaml").is_file()


def test_tracking_uri_env_override(cfg, runs, tmp_path, monkeypatch, client):
    other_db = tmp_path / "server" / "other.db"
    other_db.parent.mkdir()
    shutil.copy(sqlite_path(cfg.tracking.uri), other_db)  # already migrated: no second migration
    other_uri = f"sqlite:///{other_db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other_uri)
    other_cfg = _compose(tmp_path / "root", "tracking.experiment=elsewhere")
    assert other_cfg.tracking.uri == other_uri

    with stage_run(other_cfg, "data") as run:
        assert mlflow.get_tracking_uri() == other_uri
    assert os.environ["MLFLOW_TRACKING_URI"] == other_uri  # the user's variable survives the run

    other = MlflowClient(tracking_uri=other_uri)
    assert other.get_run(run.run_id).info.status == "FINISHED"
    assert other.get_experiment(run.experiment_id).name == "elsewhere"
    with pytest.raises(MlflowException):
        client.get_run(run.run_id)  # not in the default store


def test_global_tracking_uri_restored(cfg, tmp_path):
    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    before_global = _current_global_uri()
    with stage_run(cfg, "data"):
        assert mlflow.get_tracking_uri() == cfg.tracking.uri
        with pytest.raises(RuntimeError, match="in use"), use_tracking_uri(f"sqlite:///{tmp_path}/x.db"):
            pass
    assert os.environ.get("MLFLOW_TRACKING_URI") == before_env
    assert _current_global_uri() == before_global


def test_sqlite_parent_dirs_created(env, tmp_path):
    cfg = _compose(tmp_path / "deep" / "root")
    db = sqlite_path(cfg.tracking.uri)
    assert not db.parent.exists()
    from components.tracking.runs import prepare_store

    prepare_store(cfg.tracking.uri)
    assert db.parent.is_dir()
    assert sqlite_path("http://localhost:5000") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("sqlite:///rel/m.db?mode=rw") == Path("rel/m.db")


# --- provenance ---------------------------------------------------------------------------------


def test_git_commit(tmp_path, monkeypatch):
    assert git_commit(tmp_path) == (None, None)  # not a repository
    assert git_commit(tmp_path / "missing") == (None, None)
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    assert git_commit(empty) == (None, None)  # no commit yet

    repo = tmp_path / "repo"
    sha = _make_git_repo(repo)
    assert git_commit(repo) == (sha, False)
    (repo / "sub").mkdir()
    assert git_commit(repo / "sub") == (sha, False)  # any directory inside the work tree
    (repo / "new.py").write_text("x = 1\n")
    assert git_commit(repo) == (sha, True)  # untracked file
    (repo / "new.py").unlink()
    (repo / "code.py").write_text("changed\n")
    assert git_commit(repo) == (sha, True)  # modified file

    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # git missing
    assert git_commit(repo) == (None, None)


def _dvc(repo: Path, *args: str) -> None:
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc)] if dvc.exists() else [sys.executable, "-m", "dvc"]
    subprocess.run([*cmd, *args], cwd=repo, check=True, capture_output=True, text=True)


def _write_tree(d: Path) -> None:
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "a.txt").write_text("alpha\n")
    (d / "crlf.txt").write_bytes(b"line one\r\nline two\r\n")  # DVC 3 md5 is not dos2unix
    (d / "sub" / "b.bin").write_bytes(bytes(range(256)) * 50)
    (d / "sub" / "deeper" / "c.json").write_text('{"k": 1}')
    (d / "z-empty").write_bytes(b"")


@pytest.fixture(scope="module")
def dvc_repo(env, tmp_path_factory) -> dict:
    """A git+DVC repo with a `dvc add`-ed file and directories; returns the md5s DVC recorded."""
    repo = tmp_path_factory.mktemp("dvcrepo")
    _git(repo, "init", "-q")
    _dvc(repo, "init", "-q")
    (repo / "data.txt").write_bytes(b"hello dvc\r\nsecond line\n")
    _write_tree(repo / "dataset")
    _write_tree(repo / "ignoring")
    (repo / ".dvcignore").write_text("*.tmp\n")
    (repo / "ignoring" / "scratch.tmp").write_text("ignored by DVC\n")
    _dvc(repo, "add", "-q", "data.txt", "dataset", "ignoring")
    recorded = {}
    for name in ("data.txt", "dataset", "ignoring"):
        (out,) = yaml.safe_load((repo / f"{name}.dvc").read_text())["outs"]
        assert out["hash"] == "md5"
        recorded[name] = out["md5"]
    return {"repo": repo, "md5": recorded}


def test_dvc_hash_matches_dvc(dvc_repo):
    repo, md5 = dvc_repo["repo"], dvc_repo["md5"]
    assert md5["dataset"].endswith(".dir") and not md5["data.txt"].endswith(".dir")
    assert dvc_hash(repo / "data.txt") == md5["data.txt"]
    assert dvc_hash(repo / "dataset") == md5["dataset"]
    assert dvc_hash(repo / "ignoring") == md5["ignoring"]  # the repo's .dvcignore applies
    assert md5["ignoring"] == md5["dataset"]


def test_dvc_hash_outside_a_dvc_repo(dvc_repo, tmp_path):
    """Same content anywhere -> same hash as DVC recorded; nothing is ignored outside a DVC repo."""
    shutil.copy(dvc_repo["repo"] / "data.txt", tmp_path / "copy.txt")
    shutil.copytree(dvc_repo["repo"] / "dataset", tmp_path / "copy")
    assert dvc_hash(tmp_path / "copy.txt") == dvc_repo["md5"]["data.txt"]
    assert dvc_hash(str(tmp_path / "copy")) == dvc_repo["md5"]["dataset"]
    (tmp_path / "copy" / "sub" / "extra.tmp").write_text("now part of the data\n")
    assert dvc_hash(tmp_path / "copy") != dvc_repo["md5"]["dataset"]
    with pytest.raises(FileNotFoundError):
        dvc_hash(tmp_path / "missing")


def test_dvc_hash_leaves_no_memory_objects(dvc_repo):
    from fsspec.implementations.memory import MemoryFileSystem

    dvc_hash(dvc_repo["repo"] / "dataset")
    before = set(MemoryFileSystem.store)
    for _ in range(3):
        dvc_hash(dvc_repo["repo"] / "dataset")
    assert set(MemoryFileSystem.store) == before


def test_log_dvc_hashes(cfg, dvc_repo, client, caplog):
    repo, md5 = dvc_repo["repo"], dvc_repo["md5"]
    with stage_run(cfg, "data") as run, caplog.at_level(logging.WARNING, logger="components.tracking"):
        tags = run.log_dvc_hashes(
            inputs={"corpus": repo / "dataset", "gone": repo / "missing"},
            outputs={"shards": repo / "data.txt"},
        )
    assert tags == {"dvc.in.corpus": md5["dataset"], "dvc.out.shards": md5["data.txt"]}
    run_tags = client.get_run(run.run_id).data.tags
    assert {k: v for k, v in run_tags.items() if k.startswith("dvc.")} == tags
    assert any("gone" in r.getMessage() for r in caplog.records)

    off = OmegaConf.merge(cfg, {"tracking": {"log_dvc_hashes": False}})
    with stage_run(off, "data") as run:
        assert run.log_dvc_hashes({"corpus": repo / "dataset"}, {}) == {}
    assert not any(k.startswith("dvc.") for k in client.get_run(run.run_id).data.tags)


# --- model registry and the Lightning logger ----------------------------------------------------


def test_register_model_adds_versions_and_moves_the_alias(cfg, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.safetensors").write_bytes(b"not really weights")
    versions = []
    for _ in range(2):
        with stage_run(cfg, "pretrain") as run:
            versions.append(run.register_model(model_dir, "test-model", "current"))
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert versions == ["1", "2"]
    current = client.get_model_version_by_alias("test-model", "current")
    assert str(current.version) == "2" and current.run_id == run.run_id
    source = client.get_model_version_download_uri("test-model", current.version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path / "dl"),
                                                tracking_uri=cfg.tracking.uri)
    assert (Path(local) / "weights.safetensors").read_bytes() == b"not really weights"


def test_lightning_logger_writes_step_metrics_into_the_stage_run(cfg):
    from components.tracking.lightning import StageRunLogger

    with stage_run(cfg, "pretrain") as run:
        logger = StageRunLogger(run)
        logger.log_hyperparams({"ignored": 1})
        for step in (10, 20):
            logger.log_metrics({"train/loss": 1.0 / step, "epoch": 0}, step=step)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    history = client.get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(10, 0.1), (20, 0.05)]
    assert "epoch" not in client.get_run(run.run_id).data.metrics
    assert "ignored" not in client.get_run(run.run_id).data.params
