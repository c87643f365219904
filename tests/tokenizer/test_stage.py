"""The tokenizer stage end to end on small kept shards, and its refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import DictConfig, OmegaConf

from components.tokenizer.bpe import Tokenizer
from components.tokenizer.stage import TokenizerStageResult, run_tokenizer_stage
from components.tokenizer.token_store import load_tokens, val_document_indices

SWEEP = [512, 2048]


def tok_cfg(**overrides: object) -> DictConfig:
    """The stage's config as `conf/tokenizer/default.yaml` shapes it, at test sizes."""
    cfg = {"vocab_size": 1024, "sweep_vocab_sizes": SWEEP, "val_fraction": 0.1, "max_train_bytes": None,
           "min_corpus_bytes": 10_000, "min_frequency": 2, "kept_dir": "unused", "output_dir": "unused"}
    return OmegaConf.create({**cfg, **overrides})


def documents() -> list[str]:
    """~240 documents of Python's documentation: paragraphs of its topics, in a fixed order."""
    paragraphs = [p for k in sorted(topics) for p in topics[k].split("\n\n") if len(p) > 200]
    return paragraphs[:240]


def write_shards(kept: Path, docs: list[str], n_shards: int = 3) -> None:
    """Kept shards as the data stage (datatrove) writes them: Parquet, `text` and `id` columns."""
    kept.mkdir(parents=True, exist_ok=True)
    per = -(-len(docs) // n_shards)
    for s in range(n_shards):
        part = docs[s * per:(s + 1) * per]
        table = pa.table({"text": part, "id": [f"doc-{s}-{i}" for i in range(len(part))]})
        pq.write_table(table, kept / f"000_{s:05d}.parquet", row_group_size=25)  # several row groups


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenizerStageResult, list[str]]:
    root = tmp_path_factory.mktemp("stage")
    docs = documents()
    write_shards(root / "kept", docs)
    return run_tokenizer_stage(tok_cfg(), root / "kept", root / "out", seed=0), docs


def test_outputs_exist(stage: tuple[TokenizerStageResult, list[str]]) -> None:
    result, _ = stage
    out = result.out_dir
    for rel in ("tokenizer.json", "hf/tokenizer.json", "hf/tokenizer_config.json", "tokens/train.bin",
                "tokens/val.bin", "tokens/meta.json", "report.md", "metrics.json"):
        assert (out / rel).is_file(), rel
    assert result.tokenizer_path == out / "tokenizer.json" and result.store_dir == out / "tokens"
    assert json.loads(result.metrics_path.read_text()) == result.metrics


def test_metrics(stage: tuple[TokenizerStageResult, list[str]]) -> None:
    result, docs = stage
    m = result.metrics
    assert m["vocab_size"] == 1024 == Tokenizer.load(result.tokenizer_path).vocab_size
    assert m["bytes_per_token"] > 1
    assert m["n_train_documents"] + m["n_val_documents"] == len(docs)
    assert m["n_val_documents"] == len(val_document_indices(len(docs), 0.1, 0)) >= 1
    assert m["n_train_tokens"] == result.store.n_tokens["train"] > 0
    assert m["n_val_tokens"] == result.store.n_tokens["val"] > 0
    assert m["train_seconds"] > 0
    assert {f"bytes_per_token_vocab_{v}" for v in SWEEP} <= set(m)


def test_larger_vocab_compresses_more(stage: tuple[TokenizerStageResult, list[str]]) -> None:
    result, _ = stage
    assert sorted(result.sweep) == [512, 1024, 2048]
    bpt = [result.sweep[v] for v in sorted(result.sweep)]
    assert bpt == sorted(bpt) and bpt[0] < bpt[-1]
    assert result.metrics["bytes_per_token_vocab_512"] < result.metrics["bytes_per_token"]
    report = result.report_path.read_text()
    assert "| 1024 |" in report and "this tokenizer" in report and "| 2048 |" in report


