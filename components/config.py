"""Hydra config composition for every entry point (CLI, flows, tests, benchmarks).

Flows compose with Hydra's compose API rather than `@hydra.main`, so a Prefect flow takes its overrides
as a parameter and never changes the working directory."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("llmops.project_root"):
    OmegaConf.register_new_resolver("llmops.project_root", lambda: str(PROJECT_ROOT))


def load_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """Compose `conf/` with Hydra overrides and resolve it (bad overrides raise Hydra's own errors)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    # A relative `paths.root=outputs` means relative to where the command runs (as DVC runs stages),
    # fixed once here so MLflow's SQLite URI, datatrove workers and reports all agree.
    cfg.paths.root = str(Path(cfg.paths.root).expanduser().absolute())
    OmegaConf.resolve(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def stage_main(stage: str, run: Callable[[DictConfig], Any], argv: list[str] | None = None) -> int:
    """A stage's command line without Prefect or MLflow (also the entry point for torchrun/srun ranks):
    Hydra overrides from `argv`, the result's metrics printed as JSON; only rank 0 of a launcher-started
    run has any."""
    logging.basicConfig(level=logging.INFO)
    cfg = load_config([*(sys.argv[1:] if argv is None else argv), f"stage={stage}"])
    metrics = run(cfg).metrics
    if metrics:
        print(json.dumps(metrics, indent=1, sort_keys=True))
    return 0
