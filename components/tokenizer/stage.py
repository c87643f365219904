"""The tokenizer stage as one call: train the BPE on the kept documents, pack them into a token store,
measure held-out compression and a vocabulary sweep, write report.md and metrics.json.

Callable without Prefect or MLflow (tests, notebooks); the flow adds tracking. The held-out documents are
exactly the token store's `val` split, so bytes per token is measured on text the tokenizer never saw."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from omegaconf import DictConfig

from components.tokenizer.bpe import (
    MIN_VOCAB_SIZE,
    N_BYTES,
    SPECIAL_TOKENS,
    Tokenizer,
    save_for_transformers,
    train_bpe,
)
from components.tokenizer.token_store import TokenStoreInfo, val_document_indices, write_token_store

log = logging.getLogger(__name__)
BATCH = 512  # documents per Parquet read and per parallel encode
RUN_DATA = ("run `llmops data` first (the data stage writes its kept Parquet shards there) "
            "or set tokenizer.kept_dir")


@dataclass
class TokenizerStageResult:
    """Where the outputs are and the headline numbers (the same as metrics.json)."""

    out_dir: Path
    tokenizer_path: Path
    hf_dir: Path
    store_dir: Path
    report_path: Path
    metrics_path: Path
    store: TokenStoreInfo
    metrics: dict[str, float]
    sweep: dict[int, float]  # vocab size -> held-out bytes per token
    tokenizer: Tokenizer = field(repr=False)


@dataclass
class _Corpus:
    """The kept shards, read in document order; `is_val[i]` is document i's split in the token store."""

    shards: list[Path]
    n_bytes: np.ndarray
    is_val: np.ndarray

    def texts(self, val: bool | None = None, max_bytes: int | None = None) -> Iterator[str]:
        """Documents of one split (None: all), streamed; stops after the document crossing `max_bytes`."""
        index = total = 0
        for batch in self.batches():
            for text in batch:
                if val is None or self.is_val[index] == val:
                    yield text
                    total += int(self.n_bytes[index])
                    if max_bytes is not None and total >= max_bytes:
                        return
                index += 1

    def train_bytes_used(self, max_bytes: int | None) -> tuple[int, int]:
        """(documents, bytes) that `texts(val=False, max_bytes)` yields, without reading them."""
        cum = np.cumsum(self.n_bytes[~self.is_val])
        if len(cum) == 0:
            return 0, 0
        n = len(cum) if max_bytes is None or cum[-1] < max_bytes else int(np.searchsorted(cum, max_bytes)) + 1
        return n, int(cum[n - 1])

    def batches(self) -> Iterator[list[str]]:
        for path in self.shards:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=["text"]):
                yield [t or "" for t in batch.column(0).to_pylist()]


