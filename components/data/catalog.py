"""The data stage's DuckDB catalog: every count of the run plus every document, kept or excluded.

One file (`layout.catalog`) that answers "what was dropped, by which block, and why?" with plain SQL,
and that later stages search. Documents are loaded straight from the Parquet shards with DuckDB's
read_parquet. The file is rebuilt from scratch on every run, written under a temporary name and moved
into place, so a reader never sees a half-built catalog and a stale one never mixes with a new run.

Full-text search over kept text uses DuckDB's `fts` extension when it can be loaded offline: already
installed, or from the `duckdb-extension-fts` wheel, whose version must equal DuckDB's (extensions load
only into the DuckDB build they were made for). Whether the index was built, or why not, is recorded in
the `catalog_info` table under `fts`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from components.data.evaluation import Evaluation
from components.data.pipeline import DataStageLayout
from components.data.summary import DataSummary

FTS_TABLE = "kept_text"  # indexed, then dropped: the index keeps its own copy of the terms
FTS_SCHEMA = f"fts_main_{FTS_TABLE}"
FTS_CREATED = "created"

DOCUMENT_COLUMNS = (
    ("id", "VARCHAR"), ("url", "VARCHAR"), ("domain", "VARCHAR"), ("status", "VARCHAR"), ("block", "VARCHAR"),
    ("filter_reason", "VARCHAR"), ("language", "VARCHAR"), ("language_score", "DOUBLE"),
    ("n_chars", "BIGINT"), ("dump", "VARCHAR"), ("date", "VARCHAR"), ("source_format", "VARCHAR"),
    ("file_path", "VARCHAR"), ("shard", "VARCHAR"), ("text", "VARCHAR"),
)
_HOST = r"lower(regexp_extract(url, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/]*@)?([^/:?#]+)', 1))"
_DOMAIN = rf"regexp_replace({_HOST}, '^www\.', '')"

EXAMPLE_QUERIES: dict[str, str] = {
    "funnel": """
        SELECT step, documents_in, forwarded, dropped, chars_out,
               round(100.0 * forwarded / first_value(forwarded) OVER (ORDER BY position), 1) AS pct_of_read
        FROM funnel ORDER BY position""",
    "drops_by_block_and_reason": """
        SELECT block, filter_reason, count(*) AS documents, sum(n_chars) AS chars
        FROM documents WHERE status = 'excluded'
        GROUP BY block, filter_reason ORDER BY documents DESC, block, filter_reason""",
    "top_kept_domains": """
        SELECT domain, count(*) AS documents, sum(n_chars) AS chars
        FROM documents WHERE status = 'kept'
        GROUP BY domain ORDER BY documents DESC, domain LIMIT 20""",
    "language_score_of_drops": """
        SELECT block, floor(language_score * 10) / 10 AS score_bucket, count(*) AS documents
        FROM documents WHERE status = 'excluded' AND language_score IS NOT NULL
        GROUP BY block, score_bucket ORDER BY block, score_bucket""",
    "excluded_samples": """
        SELECT block, filter_reason, url, left(replace(text, chr(10), ' '), 160) AS text_start
        FROM documents WHERE status = 'excluded'
        ORDER BY block, filter_reason, id LIMIT 30""",
    "input_skip_reasons": """
        SELECT reason, sum(records) AS records, count(DISTINCT path) AS files
        FROM input_skips GROUP BY reason ORDER BY records DESC, reason""",
    "filter_precision_recall": """
        SELECT block, planted, caught, false_positives, false_negatives, precision, recall
        FROM filter_eval ORDER BY position""",
}

# Ranked full-text search over kept documents (needs the fts extension loaded: see `connect`).
SEARCH_QUERY = f"""
    SELECT id, url, score, left(text, 200) AS text_start
    FROM (SELECT *, {FTS_SCHEMA}.match_bm25(id, $query) AS score FROM documents WHERE status = 'kept')
    WHERE score IS NOT NULL ORDER BY score DESC LIMIT $limit"""


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _table(con: duckdb.DuckDBPyConnection, name: str, rows: list[dict], schema: pa.Schema) -> None:
    """Create `name` from Python rows with a fixed schema, so an empty list still gives typed columns."""
    data = pa.Table.from_pylist(rows, schema=schema)
    con.register("_rows", data)
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM _rows")
    con.unregister("_rows")


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(fields))


def _stat_rows(summary: DataSummary) -> list[dict]:
    """Every datatrove stat in long form. Counters (saved as plain numbers) have only a total."""
    rows = []
    for job, blocks in summary.stats.items():
        for block, entry in blocks:
            items = list(entry.get("stats", {}).items())
            if isinstance(entry.get("time_stats"), dict):
                items.append(("time_seconds", entry["time_stats"]))
            for stat, value in items:
                row: dict[str, Any] = {"job": job, "block": block, "stat": stat}
                if isinstance(value, dict):
                    mean = value.get("mean", 1)
                    total = value.get("total", 0)
                    row |= {"total": float(total), "n": int(value.get("n", total if mean == 1 else 1)),
                            "mean": float(mean), "min": value.get("min", mean), "max": value.get("max", mean)}
                else:
                    row |= {"total": float(value), "n": None, "mean": None, "min": None, "max": None}
                rows.append(row)
    return rows


def _document_select(files: list[Path], status: str, root: Path) -> str:
    listed = "[" + ", ".join(_sql_str(str(f)) for f in files) + "]"
    prefix = _sql_str(str(root) + "/")
    block = "block" if status == "excluded" else "NULL"
    reason = "filter_reason" if status == "excluded" else "NULL"
    columns = {
        "id": "id", "url": "url", "domain": _DOMAIN, "status": _sql_str(status), "block": block,
        "filter_reason": reason, "language": "language", "language_score": "language_score",
        "n_chars": "length(text)", "dump": "dump", "date": "date", "source_format": "source_format",
        "file_path": "file_path", "shard": f"replace(filename, {prefix}, '')", "text": "text",
    }
    select = ", ".join(f"CAST({columns[name]} AS {kind}) AS {name}" for name, kind in DOCUMENT_COLUMNS)
    return f"SELECT {select} FROM read_parquet({listed}, union_by_name = true, filename = true)"


def _documents(con: duckdb.DuckDBPyConnection, layout: DataStageLayout) -> None:
    kept = sorted(layout.kept.glob("*.parquet")) if layout.kept.exists() else []
    excluded = sorted(layout.excluded.glob("*/*.parquet")) if layout.excluded.exists() else []
    parts = [_document_select(files, status, layout.root)
             for files, status in ((kept, "kept"), (excluded, "excluded")) if files]
    if parts:
        con.execute("CREATE TABLE documents AS " + " UNION ALL ".join(parts))
    else:
        con.execute("CREATE TABLE documents (" + ", ".join(f"{n} {t}" for n, t in DOCUMENT_COLUMNS) + ")")


def load_fts(con: duckdb.DuckDBPyConnection) -> str | None:
    """Load DuckDB's fts extension without the network; None when loaded, else why not."""
    try:
        con.execute("LOAD fts")
        return None
    except duckdb.Error:
        pass
    try:
        import duckdb_extension_fts  # type: ignore[import-not-found]
    except ImportError:
        return (f"the fts extension is not installed for DuckDB v{duckdb.__version__} and the "
                f"duckdb-extension-fts package is not available to load it offline")
    folder = Path(duckdb_extension_fts.__file__).parent / "extensions"
    path = folder / f"v{duckdb.__version__}" / "fts.duckdb_extension"
    if not path.exists():
        shipped = sorted(p.name for p in folder.glob("v*")) or ["nothing"]
        return (f"duckdb-extension-fts ships the extension for DuckDB {', '.join(shipped)}, but this is "
                f"DuckDB v{duckdb.__version__} (an extension loads only into the version it was built for)")
    try:
        con.execute(f"LOAD {_sql_str(str(path))}")
    except duckdb.Error as e:
        return f"loading {path} failed: {e}"
    return None


