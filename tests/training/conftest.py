"""A real tokenizer and token store, built once from Python's own documentation (offline, everywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.token_fixtures import build_pydoc_token_store


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return build_pydoc_token_store(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def pretrain_overrides(tokenizer_dir, tmp_path) -> list[str]:
    """The tiny profile on the session's token store, writing under this test's tmp_path."""
    return ["profile=tiny", f"paths.root={tmp_path}", f"pretrain.tokenizer_dir={tokenizer_dir}",
            "pretrain.export_hf=false"]
