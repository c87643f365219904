"""MLflow runs for the pipeline: one run per stage execution, nested under the pipeline's run.

Design (why it looks like this):
- Every write this module makes goes through an `MlflowClient` bound to `cfg.tracking.uri` with an
  explicit run id, so it never depends on MLflow's process-global state and works from any thread
  (Prefect runs tasks in worker threads).
- The stage run is also MLflow's *active* run in the calling thread (`mlflow.start_run`), so library
  code that logs through the fluent API (`mlflow.log_metric`, autologging, a trainer's MLflow callback)
  lands in the stage's run. That needs MLflow's process-global tracking URI: `use_tracking_uri` sets it
  (and the MLFLOW_TRACKING_URI variable MLflow mirrors it into) only while at least one run is open and
  restores both exactly afterwards, so nothing leaks into later code or tests. One process logs to one
  tracking URI at a time; asking for a second one while runs are open raises.
- The experiment is created with `artifact_location = cfg.tracking.artifact_root` when the store is a
  local one (sqlite/file), so artifacts are plain local files next to the SQLite database. Against a
  tracking server (MLFLOW_TRACKING_URI=http://...) the server picks the artifact location.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from components.tracking.provenance import dvc_hash, git_commit

logger = logging.getLogger(__name__)

# Tag names this project sets on every run (search with e.g. tags.stage = 'data').
TAG_STAGE = "stage"
TAG_PROFILE = "profile"
TAG_GIT_COMMIT = "git.commit"
TAG_GIT_DIRTY = "git.dirty"
TAG_PARENT_RUN_ID = "mlflow.parentRunId"  # set by MLflow itself from `parent_run_id=`
DVC_IN_PREFIX = "dvc.in."
DVC_OUT_PREFIX = "dvc.out."
CONFIG_ARTIFACT = "config.yaml"

# The smallest limits among MLflow versions/backends we may talk to: old servers and databases store
# param values in a 500-character column; keys of params/tags/metrics are capped at 250 characters.
MAX_PARAM_VALUE_LENGTH = 500
MAX_KEY_LENGTH = 250
# MLflow key alphabet (its Windows variant, without ':', so keys are valid everywhere).
_INVALID_KEY_CHARS = re.compile(r"[^/\w.\- ]")

_LOCAL_SCHEMES = ("sqlite", "file", "")


# --- the process-global tracking URI ------------------------------------------------------------


class _UriHold:
    """Who holds MLflow's global tracking URI, and what to put back when the last holder leaves."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uri: str | None = None
        self.count = 0
        self.saved_global: str | None = None
        self.saved_env: str | None = None


_HOLD = _UriHold()


def _current_global_uri() -> str | None:
    """MLflow's explicitly set URI (None when unset); `mlflow.get_tracking_uri()` would resolve a default."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return getattr(tracking_utils, "_tracking_uri", None)


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Make `uri` MLflow's global tracking URI for the block, then restore the previous URI and env var.

    Re-entrant and thread-safe for the same URI (a pipeline run and its stage runs in worker threads
    share it); a different URI while one is held raises RuntimeError instead of silently redirecting
    another thread's runs. `mlflow.set_tracking_uri` alone would leak: it also exports
    MLFLOW_TRACKING_URI, which this project's config reads, and resetting it to None unsets a
    user-provided MLFLOW_TRACKING_URI."""
    with _HOLD.lock:
        if _HOLD.count == 0:
            _HOLD.saved_global = _current_global_uri()
            _HOLD.saved_env = os.environ.get("MLFLOW_TRACKING_URI")
            mlflow.set_tracking_uri(uri)
            _HOLD.uri = uri
        elif _HOLD.uri != uri:
            raise RuntimeError(
                f"MLflow tracking URI {_HOLD.uri!r} is in use by an open run in this process; "
                f"cannot log to {uri!r} at the same time"
            )
        _HOLD.count += 1
    try:
        yield
    finally:
        with _HOLD.lock:
            _HOLD.count -= 1
            if _HOLD.count == 0:
                mlflow.set_tracking_uri(_HOLD.saved_global)  # type: ignore[arg-type]  # None unsets
                if _HOLD.saved_env is None:
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                else:
                    os.environ["MLFLOW_TRACKING_URI"] = _HOLD.saved_env
                _HOLD.uri = None