def _fts_index(con: duckdb.DuckDBPyConnection) -> str:
    reason = load_fts(con)
    if reason is not None:
        return f"skipped: {reason}"
    con.execute(f"CREATE TABLE {FTS_TABLE} AS SELECT id, text FROM documents WHERE status = 'kept'")
    con.execute(f"PRAGMA create_fts_index('{FTS_TABLE}', 'id', 'text', overwrite = 1)")
    con.execute(f"DROP TABLE {FTS_TABLE}")
    return FTS_CREATED


def connect(path: str | Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open a catalog, with the fts extension loaded when the catalog has an index and it loads."""
    con = duckdb.connect(str(path), read_only=read_only, config={"autoinstall_known_extensions": "false"})
    try:
        info = dict(con.execute("SELECT key, value FROM catalog_info").fetchall())
    except duckdb.Error:
        info = {}
    if info.get("fts") == FTS_CREATED:
        load_fts(con)
    return con


def search_kept(con: duckdb.DuckDBPyConnection, query: str, limit: int = 10) -> list[tuple]:
    """BM25-ranked kept documents for `query`: (id, url, score, text start)."""
    return con.execute(SEARCH_QUERY, {"query": query, "limit": limit}).fetchall()


def build_catalog(layout: DataStageLayout, summary: DataSummary,
                  evaluation: Evaluation | None = None) -> Path:
    """Write `layout.catalog` from scratch; returns its path."""
    target = layout.catalog
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
        stale.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp), config={"autoinstall_known_extensions": "false"})
    try:
        _fill(con, layout, summary, evaluation)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    target.with_name(target.name + ".wal").unlink(missing_ok=True)
    os.replace(tmp, target)
    return target


def _fill(con: duckdb.DuckDBPyConnection, layout: DataStageLayout, summary: DataSummary,
          evaluation: Evaluation | None) -> None:
    s, i64, f64 = pa.string(), pa.int64(), pa.float64()
    _table(con, "input_files", [
        {"path": r.path, "format": r.format, "records": r.records, "documents": r.documents,
         "bytes": r.bytes, "error": r.error} for r in summary.inputs],
        _schema(("path", s), ("format", s), ("records", i64), ("documents", i64), ("bytes", i64),
                ("error", s)))
    _table(con, "input_skips", [vars(k) for k in summary.input_skips],
           _schema(("path", s), ("reason", s), ("records", i64)))
    _table(con, "block_stats", _stat_rows(summary),
           _schema(("job", s), ("block", s), ("stat", s), ("total", f64), ("n", i64), ("mean", f64),
                   ("min", f64), ("max", f64)))
    _table(con, "funnel", [{"position": n, **vars(r)} for n, r in enumerate(summary.funnel)],
           _schema(("position", i64), ("step", s), ("job", s), ("documents_in", i64), ("forwarded", i64),
                   ("dropped", i64), ("chars_out", i64), ("chars_source", s), ("bytes_in", i64)))
    _table(con, "drop_reasons", [vars(d) for d in summary.drop_reasons],
           _schema(("block", s), ("reason", s), ("documents", i64)))
    metrics = {**summary.metrics, **(evaluation.metrics if evaluation else {})}
    _table(con, "metrics", [{"name": k, "value": float(v)} for k, v in metrics.items()],
           _schema(("name", s), ("value", f64)))
    filters = evaluation.filters if evaluation else []
    _table(con, "filter_eval", [{"position": n, **vars(f)} for n, f in enumerate(filters)],
           _schema(("position", i64), ("block", s), ("planted", i64), ("caught", i64),
                   ("false_positives", i64), ("false_negatives", i64), ("missed", i64),
                   ("dropped_elsewhere", i64), ("precision", f64), ("recall", f64)))
    kinds = list(evaluation.pii.by_kind.values()) if evaluation else []
    _table(con, "pii_eval", [vars(k) for k in kinds],
           _schema(("kind", s), ("planted", i64), ("removed", i64), ("recall", f64)))
    _documents(con, layout)
    info = {"root": str(layout.root), "fts": _fts_index(con), "duckdb_version": duckdb.__version__,
            "ground_truth": evaluation.ground_truth if evaluation else ""}
    _table(con, "catalog_info", [{"key": k, "value": v} for k, v in info.items()],
           _schema(("key", s), ("value", s)))
