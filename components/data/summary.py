"""Numbers from a finished data-stage run: the funnel, drop reasons, input skips and headline metrics.

Inputs are what `run_jobs` returns (job -> [(our block name, datatrove stats dict)]), the per-file
`FileReport`s the crawl reader wrote, and the Parquet shards themselves. The shards are read too, so
the summary can prove that every document the stats count as dropped is in an exclusion shard and every
forwarded one is in the kept shards: stats that do not add up are reported, never silently trusted."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.data.pipeline import PII, READER, DataStageLayout
from components.data.readers import FileReport

Stats = dict[str, list[tuple[str, dict]]]

# Steps that move or index documents without deciding about them: not rows of the funnel.
NON_FUNNEL_STEPS = frozenset({"filtered_writer", "minhash_signatures", "minhash_buckets", "minhash_cluster",
                              "filtered_reader", "kept_writer"})
# Steps that rewrite the text they forward, so characters in != characters out minus the drops.
TEXT_CHANGING_STEPS = frozenset({"text_extraction", "c4_quality", PII})
PII_STATS = {"pii_emails": "emails", "pii_ips": "ips", "pii_phones": "phones",
             "documents_with_pii": "documents"}


class StatsMismatchError(RuntimeError):
    """The datatrove stats and the written shards disagree: documents were lost or double counted."""

    def __init__(self, violations: list[str]):
        self.violations = violations
        super().__init__("data stage stats do not add up:\n  - " + "\n  - ".join(violations))


@dataclass
class FunnelRow:
    """One decision step. For the reader: in = input records, forwarded = documents read, dropped =
    records skipped, and `bytes_in` the input bytes. `chars_out` is datatrove's `doc_len` total of the
    forwarded documents; `chars_source` says where it came from ("stats", "writer" = the writer right
    after the step, "derived" = a neighbour's count plus/minus the exclusion shards, "unknown")."""

    step: str
    job: str
    documents_in: int
    forwarded: int
    dropped: int
    chars_out: int | None = None
    chars_source: str = "unknown"
    bytes_in: int | None = None


@dataclass
class DropReason:
    block: str
    reason: str
    documents: int


@dataclass
class InputSkip:
    path: str
    reason: str
    records: int


@dataclass
class ShardTotals:
    """What a folder of Parquet shards holds (read from the files, not from the stats)."""

    documents: int = 0
    chars: int = 0
    bytes: int = 0
    files: int = 0


@dataclass
class DataSummary:
    stats: Stats
    inputs: list[FileReport]
    funnel: list[FunnelRow]
    drop_reasons: list[DropReason]
    input_skips: list[InputSkip]
    pii: dict[str, int]
    kept: ShardTotals
    excluded: dict[str, ShardTotals]
    violations: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for metrics.json / logging)."""
        return {
            "stats": {job: [[name, entry] for name, entry in blocks] for job, blocks in self.stats.items()},
            "funnel": [asdict(r) for r in self.funnel],
            "drop_reasons": [asdict(r) for r in self.drop_reasons],
            "input_skips": [asdict(s) for s in self.input_skips],
            "inputs": [asdict(r) for r in self.inputs],
            "pii": self.pii,
            "kept": asdict(self.kept),
            "excluded": {k: asdict(v) for k, v in self.excluded.items()},
            "violations": self.violations,
            "metrics": self.metrics,
        }


# --- Reading -----------------------------------------------------------------------------------


def stat_total(value: Any) -> float:
    """A datatrove stat as one number: counters serialize as plain numbers, metrics as dicts."""
    if isinstance(value, dict):
        return value.get("total", 0) or 0
    return value or 0


def _int_stat(stats: dict, key: str) -> int:
    return int(stat_total(stats.get("stats", {}).get(key, 0)))


def _doc_len(stats: dict) -> tuple[int, int] | None:
    """(total characters, documents) of datatrove's doc_len stat, or None when the block has none."""
    value = stats.get("stats", {}).get("doc_len")
    if value is None or value == 0:
        return None
    if isinstance(value, dict):
        total = int(value.get("total", 0))
        mean = value.get("mean", 1)
        n = int(value.get("n", total if mean == 1 else 1))  # datatrove omits n when it equals total
        return total, n
    return int(value), 1


