"""Which raw files the data stage reads: the user's crawl, or the demo corpus the project builds.

The demo corpus is deterministic, so it is rebuilt only when its manifest says it was built with other
settings (or never finished): a stage rerun costs no corpus rebuild and never mixes two builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig

from components.data.corpus import CORPUS_FORMAT_VERSION, build_demo_corpus
from components.data.evaluation import find_ground_truth
from components.data.readers import resolve_inputs

MANIFEST = "manifest.json"


def corpus_settings(corpus_cfg: DictConfig) -> dict:
    return {"n_documents": int(corpus_cfg.n_documents), "seed": int(corpus_cfg.seed),
            "n_warc_files": int(corpus_cfg.n_warc_files)}


def ensure_demo_corpus(corpus_cfg: DictConfig) -> tuple[Path, dict]:
    """The demo corpus at `corpus_cfg.dir`, built (or rebuilt from scratch) unless already there."""
    out = Path(corpus_cfg.dir)
    settings = corpus_settings(corpus_cfg)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        built_with = {k: manifest.get(k if k != "n_documents" else "n_documents_requested") for k in settings}
        if built_with == settings and manifest.get("format_version") == CORPUS_FORMAT_VERSION and all(
            (out / f["path"]).exists() for f in manifest["files"]
        ):
            return out, manifest
    if out.exists():
        shutil.rmtree(out)  # a stale or half-written build: start clean so no old shard is read
    return out, build_demo_corpus(out, **settings)


def stage_inputs(data_cfg: DictConfig) -> tuple[list[str], list[str], Path | None]:
    """(input specs as given, resolved input files, ground-truth file if the input carries one: the demo
    corpus does, which lets the report score every filter)."""
    specs = [str(s) for s in data_cfg.inputs] or [str(ensure_demo_corpus(data_cfg.corpus)[0])]
    files = resolve_inputs(specs)
    return specs, files, find_ground_truth(specs)

