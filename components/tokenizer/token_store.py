"""Packed token store: every document as [boundary, *tokens], concatenated into train.bin / val.bin.

Why this format: pretraining reads random windows of a flat token array; a raw numpy file memory-maps
with no parsing and no copy, and the boundary token keeps document starts recoverable. The train/val
split is by document (a document never straddles splits, so validation text is truly unseen) and is a
pure function of (document index, seed), so the tokenizer stage can hold out the same documents before
the store is written."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

STORE_VERSION = 1
SPLITS = ("train", "val")
META = "meta.json"
BUFFER_TOKENS = 1 << 20  # per split: ~2-4 MB held before a write


@dataclass(frozen=True)
class TokenStoreInfo:
    """What `meta.json` says about a store: enough to memory-map it and to check it matches a model."""

    dtype: str
    vocab_size: int
    boundary_id: int
    n_tokens: dict[str, int]  # boundary tokens included
    n_documents: dict[str, int]
    val_fraction: float
    seed: int
    version: int = STORE_VERSION

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def load(cls, out_dir: str | Path) -> TokenStoreInfo:
        path = Path(out_dir) / META
        if not path.is_file():
            raise FileNotFoundError(f"no token store at {out_dir} ({META} missing): run the tokenizer stage "
                                    "(`llmops tokenizer`) first")
        meta = json.loads(path.read_text())
        if meta.get("version") != STORE_VERSION:
            raise ValueError(f"token store {out_dir} has version {meta.get('version')}, this code reads "
                             f"{STORE_VERSION}: rerun the tokenizer stage")
        return cls(**meta)


def store_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the disk and page-cache footprint whenever every id fits in it."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def _unit_hash(index: int, seed: int) -> float:
    """A stable uniform number in [0, 1) per document (blake2b: the same on every machine and version)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def is_val_document(index: int, val_fraction: float, seed: int) -> bool:
    """The hashed split of one document, before the fix-up that keeps both splits non-empty."""
    return _unit_hash(index, seed) < val_fraction


def val_document_indices(n_documents: int, val_fraction: float, seed: int) -> list[int]:
    """Indices the store puts in `val`: hashed, then with >= 2 documents the last one is moved to whichever
    split would otherwise be empty (the writer does the same with one document of look-ahead). A single
    document goes to train: there is nothing to train on otherwise."""
    _check_fraction(val_fraction)
    if n_documents < 2:
        return []
    val = [i for i in range(n_documents) if is_val_document(i, val_fraction, seed)]
    if not val:
        val = [n_documents - 1]
    elif len(val) == n_documents:
        val = val[:-1]
    return val


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")


class _SplitWriter:
    """Buffered appends of one split to `<split>.bin.tmp`."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype = path, dtype
        self.tmp = path.with_name(path.name + ".tmp")
        self.file: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        self.buffer: list[np.ndarray] = []
        self.buffered = self.n_tokens = self.n_documents = 0

    def add(self, doc: np.ndarray) -> None:
        self.buffer.append(doc)
        self.buffered += len(doc)
        self.n_tokens += len(doc)
        self.n_documents += 1
        if self.buffered >= BUFFER_TOKENS:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            np.concatenate(self.buffer).astype(self.dtype, copy=False).tofile(self.file)
            self.buffer, self.buffered = [], 0

    def finish(self) -> None:
        self.flush()
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def write_token_store(token_docs: Iterable[Sequence[int]], out_dir: str | Path, vocab_size: int,
                      boundary_id: int, val_fraction: float, seed: int) -> TokenStoreInfo:
    """Stream documents into `out_dir/{train,val}.bin` + `meta.json`, split by document.

    Ids outside [0, vocab_size) raise (they would wrap silently in uint16). `meta.json` is written last
    and removed first, so an interrupted write never leaves a store that looks complete."""
    _check_fraction(val_fraction)
    if not 0 <= boundary_id < vocab_size:
        raise ValueError(f"boundary_id {boundary_id} outside the vocabulary [0, {vocab_size})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)
    dtype = store_dtype(vocab_size)
    writers = {split: _SplitWriter(out / f"{split}.bin", dtype) for split in SPLITS}
    pending: tuple[np.ndarray, str] | None = None  # the latest document: it may be moved at the end
    try:
        for index, tokens in enumerate(token_docs):
            doc = np.empty(len(tokens) + 1, dtype=np.int64)
            doc[0] = boundary_id
            doc[1:] = tokens
            if len(doc) > 1 and (doc[1:].min() < 0 or doc[1:].max() >= vocab_size):
                bad = int(doc[1:].min()) if doc[1:].min() < 0 else int(doc[1:].max())
                raise ValueError(f"document {index}: token id {bad} outside the vocabulary [0, {vocab_size})")
            if pending is not None:
                writers[pending[1]].add(pending[0])
            pending = (doc, "val" if is_val_document(index, val_fraction, seed) else "train")
        if pending is not None:
            doc, split = pending
            if writers["val"].n_documents == 0 and writers["train"].n_documents > 0:
                split = "val"
            elif writers["train"].n_documents == 0:
                split = "train"
            writers[split].add(doc)
        for writer in writers.values():
            writer.finish()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    info = TokenStoreInfo(
        dtype=dtype.name, vocab_size=vocab_size, boundary_id=boundary_id,
        n_tokens={s: w.n_tokens for s, w in writers.items()},
        n_documents={s: w.n_documents for s, w in writers.items()},
        val_fraction=val_fraction, seed=seed,
    )
    (out / META).write_text(json.dumps(info.to_dict(), indent=1) + "\n")
    return info


def load_tokens(out_dir: str | Path, split: str) -> np.memmap:
    """A split as a read-only memory map (nothing is read until used)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; a token store has {', '.join(SPLITS)}")
    info = TokenStoreInfo.load(out_dir)
    n = info.n_tokens[split]
    if n == 0:
        raise ValueError(f"split {split!r} of the token store {out_dir} is empty (0 documents): the corpus "
                         "was too small to hold out documents; add data or raise `tokenizer.val_fraction`")
    path = Path(out_dir) / f"{split}.bin"
    dtype = np.dtype(info.dtype)
    size = path.stat().st_size if path.is_file() else -1
    if size != n * dtype.itemsize:
        raise ValueError(f"{path} has {size} bytes, {META} says {n} {info.dtype} tokens: the store is "
                         "damaged; rerun the tokenizer stage")
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))
