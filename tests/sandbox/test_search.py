"""The catalog search tool: right document first, one short line per hit, and no query (the model writes
them) can raise, inject SQL or change the catalog. A missing or unindexed catalog is a clear setup error.

`build_search_catalog` writes a tiny real catalog (documents + catalog_info + the fts index, built by the
data stage's own `_fts_index`); the search-task tests reuse it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from components.data.catalog import DOCUMENT_COLUMNS, FTS_CREATED, _fts_index, connect
from components.sandbox.search import (
    MAX_QUERY_CHARS,
    NO_RESULTS,
    NOT_AVAILABLE,
    SearchTool,
    clean_query,
    run_search,
    trim_words,
)

LONG_BODY = ("The zoneinfo cache keeps recently used time zones so that repeated lookups of the same key "
             "return the identical object instead of reading the database again from disk every time.")
DOCS = {  # id: (status, title, body)
    "d01": ("kept", "Python notes: glob, shutil and tarfile",
            "Return a list of paths matching a pathname pattern. Wildcards like asterisk are expanded."),
    "d02": ("kept", "Python notes: sqlite3, pickle and zipfile",
            "Open a connection to the SQLite database file. Cursors execute statements."),
    "d03": ("kept", "Notes on asyncio.locks",
            "A mutex lock for coroutines; acquire it with async with before touching shared state."),
    "d04": ("kept", "Working with hashlib",
            "Secure hashes and message digests: sha256 and blake2b objects expose update and hexdigest."),
    "d05": ("kept", "A closer look at zoneinfo", LONG_BODY),
    "d06": ("kept", "Python notes: heapq, bisect and array",
            "Push an item onto the heap, keeping the heap invariant. The smallest item is always first."),
    "d07": ("kept", "argparse: a practical overview",
            "Parse command line arguments into a namespace; subparsers give git style subcommands."),
    "d08": ("kept", "How textwrap works",
            "Wrap a single paragraph so every line is at most width characters long, then fill it."),
    "d09": ("kept", "Reference notes: json, csv and struct",
            "Serialize an object to a JSON formatted string. Read rows from comma separated files."),
    "d10": ("kept", "Python notes: secrets, uuid and random",
            "Generate cryptographically strong random tokens. Unicode café names and naïve words work too."),
    "x01": ("excluded", "Python notes: glob spam", "glob glob glob pattern pathname wildcards spam"),
    "x02": ("excluded", "Notes on quarantine", "quarantine words that only excluded documents use"),
}


def url_of(doc_id: str) -> str:
    return f"https://notes.example.com/{doc_id}/"


def build_search_catalog(folder: Path, *, fts: bool = True, docs: dict | None = None) -> Path:
    """A catalog with `documents`, `catalog_info` and (when `fts`) the full-text index of kept text."""
    path = folder / "catalog.duckdb"
    con = duckdb.connect(str(path), config={"autoinstall_known_extensions": "false"})
    try:
        con.execute("CREATE TABLE documents (" + ", ".join(f"{n} {t}" for n, t in DOCUMENT_COLUMNS) + ")")
        for doc_id, (status, title, body) in (DOCS if docs is None else docs).items():
            text = f"{title}\n{body}"
            con.execute("INSERT INTO documents (id, url, status, text, n_chars) VALUES (?, ?, ?, ?, ?)",
                        [doc_id, url_of(doc_id), status, text, len(text)])
        status = _fts_index(con) if fts else "skipped: turned off in this test"
        con.execute("CREATE TABLE catalog_info (key VARCHAR, value VARCHAR)")
        con.execute("INSERT INTO catalog_info VALUES ('fts', ?)", [status])
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return path


def fts_catalog(folder: Path) -> Path:
    """`build_search_catalog`, or skip when DuckDB's fts extension cannot be loaded offline here."""
    path = build_search_catalog(folder)
    with duckdb.connect(str(path), read_only=True) as con:
        status = con.execute("SELECT value FROM catalog_info WHERE key = 'fts'").fetchone()[0]
    if status != FTS_CREATED:
        pytest.skip(f"no fts extension offline: {status}")
    return path


@pytest.fixture(scope="module")
def catalog_path(tmp_path_factory) -> Path:
    """One catalog for the module (read-only for every test, so sharing it is safe)."""
    return fts_catalog(tmp_path_factory.mktemp("catalog"))


@pytest.fixture
def tool(catalog_path):
    with SearchTool(catalog_path) as search:
        yield search


@pytest.mark.parametrize(("query", "doc_id"), [
    ("pathname pattern", "d01"), ("sqlite3 connection", "d02"), ("coroutines mutex", "d03"),
    ("sha256 digests", "d04"), ("zoneinfo cache", "d05"), ("heap invariant", "d06"),
    ("subparsers", "d07"), ("textwrap paragraph", "d08"), ("JSON serialize", "d09"),
    ("secrets tokens", "d10"),
])
def test_distinctive_words_rank_their_document_first(tool, query, doc_id):
    assert tool.hits(query)[0].id == doc_id
    assert tool.search(query).startswith(url_of(doc_id) + ": ")


def test_excluded_documents_are_never_found(tool):
    assert tool.search("quarantine") == NO_RESULTS
    tool.max_results = 10
    assert {h.id for h in tool.hits("glob pathname wildcards")} == {"d01"}