def _scheme(uri: str) -> str:
    """URI scheme without a SQLAlchemy driver (`sqlite+pysqlite` -> `sqlite`); '' for a bare path."""
    if "://" not in uri:
        return ""
    return uri.split("://", 1)[0].split("+", 1)[0].lower()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None for other URIs and in-memory databases)."""
    if _scheme(uri) != "sqlite":
        return None
    rest = uri.split("://", 1)[1]
    if not rest.startswith("/"):  # sqlite://host/... is not a file URI
        return None
    path = rest[1:].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def prepare_store(uri: str) -> None:
    """Create the parent directories of a SQLite tracking database (SQLite will not)."""
    path = sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | Path | None) -> str:
    """Id of experiment `name`, created with `artifact_root` as its artifact location if missing.

    The location only applies at creation: MLflow cannot move an existing experiment's artifacts. A
    deleted experiment of that name is restored (MLflow refuses runs in deleted experiments and keeps
    the name reserved)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if artifact_root is not None:
            location = str(Path(artifact_root).expanduser().resolve())
            Path(location).mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently by another process/thread
            if exp is None:
                raise
    if exp.lifecycle_stage == LifecycleStage.DELETED:
        logger.warning("MLflow experiment %r was deleted; restoring it", name)
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


# --- params -------------------------------------------------------------------------------------


def _sanitize_key(key: str) -> str | None:
    """A valid MLflow param/tag key for `key`, or None if it cannot be made one."""
    clean = _INVALID_KEY_CHARS.sub("_", key)
    norm = posixpath.normpath(clean)
    if not clean or len(clean) > MAX_KEY_LENGTH or norm != clean or clean.startswith(("/", "..")):
        return None
    return clean


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str, sort_keys=False)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
    return text


def flatten_params(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, lists as JSON, values cut to 500 characters.

    The full values are in the `config.yaml` artifact; keys MLflow would reject are made valid
    (invalid characters -> '_') or skipped with a warning."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        key = _sanitize_key(prefix)
        if key is None or key in flat:
            logger.warning("not logging config key %r as an MLflow param (invalid or duplicate)", prefix)
            return
        flat[key] = _param_value(node)

    walk("", container)
    return flat


# --- runs ---------------------------------------------------------------------------------------


@dataclass
class StageRun:
    """An open MLflow run and the few logging helpers stages need (all explicit-run-id, thread-safe)."""

    run_id: str
    experiment_id: str
    stage: str
    tracking_uri: str
    log_dvc: bool = True
    client: MlflowClient = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values cut to 500 characters, invalid keys skipped with a warning)."""
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flatten_params(params).items()])

    def set_tags(self, tags: Mapping[str, Any]) -> dict[str, str]:
        """Set tags (values stringified, invalid keys made valid or skipped); returns what was set."""
        run_tags = []
        for name, value in tags.items():
            key = _sanitize_key(str(name))
            if key is None:
                logger.warning("skipping MLflow tag with invalid key %r", name)
                continue
            run_tags.append(RunTag(key, str(value)))
        if run_tags:
            self.client.log_batch(self.run_id, tags=run_tags)
        return {t.key: t.value for t in run_tags}

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> dict[str, float]:
        """Log finite numeric metrics (names may contain '/'); skip others with a warning.

        Returns what was logged, so a caller can report the same numbers."""
        logged: dict[str, float] = {}
        for name, value in metrics.items():
            number: float | None = None
            if value is not None and not isinstance(value, (str, bytes)):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    number = None
            if number is None or not math.isfinite(number):
                logger.warning("skipping MLflow metric %r: %r is not a finite number", name, value)
                continue
            logged[str(name)] = number
        if logged:
            now = int(time.time() * 1000)
            self.client.log_batch(
                self.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in logged.items()]
            )
        return logged

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy one file into the run's artifacts (under `artifact_path` if given)."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        """Copy a directory's contents into the run's artifacts (under `artifact_path` if given)."""
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write `text` as artifact `artifact_file` (e.g. 'report.md')."""
        self.client.log_text(self.run_id, text, artifact_file)

    def register_model(self, local_dir: str | Path, name: str, alias: str,
                       artifact_path: str = "model") -> str:
        """Log `local_dir` (safetensors + config: no pickled code) as artifacts and register it as a new
        version of model `name`, pointing `alias` at it. Returns the version."""
        self.log_artifacts(local_dir, artifact_path)
        try:
            self.client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(
            name, source=f"{self.artifact_uri}/{artifact_path}", run_id=self.run_id,
            tags={"stage": self.stage})
        self.client.set_registered_model_alias(name, alias, version.version)
        return str(version.version)

    def log_dvc_hashes(
        self, inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path]
    ) -> dict[str, str]:
        """Tag the run with DVC hashes of its inputs (`dvc.in.<name>`) and outputs (`dvc.out.<name>`).

        The values equal the md5s in dvc.lock, so a run can be matched to the data version it read and
        wrote. A missing path is skipped with a warning; a no-op when `tracking.log_dvc_hashes` is off.
        Returns the tags set."""
        if not self.log_dvc:
            return {}
        tags: dict[str, str] = {}
        for prefix, paths in ((DVC_IN_PREFIX, inputs), (DVC_OUT_PREFIX, outputs)):
            for name, path in paths.items():
                try:
                    tags[f"{prefix}{name}"] = dvc_hash(Path(path))
                except FileNotFoundError:
                    logger.warning("not recording DVC hash %s%s: %s does not exist", prefix, name, path)
        return self.set_tags(tags)


