"""Inputs given as fsspec URLs (s3://, gs://, ... here the in-memory filesystem, the same code path):
folders and globs expand to URLs, and the reader streams them like local files."""

from __future__ import annotations

import gzip
import json

import fsspec
import pytest

from components.data.readers import CrawlReader, InputError, resolve_inputs


@pytest.fixture
def bucket():
    fs = fsspec.filesystem("memory")
    rows = [{"text": f"Document number {i} about rivers and the sea.", "id": f"doc-{i}",
             "url": f"https://example.org/{i}"} for i in range(5)]
    with fs.open("/bucket/crawl/part-0.jsonl.gz", "wb") as f:
        f.write(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    with fs.open("/bucket/crawl/part-1.jsonl", "wb") as f:
        f.write(b'{"text": "Another document.", "id": "other"}\nnot json\n')
    with fs.open("/bucket/crawl/notes.txt", "wb") as f:
        f.write(b"not an input")
    yield "memory://bucket/crawl"
    fs.rm("/bucket", recursive=True)


def test_folder_url_expands_to_data_files_only(bucket):
    files = resolve_inputs([bucket])
    assert [f.rsplit("/", 1)[1] for f in files] == ["part-0.jsonl.gz", "part-1.jsonl"]
    assert all(f.startswith("memory://") for f in files)


def test_reader_streams_urls_and_counts_bad_lines(bucket, tmp_path):
    files = resolve_inputs([f"{bucket}/*.jsonl*"])
    reader = CrawlReader(files, report_dir=str(tmp_path))
    docs = list(reader.run())
    assert sorted(d.id for d in docs) == sorted([f"doc-{i}" for i in range(5)] + ["other"])
    reports = [json.loads(line) for line in (tmp_path / "00000.jsonl").read_text().splitlines()]
    assert {r["path"].rsplit("/", 1)[1]: r["skipped"] for r in reports} == {
        "part-0.jsonl.gz": {}, "part-1.jsonl": {"malformed_json": 1}}


def test_url_matching_nothing_is_refused(bucket):
    with pytest.raises(InputError, match="matches no file"):
        resolve_inputs([f"{bucket}/missing/*.warc.gz"])
