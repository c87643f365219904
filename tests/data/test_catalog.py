"""The DuckDB catalog: tables from the summary and evaluation, documents straight from the shards, the
README's example queries, a clean rebuild every run, and full-text search when the extension loads."""

from __future__ import annotations

import duckdb
import pytest

from components.data.catalog import (
    EXAMPLE_QUERIES,
    FTS_CREATED,
    build_catalog,
    connect,
    search_kept,
)
from components.data.evaluation import evaluate
from components.data.pipeline import DataStageLayout
from components.data.summary import summarize
from tests.data.test_summary import FAKE_DOCS, build_fake_run

TABLES = {"input_files", "input_skips", "block_stats", "funnel", "drop_reasons", "documents", "filter_eval",
          "metrics", "pii_eval", "catalog_info"}


@pytest.fixture
def catalog(tmp_path):
    layout, stats, truth = build_fake_run(tmp_path)
    path = build_catalog(layout, summarize(layout, stats), evaluate(layout, truth))
    con = connect(path)
    yield layout, con
    con.close()


def test_tables(catalog):
    layout, con = catalog
    assert layout.catalog.exists()
    assert {r[0] for r in con.execute("SHOW TABLES").fetchall()} == TABLES
    files = con.execute("SELECT count(*), sum(records), sum(documents) FROM input_files").fetchone()
    assert files == (2, 19, 15)
    assert con.execute("SELECT sum(records) FROM input_skips").fetchone() == (4,)
    funnel = con.execute("SELECT step, forwarded FROM funnel ORDER BY position").fetchall()
    assert funnel[0] == ("reader", 15) and funnel[-1] == ("pii", 8)
    assert con.execute("SELECT documents FROM drop_reasons WHERE block = 'language_filter' "
                       "AND reason = 'language_de'").fetchone() == (2,)
    assert con.execute("SELECT value FROM metrics WHERE name = 'eval/lost_documents'").fetchone() == (1.0,)
    assert con.execute("SELECT value FROM metrics WHERE name = 'data/documents_kept'").fetchone() == (8.0,)
    assert con.execute("SELECT recall FROM filter_eval WHERE block = 'url_filter'").fetchone() == (1.0,)
    assert con.execute("SELECT planted, removed FROM pii_eval WHERE kind = 'phone'").fetchone() == (1, 1)


def test_block_stats_long_form(catalog):
    _, con = catalog
    rows = con.execute("SELECT job, stat, total, n FROM block_stats WHERE block = 'reader'").fetchall()
    by_stat = {stat: (job, total, n) for job, stat, total, n in rows}
    assert by_stat["documents"] == ("filter", 15.0, 2)
    assert by_stat["doc_len"][2] == 15
    assert by_stat["skipped_malformed_json"] == ("filter", 1.0, None)  # plain counters have a total only
    assert "time_seconds" in by_stat
    assert con.execute("SELECT count(DISTINCT job) FROM block_stats").fetchone() == (4,)


def test_documents_from_the_shards(catalog):
    _, con = catalog
    rows = con.execute("SELECT status, block, count(*) FROM documents GROUP BY ALL ORDER BY ALL").fetchall()
    assert rows == [("excluded", "language_filter", 3), ("excluded", "minhash_dedup", 3),
                    ("excluded", "url_filter", 1), ("kept", None, 8)]
    doc = con.execute("SELECT url, domain, shard, n_chars, language_score, filter_reason, text "
                      "FROM documents WHERE id = 'l2'").fetchone()
    url, domain, shard, n_chars, score, reason, text = doc
    assert domain == "site-l.example.com"  # lower-cased, www. and port stripped
    assert shard == "excluded/language_filter/000_00000.parquet"
    assert n_chars == len(text) and score == 0.3 and reason == "language_filter_reason"
    assert {r[0] for r in con.execute("SELECT id FROM documents").fetchall()} == set(FAKE_DOCS)


def test_example_queries_run(catalog):
    _, con = catalog
    for name, sql in EXAMPLE_QUERIES.items():
        assert con.execute(sql).fetchall() is not None, name
    drops = con.execute(EXAMPLE_QUERIES["drops_by_block_and_reason"]).fetchall()
    assert drops[0][:3] == ("language_filter", "language_filter_reason", 3)
    assert con.execute(EXAMPLE_QUERIES["funnel"]).fetchall()[-1][-1] == pytest.approx(53.3)


def test_rebuild_replaces_the_catalog_and_works_without_evaluation(tmp_path):
    layout, stats, _ = build_fake_run(tmp_path)
    summary = summarize(layout, stats)
    build_catalog(layout, summary)
    path = build_catalog(layout, summary)  # again: recreated, not appended to
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith("catalog")) == ["catalog.duckdb"]
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents").fetchone() == (15,)
        assert con.execute("SELECT count(*) FROM filter_eval").fetchone() == (0,)
        for sql in EXAMPLE_QUERIES.values():
            con.execute(sql).fetchall()


def test_empty_run_gives_empty_typed_tables(tmp_path):
    layout = DataStageLayout(tmp_path / "data")
    path = build_catalog(layout, summarize(layout, {}))
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents").fetchone() == (0,)
        for sql in EXAMPLE_QUERIES.values():
            assert con.execute(sql).fetchall() == []


def test_full_text_search_or_a_reason(catalog):
    _, con = catalog
    status = dict(con.execute("SELECT key, value FROM catalog_info").fetchall())["fts"]
    if status != FTS_CREATED:
        assert status.startswith("skipped: ") and "DuckDB" in status
        pytest.skip(f"no fts extension offline: {status}")
    assert [h[0] for h in search_kept(con, "jane")] == ["k1"]  # only k1 mentions her
    excluded = {i for i, (where, *_) in FAKE_DOCS.items() if where != "kept"}
    assert not {h[0] for h in search_kept(con, "Words", limit=50)} & excluded
