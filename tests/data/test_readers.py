"""The crawl reader on real WARC samples and on broken input: every record becomes a document or is
counted under a reason (`records == documents + sum(skipped)`), nothing is lost silently, and inputs the
stage cannot read are refused up front with a message that names the file."""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import asdict
from io import BytesIO
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.data.blocks import HTML_FORMAT
from components.data.readers import CrawlReader, FileReport, InputError, resolve_inputs
from tests.data.conftest import WARC_SAMPLES

# What each real sample holds (see ../shared/datasets/README.md), read with warcio record by record.
SAMPLE_REPORTS = {
    "resiliparse": (50, 16, {"warc_warcinfo_record": 1, "warc_request_record": 17,
                             "warc_metadata_record": 16}),
    "whirlwind": (4, 1, {"warc_warcinfo_record": 1, "warc_request_record": 1, "warc_metadata_record": 1}),
    "warcio": (6, 1, {"warc_warcinfo_record": 2, "warc_request_record": 2, "warc_revisit_record": 1}),
    "chunked": (3, 1, {"warc_warcinfo_record": 1, "warc_request_record": 1}),
}
C1_OR_REPLACEMENT = re.compile("[\x80-\x9f\ufffd]")  # what a wrongly chosen codec leaves behind


def read(files: list, out: Path, **kwargs) -> tuple[list, list[FileReport], CrawlReader]:
    """Run the reader as the pipeline does (rank 0 of 1) and load the file reports it saved."""
    reader = CrawlReader([str(f) for f in files], report_dir=str(out), **kwargs)
    docs = list(reader.run())
    lines = (out / "00000.jsonl").read_text().splitlines()
    return docs, [FileReport(**json.loads(line)) for line in lines], reader


def read_one(path: Path, out: Path) -> tuple[list, FileReport]:
    docs, reports, _ = read([path], out)
    assert len(reports) == 1
    assert_accounted(reports[0], docs)
    return docs, reports[0]


def assert_accounted(report: FileReport, docs: list | None = None) -> None:
    assert report.records == report.documents + sum(report.skipped.values()), asdict(report)
    if docs is not None:
        assert report.documents == len(docs)


