"""The packed token store: round trip, dtype, split by document, determinism, read-only memory maps."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from components.tokenizer import token_store
from components.tokenizer.token_store import (
    TokenStoreInfo,
    load_tokens,
    val_document_indices,
    write_token_store,
)

BOUNDARY = 0


def make_docs(n: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """Documents of 0..40 ids in [1, vocab_size): the boundary id never appears inside one."""
    rng = random.Random(seed)
    return [[rng.randrange(1, vocab_size) for _ in range(rng.randrange(0, 40))] for _ in range(n)]


def split_docs(tokens: np.ndarray) -> list[list[int]]:
    """Documents back from a split: each starts at a boundary token."""
    assert len(tokens) == 0 or tokens[0] == BOUNDARY
    starts = [*np.flatnonzero(tokens == BOUNDARY).tolist(), len(tokens)]
    return [tokens[a + 1:b].tolist() for a, b in zip(starts, starts[1:], strict=False)]


def write(docs: list[list[int]], out: Path, vocab_size: int = 1000, val_fraction: float = 0.2,
          seed: int = 0) -> TokenStoreInfo:
    return write_token_store(iter(docs), out, vocab_size, BOUNDARY, val_fraction, seed)


def test_round_trip_split_by_document(tmp_path: Path) -> None:
    docs = make_docs(200, 1000)
    info = write(docs, tmp_path)
    val_idx = set(val_document_indices(200, 0.2, 0))
    expected = {"train": [d for i, d in enumerate(docs) if i not in val_idx],
                "val": [d for i, d in enumerate(docs) if i in val_idx]}
    for split in ("train", "val"):
        tokens = load_tokens(tmp_path, split)
        assert split_docs(np.asarray(tokens)) == expected[split]  # whole documents, in order, none crossing
        assert info.n_documents[split] == len(expected[split])
        assert info.n_tokens[split] == len(tokens) == sum(len(d) + 1 for d in expected[split])
    assert 20 <= info.n_documents["val"] <= 60  # ~20% of 200
    assert TokenStoreInfo.load(tmp_path) == info
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 1000 and meta["boundary_id"] == BOUNDARY
    assert meta["version"] == token_store.STORE_VERSION
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "train.bin", "val.bin"]


@pytest.mark.parametrize(("vocab_size", "dtype"), [(1000, np.uint16), (65536, np.uint16), (65537, np.uint32),
                                                    (200_000, np.uint32)])
def test_dtype_fits_the_vocabulary(tmp_path: Path, vocab_size: int, dtype: type) -> None:
    docs = [[vocab_size - 1, 1, vocab_size - 2]] * 10
    info = write(docs, tmp_path, vocab_size=vocab_size, val_fraction=0.5)
    assert info.dtype == np.dtype(dtype).name
    tokens = load_tokens(tmp_path, "train")
    assert tokens.dtype == dtype
    assert tokens[:4].tolist() == [BOUNDARY, vocab_size - 1, 1, vocab_size - 2]
    assert (tmp_path / "train.bin").stat().st_size == info.n_tokens["train"] * np.dtype(dtype).itemsize


def test_out_of_vocabulary_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"document 1: token id 1000 outside the vocabulary \[0, 1000\)"):
        write([[1, 2], [3, 1000]], tmp_path)
    with pytest.raises(ValueError, match="token id -1"):
        write([[-1]], tmp_path)
    with pytest.raises(ValueError, match="boundary_id"):
        write_token_store([[1]], tmp_path, 10, 10, 0.1, 0)
    assert not list(tmp_path.iterdir())  # nothing half-written is left behind
    with pytest.raises(ValueError, match="val_fraction"):
        write([[1]], tmp_path, val_fraction=0.0)


def test_deterministic_and_seeded(tmp_path: Path) -> None:
    docs = make_docs(100, 500)
    write(docs, tmp_path / "a", seed=3)
    write(docs, tmp_path / "b", seed=3)
    write(docs, tmp_path / "c", seed=4)
    for split in ("train", "val"):
        name = f"{split}.bin"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert val_document_indices(100, 0.2, 3) != val_document_indices(100, 0.2, 4)
    assert (tmp_path / "a" / "val.bin").read_bytes() != (tmp_path / "c" / "val.bin").read_bytes()


def test_streaming_writes_in_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small buffers: many appends give the same files as one big write."""
    docs = make_docs(300, 1000, seed=1)
    write(docs, tmp_path / "big")
    monkeypatch.setattr(token_store, "BUFFER_TOKENS", 7)
    write((d for d in docs), tmp_path / "small")
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (tmp_path / "big" / name).read_bytes() == (tmp_path / "small" / name).read_bytes()


@pytest.mark.parametrize("n", [2, 3, 5])
def test_both_splits_get_a_document(tmp_path: Path, n: int) -> None:
    for fraction in (0.01, 0.99):  # nearly nothing / nearly everything hashed to val
        info = write(make_docs(n, 100), tmp_path / f"{fraction}", val_fraction=fraction)
        assert info.n_documents["val"] >= 1 and info.n_documents["train"] >= 1
        assert info.n_documents["val"] == len(val_document_indices(n, fraction, 0))


def test_single_document_goes_to_train(tmp_path: Path) -> None:
    info = write([[5, 6]], tmp_path, val_fraction=0.99)
    assert info.n_documents == {"train": 1, "val": 0}
    assert val_document_indices(1, 0.99, 0) == []
    assert load_tokens(tmp_path, "train").tolist() == [BOUNDARY, 5, 6]
    with pytest.raises(ValueError, match="split 'val' .* is empty"):
        load_tokens(tmp_path, "val")


def test_memmap_is_read_only(tmp_path: Path) -> None:
    write(make_docs(20, 100), tmp_path)
    tokens = load_tokens(tmp_path, "train")
    assert isinstance(tokens, np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        tokens[0] = 1


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no token store at .*run the tokenizer stage"):
        load_tokens(tmp_path / "missing", "train")
    write(make_docs(20, 100), tmp_path)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_tokens(tmp_path, "test")
    with open(tmp_path / "train.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ValueError, match="damaged"):
        load_tokens(tmp_path, "train")


def test_rewrite_replaces_a_store(tmp_path: Path) -> None:
    write(make_docs(50, 100), tmp_path)
    info = write(make_docs(10, 100, seed=9), tmp_path)
    assert sum(info.n_documents.values()) == 10
    assert len(load_tokens(tmp_path, "train")) == info.n_tokens["train"]