def test_store_decodes_back_to_the_documents(stage: tuple[TokenizerStageResult, list[str]]) -> None:
    result, docs = stage
    tok = result.tokenizer
    val_idx = set(val_document_indices(len(docs), 0.1, 0))
    for split, expected in (("train", [d for i, d in enumerate(docs) if i not in val_idx]),
                            ("val", [d for i, d in enumerate(docs) if i in val_idx])):
        tokens = np.asarray(load_tokens(result.store_dir, split))
        starts = [*np.flatnonzero(tokens == tok.bos_id).tolist(), len(tokens)]
        assert starts[0] == 0
        decoded = [tok.decode(tokens[a + 1:b].tolist()) for a, b in zip(starts, starts[1:], strict=False)]
        assert decoded == expected


def test_held_out_documents_are_not_trained_on(tmp_path: Path) -> None:
    """A word only in held-out documents gets no merge of its own: it was never seen."""
    docs = documents()[:120]
    val_idx = val_document_indices(len(docs), 0.1, 0)
    for i in val_idx:
        docs[i] = "zqxvjk " * 200
    write_shards(tmp_path / "kept", docs)
    result = run_tokenizer_stage(tok_cfg(sweep_vocab_sizes=[]), tmp_path / "kept", tmp_path / "out", 0)
    assert len(result.tokenizer.encode(" zqxvjk")) > 2
    assert result.metrics["bytes_per_token"] < 2.5  # unseen text compresses badly


def test_max_train_bytes_caps_training_text(tmp_path: Path) -> None:
    write_shards(tmp_path / "kept", documents())
    cfg = tok_cfg(sweep_vocab_sizes=[], max_train_bytes=20_000, vocab_size=400)
    result = run_tokenizer_stage(cfg, tmp_path / "kept", tmp_path / "out", 0)
    assert 20_000 <= result.metrics["bpe_train_bytes"] < 25_000
    assert "tokenizer.max_train_bytes" in result.report_path.read_text()


def test_missing_kept_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope does not exist: run `llmops data` first"):
        run_tokenizer_stage(tok_cfg(), tmp_path / "nope", tmp_path / "out", 0)


def test_empty_kept_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no Parquet shards .* in .*kept: run `llmops data`"):
        run_tokenizer_stage(tok_cfg(), tmp_path / "kept", tmp_path / "out", 0)
    assert not (tmp_path / "out").exists()


def test_too_small_corpus_is_refused(tmp_path: Path) -> None:
    write_shards(tmp_path / "kept", ["a short document."] * 20, n_shards=2)
    with pytest.raises(ValueError, match=r"kept corpus in .*kept is too small.*lower tokenizer.vocab_size"):
        run_tokenizer_stage(tok_cfg(), tmp_path / "kept", tmp_path / "out", 0)


def test_corpus_too_small_for_the_vocab_is_refused(tmp_path: Path) -> None:
    write_shards(tmp_path / "kept", documents()[:30])
    match = r"training on .*kept: .*supports only .*lower `tokenizer.vocab_size`"
    with pytest.raises(ValueError, match=match):
        run_tokenizer_stage(tok_cfg(vocab_size=8192), tmp_path / "kept", tmp_path / "out", 0)


@pytest.mark.parametrize(("key", "value"), [("vocab_size", 200), ("sweep_vocab_sizes", [128, 1024])])
def test_too_small_vocab_is_refused(tmp_path: Path, key: str, value: object) -> None:
    write_shards(tmp_path / "kept", documents()[:50])
    with pytest.raises(ValueError, match=rf"tokenizer.{key}: .* below the minimum vocabulary of 299"):
        run_tokenizer_stage(tok_cfg(**{key: value}), tmp_path / "kept", tmp_path / "out", 0)


def test_composed_config_runs(tmp_path: Path) -> None:
    """The Hydra config group (tiny profile) has every key the stage reads, with values that work."""
    from components.config import load_config

    cfg = load_config(["profile=tiny", f"paths.root={tmp_path}"]).tokenizer
    assert set(cfg) == set(tok_cfg())
    assert Path(cfg.kept_dir) == tmp_path / "data" / "kept" and Path(cfg.output_dir) == tmp_path / "tokenizer"
    write_shards(Path(cfg.kept_dir), documents())
    result = run_tokenizer_stage(cfg, Path(cfg.kept_dir), Path(cfg.output_dir), seed=0)
    assert result.metrics["vocab_size"] == cfg.vocab_size
    assert sorted(result.sweep) == sorted({cfg.vocab_size, *cfg.sweep_vocab_sizes})
