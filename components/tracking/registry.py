"""Registered models as folders: `models:/name@alias` or `models:/name/version` downloaded once into
the run's state directory, so later stages and the chat CLI can take a registry URI or a path alike."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from components.tracking.runs import prepare_store, use_tracking_uri

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def is_registry_uri(source: str) -> bool:
    return str(source).startswith("models:/")


def fetch_model(cfg: DictConfig, source: str) -> Path:
    """The local folder of `source`: a path is returned as is, a registry URI is downloaded (and reused
    from `${paths.state}/registry/<name>/<version>` when already there)."""
    if not is_registry_uri(source):
        return Path(source)
    match = _URI.match(source)
    if match is None:
        raise ValueError(f"{source!r} is not a registry URI of the form models:/<name>@<alias> or "
                         "models:/<name>/<version>")
    name, alias, version = match["name"], match["alias"], match["version"]
    uri = str(cfg.tracking.uri)
    prepare_store(uri)
    with use_tracking_uri(uri):
        client = MlflowClient(tracking_uri=uri)
        try:
            found = (client.get_model_version_by_alias(name, alias) if alias
                     else client.get_model_version(name, version))
        except MlflowException as e:
            raise ValueError(f"no registered model {source} in {uri}: train it first (e.g. `llmops sft`) "
                             f"or pass a model folder ({e.message.splitlines()[0]})") from e
        target = Path(cfg.paths.state) / "registry" / name / str(found.version)
        if not target.exists():
            # The version's own download URI: `models:/` URIs would open a registry in the cwd.
            source_uri = client.get_model_version_download_uri(name, found.version)
            partial = target.with_name(target.name + ".partial")
            partial.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(artifact_uri=source_uri, dst_path=str(partial))
            downloaded = [p for p in partial.iterdir()]
            folder = downloaded[0] if len(downloaded) == 1 and downloaded[0].is_dir() else partial
            folder.rename(target)
            if partial.exists():
                partial.rmdir()
    return target