def test_format_one_line_per_hit_with_a_word_trimmed_snippet(catalog_path):
    path = catalog_path
    with SearchTool(path, snippet_chars=60) as short:
        line = short.search("zoneinfo cache")
        assert "\n" not in line
        url, snippet = line.split(": ", 1)
        assert url == url_of("d05")
        text = f"A closer look at zoneinfo {LONG_BODY}"  # the newline after the title became a space
        assert len(snippet) <= 60 and text.startswith(snippet) and text[len(snippet)] == " "
    with SearchTool(path, max_results=3) as three:
        query = "random tokens sha256 pathname"
        lines = three.search(query).split("\n")
        assert len(lines) == 3 and all(": " in ln for ln in lines)
        assert [ln.split(": ", 1)[0] for ln in lines] == [h.url for h in three.hits(query)]
    with SearchTool(path, snippet_chars=190) as long:  # longer than what search_kept returns: read more
        snippet = long.search("zoneinfo cache").split(": ", 1)[1]
        assert 170 < len(snippet) <= 190 and LONG_BODY.startswith(snippet.split("zoneinfo ", 1)[1])


def test_trim_words():
    assert trim_words("alpha beta gamma", 100) == "alpha beta gamma"
    assert trim_words("alpha beta gamma", 10) == "alpha beta"  # cut falls on the space
    assert trim_words("alpha beta gamma", 13) == "alpha beta"  # mid-word: back to the boundary
    assert trim_words("abcdefghij", 4) == "abcd"  # one long word: a hard cut


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "!!! ... ???", "zzzqqqxxx", "12345"])
def test_no_results(tool, query):
    assert tool.search(query) == NO_RESULTS


WEIRD = [
    "'; DROP TABLE documents; --", "\"; DELETE FROM documents; --", "glob' OR '1'='1", "$query", "?", "%s",
    "glob); DROP TABLE catalog_info; --", "' UNION SELECT * FROM catalog_info --", "\\", "\\'", "''''",
    "café naïve 日本語 🐍", "\x00glob\x00", "\ud800 lone surrogate", "glob\n\npattern\r\n", "x" * 100_000,
    "glob " * 5000, "-- comment", "/* glob */", "NULL", "glob\u202e", "*", "(", "glob:pattern", "a" * 201,
]


@pytest.mark.parametrize("query", WEIRD)
def test_weird_queries_never_raise_and_leave_the_catalog_intact(tool, query):
    result = tool.search(query)
    assert isinstance(result, str) and result
    assert result == NO_RESULTS or result.startswith("https://") or result.startswith("error: ")
    with connect(tool.path) as con:  # same settings as the tool's: DuckDB wants one config per file
        assert con.execute("SELECT count(*) FROM documents").fetchone() == (len(DOCS),)
        assert con.execute("SELECT count(*) FROM catalog_info").fetchone() == (1,)


def test_injection_text_is_searched_as_words(tool):
    assert tool.search("glob' OR '1'='1").startswith(url_of("d01"))  # the quote is just punctuation
    assert tool.search("café naïve").startswith(url_of("d10"))


def test_query_hygiene():
    assert clean_query("  glob  ") == "glob"
    assert len(clean_query("y" * 1000)) == MAX_QUERY_CHARS
    assert clean_query(None) == "" and clean_query("\x00") == ""  # type: ignore[arg-type]
    assert "\ud800" not in clean_query("\ud800x")


def test_catalog_is_opened_read_only_and_lazily(tmp_path):
    path = fts_catalog(tmp_path)
    search = SearchTool(path)
    assert search._con is None  # nothing opened yet
    with duckdb.connect(str(path)) as writer:  # a writer may still hold the file before the first search
        writer.execute("SELECT 1")
    assert search.search("heap invariant").startswith(url_of("d06"))
    with connect(path) as reader:  # readers share the file
        assert reader.execute("SELECT count(*) FROM documents").fetchone() == (len(DOCS),)
    with pytest.raises(duckdb.Error):
        search._con.execute("CREATE TABLE t (x INT)")  # read-only: cannot write
    search.close()
    search.close()  # twice is fine
    assert search.search("heap invariant").startswith(url_of("d06"))  # reopens
    search.close()


def test_missing_catalog(tmp_path):
    missing = tmp_path / "nope" / "catalog.duckdb"
    with pytest.raises(FileNotFoundError, match="llmops data") as error:
        SearchTool(missing)
    assert str(missing) in str(error.value)
    assert not missing.exists()  # opening did not create it


def test_catalog_without_full_text_index(tmp_path):
    path = build_search_catalog(tmp_path, fts=False)
    search = SearchTool(path)  # lazy: the catalog is only read on first use
    with pytest.raises(ValueError, match="no full-text index.*turned off in this test"):
        search.open()
    with pytest.raises(ValueError, match="no full-text index"):
        search.search("glob")
    assert search.search("") == NO_RESULTS  # nothing to search: no need to open the catalog


def test_run_search(tool):
    assert run_search(None, "glob") == NOT_AVAILABLE
    assert run_search(tool, "pathname pattern") == tool.search("pathname pattern")


def test_results_are_deterministic(catalog_path):
    path = catalog_path
    with SearchTool(path, max_results=5) as a, SearchTool(path, max_results=5) as b:
        for query in ("random", "glob tarfile", "notes", "python notes"):
            assert a.search(query) == b.search(query)