def write_warc(path: Path, records: list[tuple], gzipped: bool = True) -> None:
    """records: (type, url, http Content-Type or None, payload bytes); fixed ids and dates."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=gzipped)
        for i, (rec_type, url, content_type, payload) in enumerate(records):
            headers = {"WARC-Record-ID": f"<urn:uuid:00000000-0000-4000-8000-{i:012d}>",
                       "WARC-Date": "2024-03-01T12:00:00Z"}
            http = None
            if content_type is not None:
                http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            kwargs = {"warc_content_type": "text/plain"} if rec_type in ("conversion", "resource") else {}
            writer.write_record(writer.create_warc_record(url, rec_type, payload=BytesIO(payload),
                                                          warc_headers_dict=headers, http_headers=http,
                                                          **kwargs))


def html(body: str) -> bytes:
    return f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>".encode()


# --- Real WARC samples -------------------------------------------------------------------------


@pytest.mark.parametrize("sample", sorted(WARC_SAMPLES))
def test_real_warc_sample_accounts_for_every_record(warc_dir, tmp_path, sample):
    from warcio.archiveiterator import ArchiveIterator

    path = warc_dir / WARC_SAMPLES[sample]
    docs, report = read_one(path, tmp_path)
    with open(path, "rb") as f:
        records = list(ArchiveIterator(f))
    responses = [r.rec_headers.get_header("WARC-Target-URI") for r in records if r.rec_type == "response"]
    assert report.records == len(records)
    assert (report.records, report.documents, report.skipped) == SAMPLE_REPORTS[sample]
    assert report.error is None and report.bytes == path.stat().st_size and report.format == "warc"
    # every HTML response became a document (none undecodable), in file order, with its WARC metadata
    assert [d.metadata["url"] for d in docs] == responses
    assert len({d.id for d in docs}) == len(docs)
    for doc in docs:
        assert re.fullmatch(r"<urn:uuid:[0-9a-f-]{36}>", doc.id)
        assert doc.metadata["content_format"] == HTML_FORMAT and doc.metadata["source_format"] == "warc"
        assert doc.metadata["file_path"] == str(path) and doc.metadata["date"].startswith("20")
        assert "<html" in doc.text.lower() and "\ufffd" not in doc.text


def test_real_samples_read_together_match_the_reader_stats(warc_dir, tmp_path):
    files = resolve_inputs([str(warc_dir / name) for name in WARC_SAMPLES.values()])
    assert files == sorted(str(warc_dir / name) for name in WARC_SAMPLES.values())
    docs, reports, reader = read(files, tmp_path)
    assert [r.path for r in reports] == files
    for report in reports:
        assert_accounted(report)
    assert len(docs) == sum(r.documents for r in reports) == 19
    assert reader.stats["input_files"].total == 4 and reader.stats["documents"].total == 19
    reasons = {reason for r in reports for reason in r.skipped}
    assert {"warc_revisit_record", "warc_request_record", "warc_warcinfo_record"} <= reasons
    for reason in reasons:
        assert reader.stats[f"skipped_{reason}"].total == sum(r.skipped.get(reason, 0) for r in reports)


def test_chunked_transfer_encoding_is_decoded(warc_dir, tmp_path):
    from warcio.archiveiterator import ArchiveIterator

    path = warc_dir / WARC_SAMPLES["chunked"]
    with open(path, "rb") as f:
        raw = [r.raw_stream.read() for r in ArchiveIterator(f) if r.rec_type == "response"][0]
    assert re.match(rb"[0-9a-fA-F]+\r\n", raw), "precondition: the sample's payload is chunk-encoded"
    (doc,), _ = read_one(path, tmp_path)
    assert doc.metadata["url"] == "http://www.iana.org/"
    assert doc.text.lstrip().lower().startswith("<!doctype html>")
    assert doc.text.rstrip().endswith("</html>")
    assert not re.search(r"\r\n[0-9a-fA-F]{1,8}\r\n", doc.text), "chunk-size lines left in the text"


def test_real_pages_in_legacy_charsets_decode_as_a_browser_does(warc_dir, tmp_path):
    docs, _ = read_one(warc_dir / WARC_SAMPLES["resiliparse"], tmp_path)
    by_url = {d.metadata["url"]: d.text for d in docs}
    # windows-1251 from the HTTP header
    assert "<title>О компании - Стратегия пожарной безопасности</title>" in by_url["http://01spb.ru/company/"]
    # declared gb2312 but uses GBK characters (as browsers allow): was dropped as undecodable
    assert re.search(r"<title>正在播放", by_url["http://096355.com/video/11073.html?11073-0-2"])
    # declared iso-8859-1, written in windows-1252 (en dashes): no C1 control characters
    radsport = [text for url, text in by_url.items() if "live-radsport.ch" in url]
    assert len(radsport) == 2
    for text in radsport:
        assert not C1_OR_REPLACEMENT.search(text) and "–" in text


# --- Hand-made WARC records --------------------------------------------------------------------


def test_skip_reasons_for_each_kind_of_record(tmp_path):
    path = tmp_path / "kinds.warc.gz"
    write_warc(path, [
        ("warcinfo", "", None, b"software: test\r\n"),
        ("request", "https://example.org/a", None, b"GET /a HTTP/1.1\r\nHost: example.org\r\n\r\n"),
        ("response", "https://example.org/a", "text/html; charset=utf-8", html("<p>A page.</p>")),
        ("response", "https://example.org/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
        ("response", "https://example.org/paper.pdf", "application/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"),
        ("response", "https://example.org/empty", "text/html", b"  \r\n "),
        ("response", "https://example.org/latin", "text/html", html("<p>caf\xe9</p>").replace(b"\xc3\xa9",
                                                                                            b"\xe9\xff")),
        ("resource", "https://example.org/notes.txt", None, b"a resource"),
        ("metadata", "https://example.org/a", None, b"fetchTimeMs: 12\r\n"),
        ("conversion", "https://example.org/doc", None, b"Text converted from a PDF."),
    ])
    docs, report = read_one(path, tmp_path / "out")
    assert report.skipped == {"warc_warcinfo_record": 1, "warc_request_record": 1, "non_html": 2,
                              "empty_payload": 1, "undecodable": 1, "warc_resource_record": 1,
                              "warc_metadata_record": 1}
    assert report.records == 10 and report.error is None
    assert [(d.metadata["url"], d.metadata["content_format"]) for d in docs] == [
        ("https://example.org/a", HTML_FORMAT), ("https://example.org/doc", "text")]
    assert docs[0].id == "<urn:uuid:00000000-0000-4000-8000-000000000002>"
    assert docs[1].text == "Text converted from a PDF."


@pytest.mark.parametrize(("content_type", "body", "expected"), [
    ("text/html", '<meta charset="gbk"><p>中文网页的内容</p>'.encode("gbk"), "中文网页的内容"),
    ("text/html; charset=gb2312", "<p>朱镕基</p>".encode("gbk"), "朱镕基"),  # 镕 is GBK, not GB2312
    ("text/html; charset=iso-8859-1", b"<p>\x93quoted\x94 \x96 dash</p>", "“quoted” – dash"),
    ('text/html; charset="windows-1251"', "<p>Привет</p>".encode("cp1251"), "Привет"),
    ("text/html", b'<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
     + "<p>日本語</p>".encode("shift_jis"), "日本語"),
])
def test_declared_charsets_decode(tmp_path, content_type, body, expected):
    path = tmp_path / "charset.warc"
    write_warc(path, [("response", "https://example.org/", content_type, body)], gzipped=False)
    docs, report = read_one(path, tmp_path / "out")
    assert report.skipped == {} and len(docs) == 1
    assert expected in docs[0].text and not C1_OR_REPLACEMENT.search(docs[0].text)


# --- Broken files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_sample(warc_dir, tmp_path_factory) -> tuple[bytes, list]:
    path = warc_dir / WARC_SAMPLES["resiliparse"]
    docs, _ = read_one(path, tmp_path_factory.mktemp("full"))
    return path.read_bytes(), docs


def assert_intact_prefix(docs: list, full: list) -> None:
    """What was read before the damage is exactly what an intact file gives (no garbled document)."""
    assert [(d.id, d.text) for d in docs] == [(d.id, d.text) for d in full[:len(docs)]]


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_gzip_warc_reports_its_lost_tail(full_sample, tmp_path, cut):
    data, full = full_sample
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[:int(len(data) * cut)])
    docs, report = read_one(path, tmp_path / "out")
    assert 0 < len(docs) < len(full)
    assert_intact_prefix(docs, full)
    assert report.skipped["corrupt_or_truncated_file"] == 1
    assert "ends early" in report.error


def test_truncated_plain_warc_reports_the_cut_record(full_sample, tmp_path):
    data, full = full_sample
    plain = gzip.decompress(data)
    path = tmp_path / "cut.warc"
    path.write_bytes(plain[:len(plain) // 2])
    docs, report = read_one(path, tmp_path / "out")
    assert 0 < len(docs) < len(full)
    assert_intact_prefix(docs, full)
    assert report.skipped["corrupt_or_truncated_file"] == 1
    assert re.search(r"file ends inside record <urn:uuid:[0-9a-f-]+>", report.error)


@pytest.mark.parametrize("offset", [0.25, 0.45, 0.7])
def test_corrupt_gzip_warc_stops_at_the_damage(full_sample, tmp_path, offset):
    data, full = full_sample
    mangled = bytearray(data)
    start = int(len(data) * offset)
    for i in range(start, start + 32):
        mangled[i] ^= 0x5A
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(bytes(mangled))
    docs, report = read_one(path, tmp_path / "out")
    assert len(docs) < len(full)
    assert_intact_prefix(docs, full)
    assert report.skipped["corrupt_or_truncated_file"] == 1 and report.error


def test_file_that_is_not_gzip_at_all(full_sample, tmp_path):
    data, _ = full_sample
    path = tmp_path / "notgzip.warc.gz"
    path.write_bytes(b"\x00\x00" + data[2:])
    docs, report = read_one(path, tmp_path / "out")
    assert docs == [] and report.skipped == {"corrupt_or_truncated_file": 1}
    assert "Not a gzipped file" in report.error


def test_file_that_is_not_a_warc(tmp_path):
    path = tmp_path / "page.warc"
    path.write_bytes(b"<html><body>not an archive</body></html>\n")
    docs, report = read_one(path, tmp_path / "out")
    assert docs == [] and report.skipped == {"unreadable_file_ArchiveLoadFailed": 1}
    assert report.error.startswith("ArchiveLoadFailed")


@pytest.mark.parametrize("name", ["empty.warc.gz", "empty.warc", "empty.jsonl", "empty.jsonl.gz",
                                  "empty.parquet"])
def test_empty_files_are_skipped_with_a_reason(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    docs, report = read_one(path, tmp_path / "out")
    assert docs == [] and report.skipped == {"empty_file": 1} and report.error is None


def jsonl_rows(n: int) -> list[dict]:
    return [{"text": f"Document number {i} has some text.", "id": f"doc-{i}"} for i in range(n)]


def test_malformed_jsonl_lines_are_counted_and_good_lines_around_them_kept(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"text": "First good line.", "id": "first"}).encode(),
        b'{"text": "no closing brace"',
        b"",  # blank lines are not records
        b'{"text": "caf\xe9 is not UTF-8"}',  # undecodable bytes
        b"[1, 2, 3]",
        json.dumps({"text": "", "id": "empty"}).encode(),
        json.dumps({"id": "no-text"}).encode(),
        json.dumps({"text": 42}).encode(),
        json.dumps({"text": "Middle good line.", "url": "https://example.org/m", "dump": "CC-MAIN-2024-10",
                    "language": "en", "extra": "dropped"}).encode(),
        b"not json at all",
        json.dumps({"text": "Last good line.", "id": "last"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs, report = read_one(path, tmp_path / "out")
    assert [d.text for d in docs] == ["First good line.", "Middle good line.", "Last good line."]
    assert report.skipped == {"malformed_json": 3, "not_an_object": 1, "no_text": 3}
    assert report.records == 10 and report.error is None
    first, middle, last = docs
    assert (first.id, last.id) == ("first", "last")
    assert middle.id == f"{path}/8"  # no id: file and line number
    assert middle.metadata == {"url": "https://example.org/m", "dump": "CC-MAIN-2024-10", "language": "en",
                               "file_path": str(path), "source_format": "jsonl", "content_format": "text"}


def test_truncated_jsonl_gz_keeps_the_lines_before_the_cut(tmp_path):
    rows = jsonl_rows(400)
    data = gzip.compress(("\n".join(json.dumps(r) for r in rows) + "\n").encode(), mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[:len(data) // 2])
    docs, report = read_one(path, tmp_path / "out")
    assert 0 < len(docs) < len(rows)
    assert [d.id for d in docs] == [r["id"] for r in rows[:len(docs)]]
    assert report.skipped == {"corrupt_or_truncated_file": 1}
    assert report.error.startswith("EOFError")


def test_corrupt_jsonl_gz_is_reported(tmp_path):
    rows = jsonl_rows(400)
    data = bytearray(gzip.compress(("\n".join(json.dumps(r) for r in rows) + "\n").encode(), mtime=0))
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(bytes(data))
    docs, report = read_one(path, tmp_path / "out")
    assert len(docs) < len(rows)
    assert [d.id for d in docs] == [r["id"] for r in rows[:len(docs)]]
    assert report.skipped == {"corrupt_or_truncated_file": 1} and report.error


def test_parquet_without_text_column_is_skipped_naming_the_file(tmp_path):
    path = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"url": ["https://a.org", "https://b.org", "https://c.org"],
                             "content": ["x", "y", "z"]}), path)
    docs, report = read_one(path, tmp_path / "out")
    assert docs == [] and report.skipped == {"no_text_column": 3} and report.records == 3
    assert str(path) in report.error and "content" in report.error


def test_parquet_rows_become_documents_with_fineweb_columns(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": ["One.", None, "Three."], "id": ["a", "b", None],
                             "url": ["https://a.org/1", "https://a.org/2", "https://a.org/3"],
                             "language_score": [0.9, 0.8, 0.7], "other": [1, 2, 3]}), path)
    docs, report = read_one(path, tmp_path / "out")
    assert report.skipped == {"no_text": 1}
    assert [(d.id, d.text) for d in docs] == [("a", "One."), (f"{path}/2", "Three.")]
    assert docs[0].metadata == {"url": "https://a.org/1", "language_score": 0.9, "file_path": str(path),
                                "source_format": "parquet", "content_format": "text"}


def test_limit_stops_reading_and_keeps_the_counts_exact(warc_dir, tmp_path):
    files = [warc_dir / WARC_SAMPLES["resiliparse"], warc_dir / WARC_SAMPLES["whirlwind"]]
    docs, reports, reader = read(files, tmp_path, limit=3)
    assert len(docs) == 3 and reader.stats["documents"].total == 3
    assert [r.path for r in reports] == [str(files[0])], "the second file must not be opened"
    assert_accounted(reports[0], docs)
    assert reports[0].records < SAMPLE_REPORTS["resiliparse"][0]


# --- Resolving inputs --------------------------------------------------------------------------


def test_resolve_inputs_expands_folders_and_skips_bookkeeping_files(tmp_path):
    for name in ["b/x.jsonl.gz", "a.warc.gz", "b/y.parquet", "README.md", "manifest.json",
                 "ground_truth.jsonl", ".hidden.jsonl", "_SUCCESS", ".cache/z.jsonl",
                 "_temporary/0/part.parquet", "b/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert resolve_inputs([str(tmp_path)]) == [str(tmp_path / n) for n in ("a.warc.gz", "b/x.jsonl.gz",
                                                                          "b/y.parquet")]
    # the same file through a folder and a glob is read once
    assert resolve_inputs([str(tmp_path / "b"), str(tmp_path / "b" / "*.parquet")]) == [
        str(tmp_path / "b/x.jsonl.gz"), str(tmp_path / "b/y.parquet")]


def test_unknown_extension_is_refused_naming_the_file(tmp_path):
    (tmp_path / "crawl.warc.gz").write_bytes(b"")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InputError, match=re.escape(str(notes))):
        resolve_inputs([str(notes)])
    with pytest.raises(InputError, match=re.escape(str(notes))):  # a glob that catches it too
        resolve_inputs([str(tmp_path / "*")])


@pytest.mark.parametrize("spec", ["nothing-*.warc.gz", "missing.jsonl", "no/such/folder"])
def test_input_matching_nothing_is_refused(tmp_path, spec):
    with pytest.raises(InputError, match=rf"input '{re.escape(str(tmp_path / spec))}' matches no file"):
        resolve_inputs([str(tmp_path / spec)])


def test_no_inputs_is_refused():
    with pytest.raises(InputError, match="no inputs given"):
        resolve_inputs([])


def test_zstd_jsonl_is_read_or_refused_up_front(tmp_path):
    path = tmp_path / "rows.jsonl.zst"
    if "zstd" not in fsspec.available_compressions():
        path.write_bytes(b"(\xb5/\xfd")  # zstd magic: never handed to the JSON parser as text
        with pytest.raises(InputError, match=re.escape(str(path)) + ".*zstandard"):
            resolve_inputs([str(path)])
        return
    with fsspec.open(str(path), "wb", compression="zstd") as f:
        f.write(b"\n".join(json.dumps(r).encode() for r in jsonl_rows(3)))
    docs, report = read_one(Path(resolve_inputs([str(path)])[0]), tmp_path / "out")
    assert [d.id for d in docs] == ["doc-0", "doc-1", "doc-2"] and report.skipped == {}
