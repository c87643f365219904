"""A real tokenizer and token store, built once from Python's own documentation (offline, everywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from pydoc_data.topics import topics

    from components.tokenizer.bpe import train_bpe
    from components.tokenizer.token_store import write_token_store

    out = tmp_path_factory.mktemp("tokenizer")
    texts = [topics[k] for k in sorted(topics)]
    tokenizer = train_bpe(texts, 512)
    tokenizer.save(out / "tokenizer.json")
    write_token_store((tokenizer.encode(t) for t in texts), out / "tokens", tokenizer.vocab_size,
                      tokenizer.bos_id, val_fraction=0.1, seed=0)
    return out


@pytest.fixture
def pretrain_overrides(tokenizer_dir, tmp_path) -> list[str]:
    """The tiny profile on the session's token store, writing under this test's tmp_path."""
    return ["profile=tiny", f"paths.root={tmp_path}", f"pretrain.tokenizer_dir={tokenizer_dir}",
            "pretrain.export_hf=false"]
