"""Shared fixtures for the data-stage tests: the real WARC samples kept beside the project."""

from __future__ import annotations

from pathlib import Path

import pytest

# ../shared/datasets from the project root (see its README); absent in a user's own clone.
DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
WARC_SAMPLES = {
    "resiliparse": "resiliparse-warcfile.warc.gz",
    "whirlwind": "whirlwind.warc.gz",
    "warcio": "warcio-example.warc.gz",
    "chunked": "warcio-example-iana.org-chunked.warc",
}


@pytest.fixture(scope="session")
def warc_dir() -> Path:
    folder = DATASETS / "warc"
    missing = [name for name in WARC_SAMPLES.values() if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"real WARC samples not found in {folder} (missing {', '.join(missing)})")
    return folder
