"""The run summary: funnel, drop reasons, input skips, headline metrics, and stats that must add up.

`build_fake_run` writes a small hand-built run (shards, input reports, datatrove-shaped stats and a
ground truth) that the evaluation, catalog and report tests reuse."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.data.pipeline import EXCLUDED_SCHEMA, KEPT_SCHEMA, DataStageLayout
from components.data.readers import FileReport
from components.data.summary import (
    StatsMismatchError,
    build_funnel,
    check_stats,
    collect_drop_reasons,
    read_stats,
    stat_total,
    summarize,
)

# id -> (where it was written, expected_block, duplicate_of, planted pii)
FAKE_DOCS: dict[str, tuple[str, str | None, str | None, list[str]]] = {
    "k1": ("kept", None, None, ["jane.doe@example.com", "(555) 123-4567"]),
    "k2": ("kept", None, None, []),
    "k3": ("kept", None, None, []),
    "g1": ("kept", "gopher_quality", None, []),              # missed by its filter
    "u1": ("url_filter", "url_filter", None, []),
    "l1": ("language_filter", "language_filter", None, []),
    "l2": ("language_filter", None, None, []),              # false positive
    "o1": ("minhash_dedup", None, None, []),                # cluster 1: the copy survived instead: right
    "c1": ("kept", "minhash_dedup", "o1", []),
    "o2": ("kept", None, None, []),                         # cluster 2: both survived
    "c2": ("kept", "minhash_dedup", "o2", []),
    "o3": ("minhash_dedup", None, None, []),                # cluster 3: none survived
    "c3": ("minhash_dedup", "minhash_dedup", "o3", []),
    "o4": ("language_filter", None, None, []),              # cluster 4: original dropped earlier,
    "c4": ("kept", "minhash_dedup", "o4", []),              # the copy is the one survivor: right
}
LOST_ID = "x1"  # in the ground truth only


def fake_text(doc_id: str) -> str:
    """Distinct lengths per document, some non-ASCII so characters != bytes."""
    n = 3 + sum(map(ord, doc_id)) % 7
    text = " ".join([f"Words of {doc_id} é"] * n)
    if doc_id == "k1":  # the scrubber replaced the phone number, the email is still there
        text += " Mail jane.doe@example.com or call <PHONE>."
    return text


def _row(doc_id: str, block: str | None) -> dict:
    row = {"text": "" if block == "text_extraction" else fake_text(doc_id), "id": doc_id,
           "dump": "CC-MAIN-2024-10", "url": f"https://www.Site-{doc_id[0]}.example.com:8080/p/{doc_id}?q=1",
           "date": "2024-02-21T00:00:00Z", "file_path": "crawl.warc.gz", "source_format": "warc",
           "language": "en" if block not in ("url_filter",) else None,
           "language_score": None if block == "url_filter" else 0.3 if block == "language_filter" else 0.93}
    if block is not None:
        row |= {"block": block, "filter_reason": block if block == "minhash_dedup" else f"{block}_reason"}
    return row


def _doc_len(texts: list[str]) -> dict | int:
    lengths = [len(t) for t in texts]
    if not lengths:
        return 0
    mean = sum(lengths) / len(lengths)
    return {"total": sum(lengths), "n": len(lengths), "mean": mean, "min": min(lengths), "max": max(lengths)}


def fake_stats() -> dict[str, list[tuple[str, dict]]]:
    """datatrove-shaped merged stats consistent with FAKE_DOCS (15 read, 8 kept)."""
    ids = list(FAKE_DOCS)
    after_url = [i for i in ids if FAKE_DOCS[i][0] != "url_filter"]
    after_lang = [i for i in after_url if FAKE_DOCS[i][0] != "language_filter"]
    kept = [i for i in after_lang if FAKE_DOCS[i][0] == "kept"]
    texts = {i: fake_text(i) for i in ids}

    def entry(name: str, **stats) -> dict:
        return {"name": name, "time_stats": {"total": 0.5, "n": 3, "mean": 0.1667, "min": 0.1, "max": 0.3},
                "stats": stats}

    return {
        "filter": [
            ("reader", entry("📖 READER", input_files=2, documents={"total": 15, "n": 2, "mean": 7.5},
                             doc_len=_doc_len([texts[i] for i in ids]), skipped_warc_request_record=3,
                             skipped_malformed_json=1)),
            ("url_filter", entry("🔻 URL", total=15, forwarded=14, dropped=1, dropped_domain=1,
                                 doc_len=_doc_len([texts[i] for i in after_url]))),
            # our extractor counts no characters for pass-through text: derived from the next block
            ("text_extraction", entry("🛢 EXTRAC", total=14, forwarded=14, passthrough_text=14)),
            ("language_filter", entry("🔻 LID", total=14, forwarded=11, dropped=3, dropped_language_de=2,
                                      dropped_low_language_score=1,
                                      doc_len=_doc_len([texts[i] for i in after_lang]))),
            ("filtered_writer", entry("💽 Jsonl", total=11,
                                      doc_len=_doc_len([texts[i] for i in after_lang]))),
            ("minhash_signatures", entry("🫂 MinHash 1", total=11)),
        ],
        "minhash_buckets": [("minhash_buckets", entry("🫂 MinHash 2", total_matches=4))],
        "minhash_cluster": [("minhash_cluster", entry("🫂 MinHash 3", duplicates=6, to_remove=3))],
        "final": [
            ("filtered_reader", entry("📖 Jsonl", doc_len=_doc_len([texts[i] for i in after_lang]))),
            ("minhash_dedup", entry("🫂 MinHash 4", total=11, forwarded=8, dropped=3)),
            ("pii", entry("✂️ PII", total=8, pii_phones=1, documents_with_pii=1)),
            ("kept_writer", entry("💽 Parquet", total=8, doc_len=_doc_len([texts[i] for i in kept]))),
        ],
    }


def build_fake_run(root: Path) -> tuple[DataStageLayout, dict, Path]:
    """Shards, input reports and a ground truth under `root`; returns (layout, stats, ground truth)."""
    layout = DataStageLayout(root / "data")
    kept = [_row(i, None) for i, (where, *_) in FAKE_DOCS.items() if where == "kept"]
    layout.kept.mkdir(parents=True)
    # two kept shards, as two ranks would write
    pq.write_table(pa.Table.from_pylist(kept[:3], schema=KEPT_SCHEMA), layout.kept / "000_00000.parquet")
    pq.write_table(pa.Table.from_pylist(kept[3:], schema=KEPT_SCHEMA), layout.kept / "000_00001.parquet")
    for block in ("url_filter", "language_filter", "minhash_dedup"):
        rows = [_row(i, block) for i, (where, *_) in FAKE_DOCS.items() if where == block]
        (layout.excluded / block).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=EXCLUDED_SCHEMA),
                       layout.excluded / block / "000_00000.parquet")
    layout.input_reports.mkdir(parents=True)
    corpus = root / "corpus"
    (corpus / "warc").mkdir(parents=True)
    reports = [
        FileReport(str(corpus / "warc" / "crawl-00000.warc.gz"), "warc", records=13, documents=10, bytes=5000,
                   skipped={"warc_request_record": 3}),
        FileReport(str(corpus / "jsonl" / "extracted-00000.jsonl.gz"), "jsonl", records=6, documents=5,
                   bytes=900, skipped={"malformed_json": 1}, error=None),
    ]
    for rank, report in enumerate(reports):
        (layout.input_reports / f"{rank:05d}.jsonl").write_text(json.dumps(asdict(report)) + "\n")
    truth = corpus / "ground_truth.jsonl"
    with open(truth, "w") as f:
        for doc_id, (_, expected, dup_of, pii) in [*FAKE_DOCS.items(), (LOST_ID, ("?", None, None, []))]:
            f.write(json.dumps({"id": doc_id, "expected_block": expected, "duplicate_of": dup_of,
                                "pii": pii}) + "\n")
    return layout, fake_stats(), truth


@pytest.fixture
def run(tmp_path):
    return build_fake_run(tmp_path)


def test_funnel_lists_decision_steps_in_pipeline_order(run):
    layout, stats, _ = run
    summary = summarize(layout, stats)
    assert [r.step for r in summary.funnel] == [
        "reader", "url_filter", "text_extraction", "language_filter", "minhash_dedup", "pii"]
    reader, url, extraction, lang, dedup, pii = summary.funnel
    assert (reader.documents_in, reader.forwarded, reader.dropped, reader.bytes_in) == (19, 15, 4, 5900)
    assert (url.documents_in, url.forwarded, url.dropped) == (15, 14, 1)
    assert (dedup.documents_in, dedup.forwarded, dedup.dropped) == (11, 8, 3)
    assert (pii.documents_in, pii.forwarded, pii.dropped) == (8, 8, 0)


def test_characters_come_from_stats_writers_or_exclusion_shards(run):
    layout, stats, _ = run
    summary = summarize(layout, stats)
    rows = {r.step: r for r in summary.funnel}
    chars = {i: len(fake_text(i)) for i in FAKE_DOCS}

    def total(where: str) -> int:
        return sum(n for i, n in chars.items() if FAKE_DOCS[i][0] == where)

    assert (rows["reader"].chars_out, rows["reader"].chars_source) == (sum(chars.values()), "stats")
    lang_out = rows["language_filter"].chars_out
    # pass-through documents carry no doc_len: what language ID read = what it kept + what it excluded
    assert rows["text_extraction"].chars_source == "derived"
    assert rows["text_extraction"].chars_out == lang_out + total("language_filter")
    # MinHash stage 4 counts no characters; it does not rewrite text
    assert rows["minhash_dedup"].chars_source == "derived"
    assert rows["minhash_dedup"].chars_out == lang_out - total("minhash_dedup")
    assert (rows["pii"].chars_out, rows["pii"].chars_source) == (total("kept"), "writer")
    assert summary.kept.chars == total("kept")


def test_drop_reasons_and_input_skips(run):
    layout, stats, _ = run
    summary = summarize(layout, stats)
    reasons = [(d.block, d.reason, d.documents) for d in summary.drop_reasons]
    assert reasons == [
        ("url_filter", "domain", 1),
        ("language_filter", "language_de", 2),
        ("language_filter", "low_language_score", 1),
        ("minhash_dedup", "minhash_dedup", 3),  # counted without a reason: the block's name, as in the shards
    ]
    skips = {(Path(s.path).name, s.reason, s.records) for s in summary.input_skips}
    assert skips == {("crawl-00000.warc.gz", "warc_request_record", 3),
                     ("extracted-00000.jsonl.gz", "malformed_json", 1)}


def test_headline_metrics(run):
    layout, stats, _ = run
    m = summarize(layout, stats).metrics
    kept_texts = [fake_text(i) for i, (where, *_) in FAKE_DOCS.items() if where == "kept"]
    assert m["data/input_files"] == 2
    assert m["data/records"] == 19
    assert m["data/skipped_records"] == 4
    assert m["data/documents_read"] == 15
    assert m["data/documents_kept"] == 8
    assert m["data/documents_excluded"] == 7
    assert m["data/documents_unaccounted"] == 0
    assert m["data/kept_fraction"] == pytest.approx(8 / 15)
    assert m["data/chars_kept"] == sum(len(t) for t in kept_texts)
    assert m["data/bytes_kept"] == sum(len(t.encode("utf-8")) for t in kept_texts)
    assert m["data/bytes_kept"] > m["data/chars_kept"]  # the é
    assert m["data/dropped/url_filter"] == 1
    assert m["data/dropped/language_filter"] == 3
    assert m["data/dropped/minhash_dedup"] == 3
    assert "data/dropped/pii" not in m
    assert m["data/pii/phones"] == 1 and m["data/pii/emails"] == 0 and m["data/pii/documents"] == 1
    assert all(isinstance(v, (int, float)) for v in m.values())


def test_consistent_run_has_no_violations(run):
    layout, stats, _ = run
    assert summarize(layout, stats, strict=True).violations == []


def test_stats_that_do_not_add_up_are_reported_or_raised(run):
    layout, stats, _ = run
    stats["filter"][1][1]["stats"]["forwarded"] = 13  # url filter: 15 != 13 + 1
    summary = summarize(layout, stats)
    assert any("url_filter: total 15 != forwarded 13 + dropped 1" in v for v in summary.violations)
    assert "text_extraction read 14 documents but url_filter forwarded 13" in summary.violations
    with pytest.raises(StatsMismatchError, match="url_filter"):
        summarize(layout, stats, strict=True)


def test_missing_exclusion_shard_is_a_violation(run):
    layout, stats, _ = run
    (layout.excluded / "url_filter" / "000_00000.parquet").unlink()
    summary = summarize(layout, stats)
    assert "excluded/url_filter holds 0 documents but the stats count 1 dropped" in summary.violations
    assert summary.metrics["data/documents_unaccounted"] == 1


def test_kept_shards_must_hold_what_was_forwarded(run):
    layout, stats, _ = run
    (layout.kept / "000_00000.parquet").unlink()
    violations = summarize(layout, stats).violations
    assert "kept shards hold 5 documents but pii forwarded 8" in violations


def test_check_stats_on_funnel_alone(run):
    _, stats, _ = run
    assert check_stats(build_funnel(stats)) == []
    stats["final"][1][1]["stats"]["dropped"] = 2
    assert check_stats(build_funnel(stats)) == ["minhash_dedup: total 11 != forwarded 8 + dropped 2"]


def test_stat_values_in_both_datatrove_shapes():
    assert stat_total(7) == 7
    assert stat_total({"total": 40, "n": 2}) == 40
    assert stat_total(0) == 0
    drops = collect_drop_reasons({"j": [("f", {"stats": {"dropped": 3, "dropped_a": {"total": 2, "n": 2}}})]})
    assert [(d.reason, d.documents) for d in drops] == [("a", 2), ("f", 1)]


def test_read_stats_round_trip(run, tmp_path):
    _, stats, _ = run
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats))
    assert read_stats(path) == stats


def test_empty_run(tmp_path):
    layout = DataStageLayout(tmp_path / "nothing")
    summary = summarize(layout, {"filter": [("reader", {"stats": {}}), ("url_filter", {"stats": {}})]})
    assert summary.kept.documents == 0
    assert summary.metrics["data/kept_fraction"] == 0.0
    assert summary.violations == []


def test_read_stats_from_a_saved_summary(run, tmp_path):
    layout, stats, _ = run
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(summarize(layout, stats).to_dict()))
    assert read_stats(path) == stats
