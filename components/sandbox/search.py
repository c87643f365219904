"""Catalog search as a tool the model calls: the seed's hallucination mitigation #2, self-induced search.

The model writes `<|search_start|>query<|search_end|>`, decoding pauses, and `SearchTool.search` answers
with a few short lines from the data stage's DuckDB catalog (BM25 over kept documents), which the engine
injects as the tool's output. The model then answers from text it can see instead of from memory.

The query is model-generated, so it is untrusted: it is cleaned, capped, passed to DuckDB only as a bound
parameter (never formatted into SQL), and any failure becomes an error string rather than an exception
that would stop the decode loop. The catalog is opened read-only (DuckDB allows one writer; every reader
here is read-only, so training, chat and evaluation can share one file) and only on first use.
SFT data (`components.tasks.search`) is built with this same tool, so what the model sees in training is
exactly what the engine injects at inference."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import duckdb

from components.data.catalog import FTS_CREATED, connect, search_kept

NO_RESULTS = "no results"
SEARCH_FAILED = "error: search failed"
NOT_AVAILABLE = "error: search is not available"
MAX_QUERY_CHARS = 200
_TEXT_START_CHARS = 200  # how much text `search_kept` returns with each hit
_FETCH = 20  # hits fetched before ties are broken by id, so equal scores always rank the same way
_CACHE_SIZE = 512
_WHITESPACE = re.compile(r"\s+")


def collapse(text: str) -> str:
    """`text` on one line: every run of whitespace (newlines included) becomes one space."""
    return _WHITESPACE.sub(" ", text).strip()


def trim_words(text: str, limit: int) -> str:
    """The first `limit` characters of `text`, cut back to a word boundary when that splits a word."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if not text[limit].isspace():
        space = cut.rfind(" ")
        if space > 0:
            cut = cut[:space]
    return cut.rstrip()


def clean_query(query: object) -> str:
    """What is searched for: the query stripped, capped at MAX_QUERY_CHARS, with text DuckDB cannot take
    (NUL, lone surrogates) replaced; "" when nothing is left."""
    if not isinstance(query, str):
        return ""
    query = query.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ")
    return query.strip()[:MAX_QUERY_CHARS].strip()


@dataclass(frozen=True)
class Hit:
    """One search result: the document, its BM25 score, and the snippet the model is shown."""

    id: str
    url: str
    score: float
    title: str  # the document's first line
    snippet: str

    def line(self) -> str:
        return f"{self.url}: {self.snippet}"


class SearchTool:
    """BM25 search over a catalog's kept documents, formatted for the model's context."""

    def __init__(self, catalog_path: str | Path, *, max_results: int = 1, snippet_chars: int = 160) -> None:
        if max_results < 1 or snippet_chars < 1:
            raise ValueError("max_results and snippet_chars must be at least 1")
        self.path = Path(catalog_path)
        self.max_results = max_results
        self.snippet_chars = snippet_chars
        self._con: duckdb.DuckDBPyConnection | None = None
        self._cache: OrderedDict[str, tuple[Hit, ...]] = OrderedDict()
        self._check_exists()

    def _check_exists(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"no catalog at {self.path}: run `llmops data` to build it "
                                    f"(the data stage writes the catalog the search tool reads)")

    def open(self) -> SearchTool:
        """Connect now (read-only) instead of on the first search; raises when the catalog is unusable."""
        self._connection()
        return self

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is not None:
            return self._con
        self._check_exists()
        con = connect(self.path, read_only=True)
        try:
            info = dict(con.execute("SELECT key, value FROM catalog_info").fetchall())
        except duckdb.Error as e:
            con.close()
            raise ValueError(f"{self.path} is not a data-stage catalog (no catalog_info table: {e}); "
                             f"run `llmops data` to rebuild it") from e
        status = info.get("fts")
        if status != FTS_CREATED:
            con.close()
            raise ValueError(f"{self.path} has no full-text index, so it cannot be searched: "
                             f"{status or 'catalog_info records no fts status'}")
        self._con = con
        return con

    def hits(self, query: str) -> list[Hit]:
        """The top `max_results` hits for `query`, best first; may raise duckdb.Error (see `search`)."""
        query = clean_query(query)
        if not query:
            return []
        if query in self._cache:
            self._cache.move_to_end(query)
            return list(self._cache[query])
        con = self._connection()
        rows = search_kept(con, query, limit=max(_FETCH, self.max_results + 1))
        rows.sort(key=lambda row: (-row[2], row[0]))
        found = tuple(self._hit(con, *row) for row in rows[: self.max_results])
        self._cache[query] = found
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return list(found)

    def _hit(self, con: duckdb.DuckDBPyConnection, doc_id: str, url: str | None, score: float,
             text_start: str | None) -> Hit:
        raw = text_start or ""
        text = collapse(raw)
        if len(raw) >= _TEXT_START_CHARS and len(text) <= self.snippet_chars:  # cut short: read more
            row = con.execute("SELECT left(text, $n) FROM documents WHERE id = $id",
                              {"n": 4 * (self.snippet_chars + 1), "id": doc_id}).fetchone()
            text = collapse(row[0] or "") if row else text
        title = collapse(raw.split("\n", 1)[0])
        return Hit(doc_id, url or doc_id, float(score), title, trim_words(text, self.snippet_chars))

    def kept_titles(self) -> list[tuple[str, str]]:
        """(id, first line of text) of every kept document, sorted by id (for building SFT examples)."""
        rows = self._connection().execute(
            "SELECT id, split_part(left(text, 400), chr(10), 1) FROM documents "
            "WHERE status = 'kept' ORDER BY id").fetchall()
        return [(doc_id, collapse(title or "")) for doc_id, title in rows]

    def format(self, hits: list[Hit]) -> str:
        """The text the model is shown for these hits: one `url: snippet` line each, or "no results"."""
        return "\n".join(hit.line() for hit in hits) or NO_RESULTS

    def search(self, query: str) -> str:
        """The tool's answer to a model-written query. Never raises for any query: an unusable query gives
        "no results", a failed search "error: search failed". (A missing or unindexed catalog still
        raises, from the first call, as it does from `open`: that is a setup error, not the model's.)"""
        if not clean_query(query):
            return NO_RESULTS
        self._connection()
        try:
            return self.format(self.hits(query))
        except (duckdb.Error, UnicodeError, ValueError, TypeError):
            return SEARCH_FAILED

    def close(self) -> None:
        """Close the connection (a later search opens it again)."""
        if self._con is not None:
            self._con.close()
            self._con = None
        self._cache.clear()

    def __enter__(self) -> SearchTool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def run_search(tool: SearchTool | None, query: str) -> str:
    """`tool.search(query)`, or an error string the model can read when no catalog is configured."""
    if tool is None:
        return NOT_AVAILABLE
    return tool.search(query)