def find_shards(kept_dir: Path) -> list[Path]:
    """The data stage's kept shards in name order (= document order), or an error saying what to run."""
    if not kept_dir.is_dir():
        raise FileNotFoundError(f"kept documents folder {kept_dir} does not exist: {RUN_DATA}")
    shards = sorted(kept_dir.glob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no Parquet shards (*.parquet) in {kept_dir}: {RUN_DATA}")
    return shards


def _open_corpus(kept_dir: Path, val_fraction: float, seed: int) -> _Corpus:
    """First pass: the byte length of every document (Arrow compute, no Python strings), so the split and
    the size checks are known before any training."""
    shards = find_shards(kept_dir)
    lengths: list[np.ndarray] = []
    for path in shards:
        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise ValueError(f"{path} has no `text` column (columns: {pf.schema_arrow.names}): not a data "
                             "stage output; point tokenizer.kept_dir at the data stage's kept/ folder")
        for batch in pf.iter_batches(batch_size=BATCH * 8, columns=["text"]):
            lengths.append(pc.binary_length(batch.column(0)).fill_null(0).to_numpy().astype(np.int64))
    n_bytes = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    is_val = np.zeros(len(n_bytes), bool)
    is_val[val_document_indices(len(n_bytes), val_fraction, seed)] = True
    return _Corpus(shards, n_bytes, is_val)


def _check_inputs(tok_cfg: DictConfig, corpus: _Corpus, kept_dir: Path) -> None:
    """Refuse what would fail late or mislead, before any training."""
    sizes_by_key = {"vocab_size": [tok_cfg.vocab_size], "sweep_vocab_sizes": tok_cfg.sweep_vocab_sizes}
    for key, sizes in sizes_by_key.items():
        if small := [int(v) for v in sizes if v < MIN_VOCAB_SIZE]:
            raise ValueError(f"tokenizer.{key}: {small} below the minimum vocabulary of {MIN_VOCAB_SIZE} "
                             f"({N_BYTES} bytes + {len(SPECIAL_TOKENS)} special tokens + merges); raise it")
    n_docs, n_val = len(corpus.n_bytes), int(corpus.is_val.sum())
    train_bytes = int(corpus.n_bytes[~corpus.is_val].sum())
    if n_docs < 2 or train_bytes < tok_cfg.min_corpus_bytes:
        raise ValueError(
            f"the kept corpus in {kept_dir} is too small: {n_docs} documents, {train_bytes} bytes of "
            f"training text after holding out {n_val} "
            f"(tokenizer.min_corpus_bytes = {tok_cfg.min_corpus_bytes}). "
            "Run `llmops data` on more input, or lower tokenizer.vocab_size and tokenizer.min_corpus_bytes"
        )


def _measure(tok: Tokenizer, corpus: _Corpus) -> tuple[int, int]:
    """(bytes, tokens) of the held-out documents."""
    n_bytes = n_tokens = 0
    texts = corpus.texts(val=True)
    while batch := list(islice(texts, BATCH)):
        n_bytes += sum(len(t.encode("utf-8")) for t in batch)
        n_tokens += sum(map(len, tok.encode_batch(batch)))
    return n_bytes, n_tokens


def _train(tok_cfg: DictConfig, corpus: _Corpus, vocab_size: int, kept_dir: Path) -> Tokenizer:
    max_bytes = tok_cfg.get("max_train_bytes")
    try:
        return train_bpe(corpus.texts(val=False, max_bytes=max_bytes), vocab_size,
                         min_frequency=tok_cfg.get("min_frequency", 2))
    except ValueError as err:
        raise ValueError(f"training on {kept_dir}: {err}") from err


def run_tokenizer_stage(tok_cfg: DictConfig, kept_dir: Path, out_dir: Path,
                        seed: int) -> TokenizerStageResult:
    """Train, export, pack and measure; every output goes under `out_dir`."""
    kept_dir, out_dir = Path(kept_dir), Path(out_dir)
    val_fraction = float(tok_cfg.val_fraction)
    corpus = _open_corpus(kept_dir, val_fraction, seed)
    _check_inputs(tok_cfg, corpus, kept_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    tok = _train(tok_cfg, corpus, int(tok_cfg.vocab_size), kept_dir)
    train_seconds = time.perf_counter() - start
    tokenizer_path = tok.save(out_dir / "tokenizer.json")
    hf_dir = save_for_transformers(tok, out_dir / "hf")
    log.info("trained a %d-token BPE in %.1f s", tok.vocab_size, train_seconds)

    held_out = {"bytes": 0, "tokens": 0}

    def token_docs() -> Iterator[list[int]]:
        index = 0
        for batch in corpus.batches():
            for ids in tok.encode_batch(batch):
                if corpus.is_val[index]:
                    held_out["bytes"] += int(corpus.n_bytes[index])
                    held_out["tokens"] += len(ids)
                index += 1
                yield ids

    start = time.perf_counter()
    store_dir = out_dir / "tokens"
    store = write_token_store(token_docs(), store_dir, tok.vocab_size, tok.bos_id, val_fraction, seed)
    encode_seconds = time.perf_counter() - start
    if store.n_documents["val"] != int(corpus.is_val.sum()):  # the split rule is shared: a bug if not
        raise RuntimeError(f"token store held out {store.n_documents['val']} documents, "
                           f"the stage {int(corpus.is_val.sum())}")
    n_val = store.n_documents["val"]
    sweep_rows = {tok.vocab_size: (held_out["bytes"], held_out["tokens"])}
    for size in sorted({int(v) for v in tok_cfg.sweep_vocab_sizes} - {tok.vocab_size}):
        sweep_rows[size] = _measure(_train(tok_cfg, corpus, size, kept_dir), corpus)
    sweep = {v: b / t for v, (b, t) in sorted(sweep_rows.items())}

    metrics: dict[str, float] = {
        "bytes_per_token": sweep[tok.vocab_size],
        "vocab_size": tok.vocab_size,
        "n_train_tokens": store.n_tokens["train"],
        "n_val_tokens": store.n_tokens["val"],
        "n_train_documents": store.n_documents["train"],
        "n_val_documents": n_val,
        "train_seconds": round(train_seconds, 3),
        "encode_seconds": round(encode_seconds, 3),
        "bpe_train_bytes": corpus.train_bytes_used(tok_cfg.get("max_train_bytes"))[1],
        **{f"bytes_per_token_vocab_{v}": bpt for v, bpt in sweep.items() if v != tok.vocab_size},
    }
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    report_path = _write_report(out_dir / "report.md", tok, store, sweep_rows, corpus, tok_cfg, kept_dir)
    return TokenizerStageResult(out_dir, tokenizer_path, hf_dir, store_dir, report_path, metrics_path,
                                store, metrics, sweep, tok)


def _write_report(path: Path, tok: Tokenizer, store: TokenStoreInfo, rows: dict[int, tuple[int, int]],
                  corpus: _Corpus, tok_cfg: DictConfig, kept_dir: Path) -> Path:
    n_val = store.n_documents["val"]
    train_bytes = int(corpus.n_bytes[~corpus.is_val].sum())
    cap = tok_cfg.get("max_train_bytes")
    n_used, used = corpus.train_bytes_used(cap)
    capped = (f" (BPE trained on the first {n_used} of them, {used / 1e6:.2f} MB: "
              f"tokenizer.max_train_bytes = {cap})" if used < train_bytes else "")
    lines = [
        "# Tokenizer stage",
        "",
        f"Byte-level BPE with {tok.vocab_size} tokens ({N_BYTES} bytes, {len(SPECIAL_TOKENS)} special "
        f"tokens, {tok.vocab_size - N_BYTES - len(SPECIAL_TOKENS)} merges), GPT-4 style split, trained on "
        f"the train split of `{kept_dir}`: {store.n_documents['train']} documents, "
        f"{train_bytes / 1e6:.2f} MB{capped}.",
        f"Held out: {n_val} documents (val_fraction {store.val_fraction}, seed {store.seed}), never "
        "seen in training: the token store's `val` split.",
        "",
        "## Held-out compression by vocabulary size",
        "",
        "| vocab size | bytes / token | tokens / held-out document | |",
        "| ---: | ---: | ---: | --- |",
    ]
    for size, (n_bytes, n_tokens) in sorted(rows.items()):
        mark = "this tokenizer" if size == tok.vocab_size else "sweep"
        lines.append(f"| {size} | {n_bytes / n_tokens:.3f} | {n_tokens / n_val:.1f} | {mark} |")
    lines += [
        "",
        "A larger vocabulary packs more bytes into each token, so the same text is a shorter sequence: more "
        "text per context window and per step, at the price of a larger embedding and output layer.",
        "",
        "## Token store",
        "",
        f"`tokens/`: each document as `[<|bos|>, *tokens]`, dtype {store.dtype}.",
        "",
        "| split | documents | tokens (boundaries included) |",
        "| --- | ---: | ---: |",
        *(f"| {s} | {store.n_documents[s]} | {store.n_tokens[s]} |" for s in ("train", "val")),
        "",
    ]
    sample = next(corpus.texts(val=True), "")[:120]
    if sample:
        pieces = [tok.decode([i]) for i in tok.encode(sample)]
        shown = "|".join(p.replace("\n", "\\n") for p in pieces)
        lines += ["## Example (start of the first held-out document, tokens separated by `|`)", "",
                  "```text", shown, "```", ""]
    path.write_text("\n".join(lines))
    return path