def load_input_reports(layout: DataStageLayout) -> list[FileReport]:
    """The reader's per-file reports (one JSONL per rank), sorted by path."""
    reports = []
    for path in sorted(layout.input_reports.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                reports.append(FileReport(**json.loads(line)))
    return sorted(reports, key=lambda r: r.path)


def read_stats(path: str | Path) -> Stats:
    """Stats saved as JSON back into `run_jobs`' shape, to rebuild a report without rerunning. Takes
    `{job: [[block, stats], ...]}` or a saved `DataSummary.to_dict()` (which carries them as "stats")."""
    data = json.loads(Path(path).read_text())
    if "funnel" in data and isinstance(data.get("stats"), dict):
        data = data["stats"]
    return {job: [(name, entry) for name, entry in blocks] for job, blocks in data.items()}


def shard_totals(folder: Path) -> ShardTotals:
    """Documents, characters (code points, as datatrove's doc_len) and UTF-8 bytes of a shard folder."""
    totals = ShardTotals()
    for path in sorted(folder.glob("*.parquet")):
        text = pq.read_table(path, columns=["text"]).column("text")
        totals.files += 1
        totals.documents += len(text)
        totals.chars += int(pc.sum(pc.utf8_length(text)).as_py() or 0)
        totals.bytes += int(pc.sum(pc.binary_length(text)).as_py() or 0)
    return totals


def excluded_totals(layout: DataStageLayout) -> dict[str, ShardTotals]:
    if not layout.excluded.exists():
        return {}
    return {d.name: shard_totals(d) for d in sorted(layout.excluded.iterdir()) if d.is_dir()}


# --- Funnel ------------------------------------------------------------------------------------


def _steps(stats: Stats) -> list[tuple[str, str, dict, dict | None]]:
    """(job, step, stats, stats of the next block in the same job) for every block, in pipeline order."""
    out = []
    for job, blocks in stats.items():
        for i, (name, entry) in enumerate(blocks):
            following = blocks[i + 1][1] if i + 1 < len(blocks) else None
            out.append((job, name, entry, following))
    return out


def build_funnel(stats: Stats, inputs: list[FileReport] | None = None,
                 excluded: dict[str, ShardTotals] | None = None) -> list[FunnelRow]:
    """One row per decision step in pipeline order (writers, signatures, buckets, clusters skipped).

    Blocks that do not count characters themselves (our HTML extractor's pass-through documents,
    MinHash stage 4, PII) get them from the writer right after them or, for steps that do not change
    text, from a neighbour's count and the characters in the exclusion shards."""
    inputs = inputs or []
    excluded = excluded or {}
    rows: list[FunnelRow] = []
    for job, step, entry, following in _steps(stats):
        if step in NON_FUNNEL_STEPS:
            continue
        s = entry.get("stats", {})
        if step == READER:
            records = sum(r.records for r in inputs) if inputs else _int_stat(entry, "documents")
            skipped = sum(sum(r.skipped.values()) for r in inputs)
            row = FunnelRow(step, job, records, _int_stat(entry, "documents"), skipped,
                            bytes_in=sum(r.bytes for r in inputs) if inputs else None)
        else:
            total = _int_stat(entry, "total")
            is_filter = "forwarded" in s or "dropped" in s
            forwarded = _int_stat(entry, "forwarded") if is_filter else total
            row = FunnelRow(step, job, total, forwarded, _int_stat(entry, "dropped"))
        doc_len = _doc_len(entry)
        writer_len = _doc_len(following) if following is not None else None
        if doc_len and doc_len[1] == row.forwarded:
            row.chars_out, row.chars_source = doc_len[0], "stats"
        elif row.forwarded == 0:
            row.chars_out, row.chars_source = 0, "stats"
        elif writer_len and writer_len[1] == row.forwarded:
            row.chars_out, row.chars_source = writer_len[0], "writer"
        rows.append(row)
    _derive_chars(rows, excluded)
    return rows


def _derive_chars(rows: list[FunnelRow], excluded: dict[str, ShardTotals]) -> None:
    """A filter that does not rewrite text forwards exactly its input minus what it excluded."""

    def excl(step: str) -> int | None:
        totals = excluded.get(step)
        # text extraction blanks the text of what it drops: its shards carry no character count
        return totals.chars if totals is not None and step != "text_extraction" else None

    changed = True
    while changed:
        changed = False
        for i, row in enumerate(rows):
            if row.chars_out is not None:
                continue
            prev = rows[i - 1] if i > 0 else None
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if (prev and prev.chars_out is not None and row.step not in TEXT_CHANGING_STEPS
                    and row.step != READER and excl(row.step) is not None):
                row.chars_out = prev.chars_out - excl(row.step)
            elif (nxt and nxt.chars_out is not None and nxt.step not in TEXT_CHANGING_STEPS
                  and (excl(nxt.step) is not None or nxt.dropped == 0)):
                row.chars_out = nxt.chars_out + (excl(nxt.step) or 0)
            else:
                continue
            row.chars_source = "derived"
            changed = True


def collect_drop_reasons(stats: Stats) -> list[DropReason]:
    """(block, reason, documents) from datatrove's `dropped_<reason>` stats. Drops counted without a
    reason (MinHash stage 4 gives none) get the block's name, as their `filter_reason` in the shards."""
    out = []
    for _, step, entry, _ in _steps(stats):
        s = entry.get("stats", {})
        reasons = [(k.removeprefix("dropped_"), int(stat_total(v))) for k, v in s.items()
                   if k.startswith("dropped_") and stat_total(v)]
        rest = _int_stat(entry, "dropped") - sum(n for _, n in reasons)
        if rest > 0:
            reasons.append((step, rest))
        out += [DropReason(step, r, n) for r, n in sorted(reasons, key=lambda rn: (-rn[1], rn[0]))]
    return out


def collect_input_skips(inputs: Iterable[FileReport]) -> list[InputSkip]:
    return [InputSkip(r.path, reason, int(n)) for r in inputs for reason, n in sorted(r.skipped.items()) if n]


def collect_pii(stats: Stats) -> dict[str, int]:
    """Replacements per PII kind (emails / ips / phones) and documents with any, from the PII step."""
    for _, step, entry, _ in _steps(stats):
        if step == PII:
            return {kind: _int_stat(entry, key) for key, kind in PII_STATS.items()}
    return {}


# --- Checks ------------------------------------------------------------------------------------


def check_stats(funnel: list[FunnelRow], inputs: list[FileReport] | None = None,
                kept: ShardTotals | None = None,
                excluded: dict[str, ShardTotals] | None = None) -> list[str]:
    """Every way the counts can disagree, as sentences; empty when they all add up.

    Per filter total == forwarded + dropped; each step reads what the previous one forwarded; the
    reader's count matches its file reports; the kept shards hold what the last step forwarded and each
    exclusion folder what its block dropped."""
    problems = []
    for prev, row in zip([None, *funnel], funnel, strict=False):
        if row.step != READER and row.documents_in != row.forwarded + row.dropped:
            problems.append(f"{row.step}: total {row.documents_in} != forwarded {row.forwarded} + dropped "
                            f"{row.dropped}")
        if prev is not None and row.documents_in != prev.forwarded:
            problems.append(f"{row.step} read {row.documents_in} documents but {prev.step} forwarded "
                            f"{prev.forwarded}")
    if inputs:
        documents = sum(r.documents for r in inputs)
        readers = [r for r in funnel if r.step == READER]
        if readers and readers[0].forwarded != documents:
            problems.append(f"reader counted {readers[0].forwarded} documents, its file reports {documents}")
    if kept is not None and funnel and kept.documents != funnel[-1].forwarded:
        problems.append(f"kept shards hold {kept.documents} documents but {funnel[-1].step} forwarded "
                        f"{funnel[-1].forwarded}")
    if excluded is not None:
        dropped = {r.step: r.dropped for r in funnel if r.step != READER}
        for block in sorted(set(dropped) | set(excluded)):
            written = excluded[block].documents if block in excluded else 0
            if written != dropped.get(block, 0):
                problems.append(f"excluded/{block} holds {written} documents but the stats count "
                                f"{dropped.get(block, 0)} dropped")
    return problems


# --- Summary -----------------------------------------------------------------------------------


def headline_metrics(funnel: list[FunnelRow], inputs: list[FileReport], kept: ShardTotals,
                     pii: dict[str, int], excluded: dict[str, ShardTotals]) -> dict[str, float]:
    """Flat, slash-named numbers for experiment tracking."""
    reader = next((r for r in funnel if r.step == READER), None)
    read = reader.forwarded if reader else sum(r.documents for r in inputs)
    n_excluded = sum(t.documents for t in excluded.values())
    metrics: dict[str, float] = {
        "data/input_files": len(inputs),
        "data/input_files_with_errors": sum(1 for r in inputs if r.error),
        "data/input_bytes": sum(r.bytes for r in inputs),
        "data/records": sum(r.records for r in inputs),
        "data/skipped_records": sum(sum(r.skipped.values()) for r in inputs),
        "data/documents_read": read,
        "data/documents_kept": kept.documents,
        "data/documents_excluded": n_excluded,
        # read but in no shard: must be 0 (nothing disappears without a reason)
        "data/documents_unaccounted": read - kept.documents - n_excluded,
        "data/kept_fraction": kept.documents / read if read else 0.0,
        "data/chars_kept": kept.chars,
        "data/bytes_kept": kept.bytes,
    }
    if reader and reader.chars_out:
        metrics["data/chars_read"] = reader.chars_out
    for row in funnel:
        if row.step not in (READER, PII):  # PII rewrites text, it drops nothing
            metrics[f"data/dropped/{row.step}"] = row.dropped
    for kind, n in pii.items():
        metrics[f"data/pii/{kind}"] = n
    return metrics


def summarize(layout: DataStageLayout, stats: Stats, *, strict: bool = False) -> DataSummary:
    """Everything the report and catalog need from one finished run.

    With `strict`, counts that do not add up raise `StatsMismatchError`; otherwise they are returned
    in `violations` (and the report shows them)."""
    inputs = load_input_reports(layout)
    excluded = excluded_totals(layout)
    kept = shard_totals(layout.kept) if layout.kept.exists() else ShardTotals()
    funnel = build_funnel(stats, inputs, excluded)
    drops = collect_drop_reasons(stats)
    pii = collect_pii(stats)
    violations = check_stats(funnel, inputs, kept, excluded)
    if strict and violations:
        raise StatsMismatchError(violations)
    return DataSummary(
        stats=stats, inputs=inputs, funnel=funnel, drop_reasons=drops,
        input_skips=collect_input_skips(inputs), pii=pii, kept=kept, excluded=excluded,
        violations=violations, metrics=headline_metrics(funnel, inputs, kept, pii, excluded),
    )
