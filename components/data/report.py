"""The data stage's human-readable report: report.md and funnel.png under `layout.report`.

Deterministic (no timestamps, sorted tables) so that DVC sees a change only when the run changed.
Settings the report explains (MinHash, FineWeb's duplicated-line ratio) come from `extra` when the
caller passes them (`extra["config"]` = the data config, or `extra["minhash"]` and
`extra["fineweb_char_duplicates_ratio"]`), else from the executor.json files datatrove saved next to
its logs. Other `extra` keys are listed under "Run"."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from components.data.evaluation import KEPT, Evaluation
from components.data.pipeline import DEDUP, PII, READER, DataStageLayout
from components.data.summary import DataSummary

MAX_FILE_ROWS = 50  # input files listed one by one; the rest are summed up
FINEWEB_PAPER_CHAR_DUP_RATIO = 0.1
FINEWEB_CODE_CHAR_DUP_RATIO = 0.01


# --- Formatting --------------------------------------------------------------------------------


def _n(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}"
    return f"{int(value):,}"


def _pct(num: float | None, den: float | None) -> str:
    return "n/a" if num is None or not den else f"{100 * num / den:.1f}%"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; `align` = one letter per column (l/r), numbers right by default."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- Settings ----------------------------------------------------------------------------------


def _find_key(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        values = obj.values()
    elif isinstance(obj, list):
        values = obj
    else:
        return None
    for value in values:
        found = _find_key(value, key)
        if found is not None:
            return found
    return None


def _executor_setting(layout: DataStageLayout, key: str) -> Any:
    """A block setting as datatrove saved it in work/logs/<job>/executor.json (None if absent)."""
    for path in sorted((layout.work / "logs").glob("*/executor.json")):
        try:
            found = _find_key(json.loads(path.read_text()), key)
        except (OSError, json.JSONDecodeError):
            continue
        if found is not None:
            return found
    return None


def _config(extra: dict | None, *keys: str) -> Any:
    """extra["config"][k1][k2]... (the data config the caller passed), or None."""
    value: Any = (extra or {}).get("config")
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def minhash_settings(layout: DataStageLayout, extra: dict | None) -> dict | None:
    config = ((extra or {}).get("minhash") or _config(extra, "minhash")
              or _executor_setting(layout, "config"))
    if not isinstance(config, dict) or "num_buckets" not in config:
        return None
    return dict(config)


def _match_probability(similarity: float, buckets: int, rows: int) -> float:
    """Chance that two documents with this Jaccard similarity share at least one MinHash bucket."""
    return 1 - (1 - similarity**rows) ** buckets


# --- Sections ----------------------------------------------------------------------------------


def _headline(summary: DataSummary, evaluation: Evaluation | None) -> list[str]:
    m = summary.metrics
    lines = [
        f"- **{_n(m['data/documents_read'])}** documents read from **{_n(m['data/input_files'])}** files "
        f"({_n(m['data/input_bytes'])} bytes, {_n(m['data/records'])} records, "
        f"{_n(m['data/skipped_records'])} records skipped)",
        f"- **{_n(m['data/documents_kept'])}** kept "
        f"({_pct(m['data/documents_kept'], m['data/documents_read'])}), "
        f"{_n(m['data/chars_kept'])} characters / {_n(m['data/bytes_kept'])} UTF-8 bytes of text",
        f"- {_n(m['data/documents_excluded'])} excluded with a reason; "
        f"{_n(m['data/documents_unaccounted'])} read but in no shard",
    ]
    if evaluation is not None:
        lines.append(f"- {_n(evaluation.lost_documents)} ground-truth documents lost (in neither kept nor "
                     f"excluded shards)")
    problems = list(summary.violations)
    if m.get("data/documents_unaccounted"):
        problems.append(f"{_n(m['data/documents_unaccounted'])} documents were read but are in no shard")
    if evaluation is not None and evaluation.lost_documents:
        problems.append(f"{evaluation.lost_documents} ground-truth documents are in no shard, e.g. "
                        + ", ".join(evaluation.lost_ids[:5]))
    if evaluation is not None and evaluation.duplicated_documents:
        problems.append(f"{evaluation.duplicated_documents} document ids were written more than once")
    if problems:
        lines += ["", "**Counts that do not add up:**", ""] + [f"- {p}" for p in problems]
    return lines


def _inputs(summary: DataSummary) -> list[str]:
    lines = ["## Inputs", ""]
    rows = []
    for r in summary.inputs[:MAX_FILE_ROWS]:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(r.skipped.items())) or "-"
        rows.append([f"`{r.path}`", r.format, _n(r.records), _n(r.documents), _n(r.bytes), skipped,
                     r.error or "-"])
    rest = summary.inputs[MAX_FILE_ROWS:]
    if rest:
        rows.append([f"... {len(rest)} more files", "", _n(sum(r.records for r in rest)),
                     _n(sum(r.documents for r in rest)), _n(sum(r.bytes for r in rest)), "", ""])
    lines.append(_table(["file", "format", "records", "documents", "bytes", "skipped", "error"], rows,
                        "llrrrll"))
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in summary.input_skips:
        totals[s.reason][0] += s.records
        totals[s.reason][1] += 1
    if totals:
        lines += ["", "Records skipped by the reader (not documents: WARC request/metadata records, non-HTML "
                  "payloads, unreadable rows or file tails):", ""]
        ordered = sorted(totals.items(), key=lambda kv: -kv[1][0])
        lines.append(_table(["reason", "records", "files"], [[k, _n(v[0]), _n(v[1])] for k, v in ordered]))
    return lines


def _funnel(summary: DataSummary) -> list[str]:
    funnel = summary.funnel
    reader = next((r for r in funnel if r.step == READER), None)
    base_docs = reader.forwarded if reader else (funnel[0].documents_in if funnel else 0)
    extracted = next((r.chars_out for r in funnel if r.step == "text_extraction"), None)
    rows = []
    for r in funnel:
        rows.append([r.step, _n(r.documents_in), _n(r.dropped), _n(r.forwarded), _pct(r.forwarded, base_docs),
                     _n(r.chars_out) + ("*" if r.chars_source == "derived" else ""),
                     _pct(r.chars_out, extracted) if extracted and r.chars_out is not None
                     and r.step not in (READER, "url_filter") else "-"])
    lines = ["## Funnel", "", "![funnel](funnel.png)", "",
             _table(["step", "in", "dropped", "documents after", "% of read", "characters after",
                     "% of extracted chars"], rows), ""]
    notes = ["For the reader, *in* counts input records and *dropped* the records skipped; characters up to "
             "the URL filter are raw HTML (WARC) or text (JSONL/Parquet) as read."]
    if any(r.chars_source == "derived" for r in funnel):
        notes.append("\\* derived: the block does not count characters itself, so the count is its "
                     "neighbour's plus or minus the characters in its exclusion shards (exact for blocks "
                     "that do not rewrite text).")
    if any(r.step == PII for r in funnel):
        notes.append("PII scrubbing drops nothing; its characters are those written to the kept shards.")
    return lines + "\n\n".join(notes).split("\n")


def _drops(summary: DataSummary) -> list[str]:
    if not summary.drop_reasons:
        return ["## Drop reasons", "", "No document was dropped."]
    rows = [[d.block, d.reason, _n(d.documents)] for d in summary.drop_reasons]
    return ["## Drop reasons", "", "From datatrove's `dropped_<reason>` stats; every dropped document is in "
            "`excluded/<block>/` with its `filter_reason`.", "",
            _table(["block", "reason", "documents"], rows, "llr")]


def _evaluation(evaluation: Evaluation) -> list[str]:
    rows = []
    for f in evaluation.filters:
        name = "(kept)" if f.block == KEPT else f.block
        rows.append([name, _n(f.planted), _n(f.caught), _n(f.false_positives), _n(f.false_negatives),
                     _n(f.missed), _n(f.dropped_elsewhere), _ratio(f.precision), _ratio(f.recall)])
    d = evaluation.dedup
    lines = [
        "## Filters against the ground truth", "",
        f"Ground truth: `{evaluation.ground_truth}` ({_n(evaluation.documents)} documents). *caught* = "
        "planted for this block and dropped by it; *missed* = planted but kept; *elsewhere* = planted but "
        "dropped by another block. The `(kept)` row scores keeping: precision is the share of kept "
        "documents that should be kept.", "",
        _table(["block", "planted", "caught", "false pos.", "false neg.", "missed", "elsewhere", "precision",
                "recall"], rows), "",
        f"MinHash dedup is scored per duplicate cluster (an original and its copies): right when exactly one "
        f"member survives, whichever. {d.correct} of {d.evaluated} clusters that reached dedup were right "
        f"({d.none_survived} lost every member, {d.several_survived} kept more than one; {d.clusters} "
        "clusters planted).", "",
        f"Lost documents (in the ground truth, in no shard): **{evaluation.lost_documents}**; written but "
        f"not in the ground truth: {evaluation.unexpected_documents}; written twice: "
        f"{evaluation.duplicated_documents}.",
    ]
    return lines


def _pii(summary: DataSummary, evaluation: Evaluation | None) -> list[str]:
    if not summary.pii and evaluation is None:
        return []
    lines = ["## PII", ""]
    if summary.pii:
        kinds = [k for k in summary.pii if k != "documents"]
        lines.append(f"Replacements made in kept documents ({_n(summary.pii.get('documents', 0))} documents "
                     "had any): " + ", ".join(f"{k} {_n(summary.pii[k])}" for k in kinds) + ".")
    if evaluation is not None and evaluation.pii.planted:
        p = evaluation.pii
        lines += ["", f"Planted values in kept documents ({p.documents} documents) no longer found verbatim "
                  f"in the kept text: {p.removed} of {p.planted} (recall {_ratio(p.recall)}).", ""]
        kinds = [[k.kind, _n(k.planted), _n(k.removed), _ratio(k.recall)] for k in p.by_kind.values()]
        lines.append(_table(["kind", "planted", "removed", "recall"], kinds))
        if p.left:
            lines += ["", "Still present: " + ", ".join(f"{kind} `{value}`" for _, kind, value in p.left)]
    return lines


def _minhash(layout: DataStageLayout, extra: dict | None, summary: DataSummary) -> list[str]:
    config = minhash_settings(layout, extra)
    if config is None:
        return []
    b, r = int(config["num_buckets"]), int(config["hashes_per_bucket"])
    threshold = (1 / b) ** (1 / r)
    rows = [[f"{s:.2f}", f"{_match_probability(s, b, r):.3f}"] for s in (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)]
    removed = next((x.dropped for x in summary.funnel if x.step == DEDUP), None)
    return [
        "## MinHash deduplication", "",
        f"Word {config.get('n_grams')}-grams, {b} buckets x {r} hashes ({b * r} hashes per document), "
        f"seed {config.get('seed')}, as in FineWeb. Two documents become duplicates when all {r} hashes of "
        f"any one bucket agree, so the chance of a match rises steeply around a similarity of "
        f"(1/{b})^(1/{r}) = {threshold:.2f}. Removed here: {_n(removed)}.", "",
        _table(["5-gram Jaccard", "P(found as duplicate)"], rows),
    ]


def _dup_line_note(layout: DataStageLayout, extra: dict | None) -> list[str]:
    value = (extra or {}).get("fineweb_char_duplicates_ratio")
    if value is None:
        value = _config(extra, "filters", "fineweb_quality", "char_duplicates_ratio")
    if value is None:
        value = _executor_setting(layout, "char_duplicates_ratio")
    used = f"This run used **{value}**." if value is not None else ""
    return [
        "## FineWeb's duplicated-line threshold", "",
        f"FineWeb's quality filter drops a document when the characters in duplicated lines exceed a share "
        f"of all characters. The FineWeb paper gives that share as {FINEWEB_PAPER_CHAR_DUP_RATIO}; its "
        f"released code and datatrove's `FineWebQualityFilter` use {FINEWEB_CODE_CHAR_DUP_RATIO}. We follow "
        f"the code, which is what produced the dataset. {used}".rstrip(),
    ]


def _extra(extra: dict | None) -> list[str]:
    rest = {k: v for k, v in (extra or {}).items()
            if k not in ("minhash", "fineweb_char_duplicates_ratio", "config")}
    lines = []
    if rest:
        rows = [[k, v if isinstance(v, (str, int, float)) else json.dumps(v, sort_keys=True, default=str)]
                for k, v in rest.items()]
        lines += ["## Run", "", _table(["", "value"], rows, "ll")]
    config = (extra or {}).get("config")
    if config:
        lines += ([""] if lines else []) + ["## Configuration", "", "```json",
                                            json.dumps(config, indent=2, sort_keys=True, default=str), "```"]
    return lines


def render_markdown(layout: DataStageLayout, summary: DataSummary, evaluation: Evaluation | None = None,
                    extra: dict | None = None) -> str:
    sections = [["# Data stage report", "", f"Output: `{layout.root}`", ""] + _headline(summary, evaluation),
                _inputs(summary), _funnel(summary), _drops(summary)]
    if evaluation is not None:
        sections.append(_evaluation(evaluation))
    sections += [_pii(summary, evaluation), _minhash(layout, extra, summary), _dup_line_note(layout, extra),
                 _extra(extra)]
    return "\n\n".join("\n".join(s) for s in sections if s).rstrip() + "\n"


def plot_funnel(summary: DataSummary, path: Path) -> Path:
    """Two panels: documents and characters after each step. Agg canvas, no pyplot global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    steps = [r.step for r in summary.funnel]
    docs = [r.forwarded for r in summary.funnel]
    chars = [math.nan if r.chars_out is None else r.chars_out for r in summary.funnel]
    fig = Figure(figsize=(max(8.0, 0.9 * len(steps)), 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.bar(steps, docs, color="#4C72B0")
    top.set_ylabel("documents")
    top.set_title("Documents after each step")
    for x, y in enumerate(docs):
        top.annotate(f"{y:,}", (x, y), ha="center", va="bottom", fontsize=8)
    bottom.bar(steps, chars, color="#DD8452")
    bottom.set_ylabel("characters")
    bottom.set_title("Characters after each step (reader and URL filter: raw HTML for WARC input)")
    for x, y in enumerate(chars):
        if not math.isnan(y):
            bottom.annotate(f"{y / 1e6:.2f}M" if y >= 1e5 else f"{int(y):,}", (x, y), ha="center",
                            va="bottom", fontsize=8)
    bottom.tick_params(axis="x", labelrotation=35)
    for ax in (top, bottom):
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(bottom=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path


def write_report(layout: DataStageLayout, summary: DataSummary, evaluation: Evaluation | None = None,
                 extra: dict | None = None) -> Path:
    """Write report.md and funnel.png into `layout.report`; return the markdown's path."""
    layout.report.mkdir(parents=True, exist_ok=True)
    plot_funnel(summary, layout.report / "funnel.png")
    path = layout.report / "report.md"
    path.write_text(render_markdown(layout, summary, evaluation, extra), encoding="utf-8")
    return path
