"""Filters scored against the ground truth: precision/recall, symmetric dedup clusters, PII, lost documents.

The fake run (see test_summary.build_fake_run) plants one case of each situation, so every number
below can be counted by hand from FAKE_DOCS."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.config import load_config
from components.data.catalog import EXAMPLE_QUERIES, build_catalog, connect
from components.data.corpus import build_demo_corpus
from components.data.evaluation import (
    KEPT,
    block_order,
    evaluate,
    find_ground_truth,
    pii_kind,
)
from components.data.pipeline import KEPT_SCHEMA, DataStageLayout, run_jobs
from components.data.readers import resolve_inputs
from components.data.report import write_report
from components.data.summary import summarize
from tests.data.test_summary import LOST_ID, build_fake_run


@pytest.fixture
def run(tmp_path):
    return build_fake_run(tmp_path)


@pytest.fixture
def ev(run):
    layout, _, truth = run
    return evaluate(layout, truth)


def test_filters_in_pipeline_order_with_kept_last(ev):
    blocks = [f.block for f in ev.filters]
    assert blocks == ["url_filter", "language_filter", "gopher_quality", "minhash_dedup", KEPT]


def test_per_filter_counts(ev):
    url = ev.filter("url_filter")
    assert (url.planted, url.caught, url.false_positives, url.false_negatives) == (1, 1, 0, 0)
    assert (url.precision, url.recall) == (1.0, 1.0)
    lang = ev.filter("language_filter")  # l1 right; l2 and the dedup original o4 are false positives
    assert (lang.planted, lang.caught, lang.false_positives, lang.false_negatives) == (1, 1, 2, 0)
    assert lang.precision == pytest.approx(1 / 3) and lang.recall == 1.0
    gopher = ev.filter("gopher_quality")  # planted, never dropped by anything
    assert (gopher.planted, gopher.caught, gopher.missed, gopher.false_positives) == (1, 0, 1, 0)
    assert gopher.precision is None and gopher.recall == 0.0


def test_dedup_is_scored_per_cluster_whichever_member_survives(ev):
    d = ev.dedup
    assert (d.clusters, d.evaluated, d.correct, d.none_survived, d.several_survived) == (4, 4, 2, 1, 1)
    dedup = ev.filter("minhash_dedup")
    # cluster 1: original removed, copy kept -> 1 caught; cluster 2: copy kept too -> 1 missed;
    # cluster 3: both removed -> 1 caught + 1 false positive; cluster 4: only the copy reached dedup, kept
    assert (dedup.planted, dedup.caught, dedup.false_positives, dedup.false_negatives) == (3, 2, 1, 1)
    assert dedup.precision == pytest.approx(2 / 3) and dedup.recall == pytest.approx(2 / 3)
    assert ev.confusion[(KEPT, "minhash_dedup")] == 1  # o3


def test_keeping_scores_and_lost_documents(ev):
    kept = ev.filter(KEPT)
    # expected kept: k1 k2 k3 l2 c1 o2 o3 o4 c4 x1; kept: k1 k2 k3 c1 o2 c4 (+ g1, c2 wrongly)
    assert (kept.planted, kept.caught, kept.false_positives) == (10, 6, 2)
    assert kept.precision == pytest.approx(0.75) and kept.recall == pytest.approx(0.6)
    assert ev.lost_documents == 1 and ev.lost_ids == [LOST_ID]
    assert ev.confusion[(KEPT, "lost")] == 1
    assert ev.unexpected_documents == 0 and ev.duplicated_documents == 0
    assert ev.documents == 16


def test_pii_recall_by_kind(ev):
    assert (ev.pii.documents, ev.pii.planted, ev.pii.removed) == (1, 2, 1)
    assert ev.pii.recall == 0.5
    assert ev.pii.by_kind["phone"].recall == 1.0
    assert ev.pii.by_kind["email"].recall == 0.0
    assert ev.pii.by_kind["ip"].planted == 0 and ev.pii.by_kind["ip"].recall is None
    assert ev.pii.left == [("k1", "email", "jane.doe@example.com")]


def test_flat_metrics(ev):
    m = ev.metrics
    assert m["eval/lost_documents"] == 1
    assert m["eval/url_filter/precision"] == 1.0 and m["eval/url_filter/recall"] == 1.0
    assert m["eval/minhash_dedup/recall"] == pytest.approx(2 / 3)
    assert m["eval/minhash_dedup/clusters_correct"] == 2
    assert m["eval/pii/recall"] == 0.5 and m["eval/pii/phone/recall"] == 1.0
    assert "eval/gopher_quality/precision" not in m  # undefined: nothing dropped
    assert "eval/pii/ip/recall" not in m
    assert all(isinstance(v, (int, float)) for v in m.values())
    json.dumps(ev.to_dict())  # serializable for artifacts


def test_ids_written_twice_or_unknown_are_counted(run):
    layout, _, truth = run
    extra = [{"text": "x", "id": "u1"}, {"text": "y", "id": "stranger"}]
    pq.write_table(pa.Table.from_pylist(extra, schema=KEPT_SCHEMA), layout.kept / "000_00009.parquet")
    ev = evaluate(layout, truth)
    assert ev.duplicated_documents == 1
    assert ev.unexpected_documents == 1


def test_all_right_run_scores_one(tmp_path):
    layout = DataStageLayout(tmp_path / "data")
    layout.kept.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"text": "a", "id": "a"}], schema=KEPT_SCHEMA),
                   layout.kept / "000_00000.parquet")
    truth = tmp_path / "ground_truth.jsonl"
    truth.write_text(json.dumps({"id": "a", "expected_block": None, "pii": []}) + "\n")
    ev = evaluate(layout, truth)
    assert ev.lost_documents == 0 and ev.filter(KEPT).precision == 1.0 and ev.filter(KEPT).recall == 1.0


def test_find_ground_truth_next_to_or_above_the_inputs(run, tmp_path):
    _, _, truth = run
    assert find_ground_truth([str(truth.parent / "warc" / "crawl-00000.warc.gz")]) == truth
    assert find_ground_truth([truth.parent]) == truth
    assert find_ground_truth(["s3://bucket/crawl.warc.gz", str(tmp_path / "elsewhere" / "x.jsonl")]) is None


def test_helpers():
    assert [pii_kind(v) for v in ("a@b.org", "8.8.8.8", "+44 20 7946 0958", "(555) 123-4567")] == [
        "email", "ip", "phone", "phone"]
    assert block_order({"minhash_dedup", "zzz", "url_filter", "custom"}) == [
        "url_filter", "minhash_dedup", "custom", "zzz"]
    assert block_order({"b", "a"}, order=["b", "a"]) == ["b", "a"]


@pytest.mark.slow
def test_real_pipeline_on_a_tiny_corpus_loses_nothing_and_catches_the_planted_cases(tmp_path):
    """End to end on the demo corpus: datatrove jobs, then summary, evaluation, catalog and report."""
    cfg = load_config(["profile=tiny", f"paths.root={tmp_path}", "data.executor.workers=2"])
    build_demo_corpus(cfg.data.corpus.dir, n_documents=100, seed=0, n_warc_files=2)
    files = resolve_inputs([cfg.data.corpus.dir])
    layout = DataStageLayout(Path(cfg.data.output_dir))
    stats = run_jobs(cfg.data, files, layout)

    summary = summarize(layout, stats, strict=True)  # raises if any count does not add up
    assert summary.metrics["data/documents_unaccounted"] == 0
    truth = find_ground_truth(files)
    assert truth is not None
    ev = evaluate(layout, truth)
    assert ev.lost_documents == 0 and ev.unexpected_documents == 0 and ev.duplicated_documents == 0
    for f in ev.filters:
        assert f.planted > 0, f.block
        assert f.recall >= 0.75 and f.precision >= 0.75, f
    assert ev.dedup.correct == ev.dedup.clusters
    assert ev.pii.recall == 1.0

    with connect(build_catalog(layout, summary, ev)) as con:
        n_documents = con.execute("SELECT count(*) FROM documents").fetchone()[0]
        assert n_documents == summary.metrics["data/documents_read"]
        for sql in EXAMPLE_QUERIES.values():
            con.execute(sql).fetchall()
    md = write_report(layout, summary, ev).read_text()
    assert "This run used **0.01**." in md and "14 buckets x 8 hashes" in md