def _git_root(cfg: DictConfig) -> Path:
    project = OmegaConf.select(cfg, "paths.project", default=None)
    if project:
        return Path(str(project))
    from components.config import PROJECT_ROOT

    return PROJECT_ROOT


@contextmanager
def stage_run(
    cfg: DictConfig,
    stage: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    run_name: str | None = None,
) -> Iterator[StageRun]:
    """One MLflow run for one execution of `stage`, nested under `parent_run_id` (the pipeline's run).

    The run is named `run_name` (default `<stage>-<profile>`), tagged with stage, profile, git
    commit/dirty (of `paths.project`) and any `tags`, and gets the resolved config as params and as artifact
    `config.yaml`. It ends FINISHED, or FAILED if the block raises (KILLED for KeyboardInterrupt and
    other BaseExceptions); the exception propagates. Without `parent_run_id` the run nests under the
    calling thread's active MLflow run, if any (MLflow's own rule)."""
    uri = str(cfg.tracking.uri)
    prepare_store(uri)
    with use_tracking_uri(uri):
        client = MlflowClient(tracking_uri=uri)
        artifact_root = OmegaConf.select(cfg, "tracking.artifact_root", default=None)
        experiment_id = get_or_create_experiment(
            client,
            str(cfg.tracking.experiment),
            artifact_root if _scheme(uri) in _LOCAL_SCHEMES else None,
        )
        profile = OmegaConf.select(cfg, "profile_name", default=None)
        sha, dirty = git_commit(_git_root(cfg))
        run_tags: dict[str, str] = {TAG_STAGE: stage}
        if profile is not None:
            run_tags[TAG_PROFILE] = str(profile)
        if sha is not None:
            run_tags[TAG_GIT_COMMIT] = sha
        if dirty is not None:
            run_tags[TAG_GIT_DIRTY] = str(dirty).lower()
        run_tags.update({str(k): str(v) for k, v in (tags or {}).items()})

        active = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name or (f"{stage}-{profile}" if profile is not None else stage),
            nested=mlflow.active_run() is not None,
            parent_run_id=parent_run_id,
            tags=run_tags,
        )
        run = StageRun(
            run_id=active.info.run_id,
            experiment_id=experiment_id,
            stage=stage,
            tracking_uri=uri,
            log_dvc=bool(OmegaConf.select(cfg, "tracking.log_dvc_hashes", default=True)),
            client=client,
        )
        status = RunStatus.to_string(RunStatus.FINISHED)
        try:
            run.log_text(OmegaConf.to_yaml(cfg, resolve=True), CONFIG_ARTIFACT)
            params = flatten_params(cfg)
            client.log_batch(run.run_id, params=[Param(k, v) for k, v in params.items()])
            yield run
        except Exception:
            status = RunStatus.to_string(RunStatus.FAILED)
            raise
        except BaseException:
            status = RunStatus.to_string(RunStatus.KILLED)
            raise
        finally:
            _end_run(run, status)


def _fluent_run_ids() -> list[str] | None:
    """Run ids on MLflow's active-run stack of this thread, bottom first (None if MLflow hides it)."""
    from mlflow.tracking import fluent

    stack_var = getattr(fluent, "_active_run_stack", None)
    try:
        return [r.info.run_id for r in stack_var.get()]  # type: ignore[union-attr]
    except Exception:
        return None


def _end_run(run: StageRun, status: str) -> None:
    """End our run and pop it from MLflow's active-run stack, never ending a run opened before it.

    Runs the block opened under ours and left open are ended first (with the same status): left on the
    stack, MLflow's atexit hook would end them later against whatever tracking URI is global then."""
    ids = _fluent_run_ids()
    if ids is not None and run.run_id in ids:
        while (current := mlflow.active_run()) is not None and current.info.run_id != run.run_id:
            logger.warning("ending MLflow run %s left open inside stage %r", current.info.run_id, run.stage)
            mlflow.end_run(status)
        mlflow.end_run(status)
        return
    current = mlflow.active_run()
    if ids is None and current is not None and current.info.run_id == run.run_id:
        mlflow.end_run(status)
        return
    logger.warning(
        "MLflow run %s (%s) was ended inside the stage; marking it %s", run.run_id, run.stage, status
    )
    run.client.set_terminated(run.run_id, status)


@contextmanager
def pipeline_run(cfg: DictConfig, name: str = "pipeline") -> Iterator[StageRun]:
    """The parent run of one pipeline execution; pass its `run_id` as `parent_run_id` to stage runs."""
    with stage_run(cfg, name) as run:
        yield run
