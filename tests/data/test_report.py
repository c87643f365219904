"""The markdown report and funnel chart: every section present, numbers from the summary, deterministic."""

from __future__ import annotations

import pytest

from components.data.evaluation import evaluate
from components.data.report import minhash_settings, write_report
from components.data.summary import summarize
from tests.data.test_summary import build_fake_run

MINHASH = {"n_grams": 5, "num_buckets": 14, "hashes_per_bucket": 8, "seed": 1}


@pytest.fixture
def run(tmp_path):
    layout, stats, truth = build_fake_run(tmp_path)
    return layout, summarize(layout, stats), evaluate(layout, truth)


def test_report_sections_and_numbers(run):
    layout, summary, ev = run
    path = write_report(layout, summary, ev, {"minhash": MINHASH, "fineweb_char_duplicates_ratio": 0.01,
                                              "git_commit": "abc123"})
    assert path == layout.report / "report.md"
    md = path.read_text()
    for heading in ("# Data stage report", "## Inputs", "## Funnel", "## Drop reasons",
                    "## Filters against the ground truth", "## PII", "## MinHash deduplication",
                    "## FineWeb's duplicated-line threshold", "## Run"):
        assert heading in md, heading
    assert "| reader | 19 | 4 | 15 | 100.0% |" in md
    assert "| minhash_dedup | 11 | 3 | 8 | 53.3% |" in md
    assert "| language_filter | language_de | 2 |" in md
    assert "| language_filter | 1 | 1 | 2 | 0 | 0 | 0 | 0.333 | 1.000 |" in md
    assert "| gopher_quality | 1 | 0 | 0 | 1 | 1 | 0 | n/a | 0.000 |" in md
    assert "2 of 4 clusters that reached dedup were right" in md
    assert "| email | 1 | 0 | 0.000 |" in md and "Still present: email `jane.doe@example.com`" in md
    assert "14 buckets x 8 hashes (112 hashes per document)" in md
    assert "paper gives that share as 0.1" in md and "use 0.01. We follow the code" in md
    assert "This run used **0.01**." in md
    assert "| git_commit | abc123 |" in md
    assert "ground-truth documents are in no shard, e.g. x1" in md  # the lost document is flagged
    assert "![funnel](funnel.png)" in md


def test_funnel_png(run):
    layout, summary, ev = run
    write_report(layout, summary, ev)
    png = (layout.report / "funnel.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_without_evaluation_or_extra(run):
    layout, summary, _ = run
    md = write_report(layout, summary).read_text()
    assert "ground truth" not in md.lower()
    assert "## Run" not in md
    assert "## MinHash deduplication" not in md  # no executor.json and no extra: nothing to show
    assert "## FineWeb's duplicated-line threshold" in md  # the note stands without the value


def test_settings_read_from_datatrove_executor_json(run):
    layout, summary, _ = run
    logs = layout.work / "logs" / "minhash_cluster"
    logs.mkdir(parents=True)
    (logs / "executor.json").write_text(
        '{"pipeline": [{"config": {"n_grams": 5, "num_buckets": 14, "hashes_per_bucket": 8, "seed": 1}}],'
        ' "depends": {"pipeline": [{"char_duplicates_ratio": 0.01}]}}')
    assert minhash_settings(layout, None)["num_buckets"] == 14
    md = write_report(layout, summary).read_text()
    assert "14 buckets x 8 hashes" in md and "This run used **0.01**." in md


def test_violations_are_shown(run):
    layout, summary, _ = run
    summary.violations = ["url_filter: total 15 != forwarded 13 + dropped 1"]
    md = write_report(layout, summary).read_text()
    assert "**Counts that do not add up:**" in md and "url_filter: total 15" in md


def test_report_is_deterministic(run):
    layout, summary, ev = run
    first = write_report(layout, summary, ev).read_text()
    png = (layout.report / "funnel.png").read_bytes()
    assert write_report(layout, summary, ev).read_text() == first
    assert (layout.report / "funnel.png").read_bytes() == png


def test_settings_from_the_data_config(run):
    layout, summary, _ = run
    config = {"minhash": {**MINHASH, "enabled": True, "num_buckets": 20, "hashes_per_bucket": 5},
              "filters": {"fineweb_quality": {"char_duplicates_ratio": 0.01}}}
    md = write_report(layout, summary, extra={"config": config}).read_text()
    assert "20 buckets x 5 hashes (100 hashes per document)" in md
    assert "This run used **0.01**." in md
    assert "## Configuration" in md and '"num_buckets": 20' in md
    assert "## Run" not in md
