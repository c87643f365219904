"""`llmops corpus`: build the offline demo crawl (a plain helper, no flow: DVC's `corpus` stage)."""

from __future__ import annotations

from components.config import load_config
from components.data.inputs import ensure_demo_corpus


def build_corpus(overrides: list[str] | None = None) -> dict:
    cfg = load_config([*(overrides or []), "stage=corpus"])
    out, manifest = ensure_demo_corpus(cfg.data.corpus)
    return {"dir": str(out), "n_documents": manifest["n_documents"], "total_bytes": manifest["total_bytes"],
            "expected_kept_documents": manifest["expected_kept_documents"]}
