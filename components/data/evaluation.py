"""Each filter's precision and recall against the demo corpus' ground truth, and proof of no silent loss.

A document's actual outcome is where its id was written: `kept/` or `excluded/<block>/`. Its expected
outcome is `expected_block` in ground_truth.jsonl (null = keep). Per block, with "caught" = expected
and actually dropped by that block:

    precision = caught / (everything the block dropped)      recall = caught / planted

Dedup is judged per cluster (an original plus the copies whose `duplicate_of` points at it), because
MinHash keeps one member of a cluster but which one is up to it. Among the members that reached the
dedup step (kept or dropped by it), one is expected to survive, whichever: the label "keep" moves to
a survivor (the original when it survived) and every other member of those is expected to be dropped by
dedup. So a cluster with exactly one survivor counts all its removals as caught; with none, one removal
is a false positive; with several, each extra survivor is a false negative. Members an earlier filter
dropped keep their ground-truth labels and count for or against that filter.

Documents in the ground truth but in no shard are "lost"; the stage is correct only if there are none."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from components.data.corpus import FILTER_ORDER
from components.data.pipeline import DEDUP, DataStageLayout

GROUND_TRUTH = "ground_truth.jsonl"
KEPT = "kept"
LOST = "lost"
PII_KINDS = ("email", "ip", "phone")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
MAX_LISTED = 20  # ids / values listed in the result for a report; counts are always complete


@dataclass
class FilterEval:
    """One block against the ground truth. `missed` = planted but kept, `dropped_elsewhere` = planted but
    dropped by another block (usually an earlier one that caught it first)."""

    block: str
    planted: int
    caught: int
    false_positives: int
    false_negatives: int
    missed: int
    dropped_elsewhere: int
    precision: float | None
    recall: float | None


@dataclass
class DedupClusters:
    clusters: int = 0
    evaluated: int = 0       # clusters with at least one member that reached the dedup step
    correct: int = 0         # exactly one survivor among those members
    none_survived: int = 0   # all of them removed: one removal too many
    several_survived: int = 0


@dataclass
class PIIKindEval:
    kind: str
    planted: int
    removed: int
    recall: float | None


@dataclass
class PIIEval:
    """Planted PII values in kept documents: removed = no longer found verbatim in the kept text."""

    documents: int = 0
    planted: int = 0
    removed: int = 0
    recall: float | None = None
    by_kind: dict[str, PIIKindEval] = field(default_factory=dict)
    left: list[tuple[str, str, str]] = field(default_factory=list)  # (id, kind, value), first few


@dataclass
class Evaluation:
    ground_truth: str
    documents: int
    filters: list[FilterEval]
    dedup: DedupClusters
    pii: PIIEval
    lost_documents: int
    lost_ids: list[str]
    unexpected_documents: int   # written but not in the ground truth
    duplicated_documents: int   # ids written more than once (kept and excluded, or twice)
    confusion: dict[tuple[str, str], int]  # (expected, actual) -> documents, after the dedup relabelling
    metrics: dict[str, float] = field(default_factory=dict)

    def filter(self, block: str) -> FilterEval | None:
        return next((f for f in self.filters if f.block == block), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["confusion"] = [{"expected": e, "actual": a, "documents": n}
                             for (e, a), n in self.confusion.items()]
        return data


def find_ground_truth(paths: Iterable[str | Path], max_up: int = 3) -> Path | None:
    """The corpus' ground_truth.jsonl next to (or a few folders above) the input files, if any."""
    for path in paths:
        path = str(path)
        if "://" in path and not path.startswith("file://"):
            continue
        start = Path(path.removeprefix("file://"))
        folders = ([start] if start.is_dir() else []) + list(start.parents)[:max_up]
        for folder in folders:
            if (folder / GROUND_TRUTH).is_file():
                return folder / GROUND_TRUTH
    return None


def load_ground_truth(path: str | Path) -> dict[str, dict]:
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows[str(row["id"])] = row
    return rows


def actual_outcomes(layout: DataStageLayout, text_of: set[str] | frozenset[str] = frozenset(),
                    ) -> tuple[dict[str, str], dict[str, str], Counter]:
    """(id -> "kept" or the excluded block, id -> kept text for the ids in `text_of`, how often each id
    was written)."""
    outcome: dict[str, str] = {}
    kept_text: dict[str, str] = {}
    seen: Counter = Counter()
    for path in sorted(layout.kept.glob("*.parquet")) if layout.kept.exists() else []:
        table = pq.read_table(path, columns=["id", "text"])
        ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
        for doc_id, text in zip(ids, texts, strict=True):
            outcome[doc_id] = KEPT
            if doc_id in text_of:
                kept_text[doc_id] = text
            seen[doc_id] += 1
    folders = sorted(d for d in layout.excluded.iterdir() if d.is_dir()) if layout.excluded.exists() else []
    for folder in folders:
        for path in sorted(folder.glob("*.parquet")):
            for doc_id in pq.read_table(path, columns=["id"]).column("id").to_pylist():
                outcome.setdefault(doc_id, folder.name)  # a doubly-written id keeps its first outcome
                seen[doc_id] += 1
    return outcome, kept_text, seen


def block_order(blocks: Iterable[str], order: Sequence[str] | None = None) -> list[str]:
    """Blocks in pipeline order (`order`, default the FineWeb recipe's), unknown ones after, by name."""
    order = list(order or FILTER_ORDER)
    rank = {b: i for i, b in enumerate(order)}
    return sorted(set(blocks), key=lambda b: (rank.get(b, len(rank)), b))


def _clusters(truth: dict[str, dict]) -> dict[str, list[str]]:
    """original id -> [original, copies...], following `duplicate_of` to the root."""
    def root(doc_id: str) -> str:
        seen = set()
        while truth.get(doc_id, {}).get("duplicate_of") and doc_id not in seen:
            seen.add(doc_id)
            doc_id = truth[doc_id]["duplicate_of"]
        return doc_id

    clusters: dict[str, list[str]] = defaultdict(list)
    for doc_id, row in truth.items():
        if row.get("duplicate_of"):
            clusters[root(doc_id)].append(doc_id)
    return {orig: [orig, *sorted(copies)] for orig, copies in sorted(clusters.items())}


def expected_outcomes(truth: dict[str, dict], actual: dict[str, str]) -> tuple[dict[str, str], DedupClusters]:
    """Ground-truth labels with each duplicate cluster relabelled symmetrically (see module docstring)."""
    expected = {doc_id: row.get("expected_block") or KEPT for doc_id, row in truth.items()}
    stats = DedupClusters()
    for original, members in _clusters(truth).items():
        stats.clusters += 1
        reached = [m for m in members if actual.get(m) in (KEPT, DEDUP)]
        if not reached:
            continue
        stats.evaluated += 1
        survivors = [m for m in reached if actual[m] == KEPT]
        if len(survivors) == 1:
            stats.correct += 1
        elif survivors:
            stats.several_survived += 1
        else:
            stats.none_survived += 1
        pool = survivors or reached
        keeper = original if original in pool else pool[0]
        for m in reached:
            expected[m] = KEPT if m == keeper else DEDUP
    return expected, stats


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score_blocks(confusion: Counter, blocks: Sequence[str]) -> list[FilterEval]:
    """Per block (and "kept", i.e. keeping: precision = share of kept documents that should be kept)."""
    out = []
    for block in [*blocks, KEPT]:
        planted = sum(n for (e, _), n in confusion.items() if e == block)
        caught = confusion.get((block, block), 0)
        fp = sum(n for (e, a), n in confusion.items() if a == block and e != block)
        missed = confusion.get((block, KEPT), 0) if block != KEPT else 0
        fn = planted - caught
        elsewhere = fn - missed - confusion.get((block, LOST), 0)
        out.append(FilterEval(block, planted, caught, fp, fn, missed, elsewhere,
                              _ratio(caught, caught + fp), _ratio(caught, planted)))
    return out


def pii_kind(value: str) -> str:
    if "@" in value:
        return "email"
    if _IPV4.match(value):
        return "ip"
    return "phone"


def score_pii(truth: dict[str, dict], kept_text: dict[str, str]) -> PIIEval:
    result = PIIEval()
    counts: dict[str, list[int]] = {k: [0, 0] for k in PII_KINDS}
    for doc_id, row in truth.items():
        values = row.get("pii") or []
        if not values or doc_id not in kept_text:
            continue
        result.documents += 1
        text = kept_text[doc_id]
        for value in values:
            kind = pii_kind(value)
            counts.setdefault(kind, [0, 0])[0] += 1
            if value in text:
                if len(result.left) < MAX_LISTED:
                    result.left.append((doc_id, kind, value))
            else:
                counts[kind][1] += 1
    for kind, (planted, removed) in counts.items():
        result.by_kind[kind] = PIIKindEval(kind, planted, removed, _ratio(removed, planted))
    result.planted = sum(p for p, _ in counts.values())
    result.removed = sum(r for _, r in counts.values())
    result.recall = _ratio(result.removed, result.planted)
    return result


def evaluation_metrics(ev: Evaluation) -> dict[str, float]:
    """Flat `eval/...` numbers; undefined ratios (nothing planted or dropped) are left out."""
    m: dict[str, float] = {
        "eval/documents": ev.documents,
        "eval/lost_documents": ev.lost_documents,
        "eval/unexpected_documents": ev.unexpected_documents,
        "eval/duplicated_documents": ev.duplicated_documents,
    }
    for f in ev.filters:
        for key in ("planted", "caught", "false_positives", "false_negatives"):
            m[f"eval/{f.block}/{key}"] = getattr(f, key)
        for key in ("precision", "recall"):
            if getattr(f, key) is not None:
                m[f"eval/{f.block}/{key}"] = getattr(f, key)
    m[f"eval/{DEDUP}/clusters"] = ev.dedup.clusters
    m[f"eval/{DEDUP}/clusters_correct"] = ev.dedup.correct
    m["eval/pii/planted"] = ev.pii.planted
    m["eval/pii/removed"] = ev.pii.removed
    if ev.pii.recall is not None:
        m["eval/pii/recall"] = ev.pii.recall
    for kind, k in ev.pii.by_kind.items():
        if k.recall is not None:
            m[f"eval/pii/{kind}/recall"] = k.recall
    return m


def evaluate(layout: DataStageLayout, ground_truth: str | Path,
             order: Sequence[str] | None = None) -> Evaluation:
    """Score a finished run's shards against ground_truth.jsonl; `order` = the pipeline's block order."""
    truth = load_ground_truth(ground_truth)
    actual, kept_text, seen = actual_outcomes(layout, {i for i, row in truth.items() if row.get("pii")})
    expected, dedup = expected_outcomes(truth, actual)
    confusion: Counter = Counter()
    lost = []
    for doc_id in truth:
        outcome = actual.get(doc_id, LOST)
        if outcome == LOST:
            lost.append(doc_id)
        confusion[(expected[doc_id], outcome)] += 1
    blocks = block_order({b for b in expected.values() if b != KEPT}
                         | {a for a in actual.values() if a != KEPT}, order)
    ev = Evaluation(
        ground_truth=str(ground_truth),
        documents=len(truth),
        filters=score_blocks(confusion, blocks),
        dedup=dedup,
        pii=score_pii(truth, kept_text),
        lost_documents=len(lost),
        lost_ids=sorted(lost)[:MAX_LISTED],
        unexpected_documents=sum(1 for doc_id in actual if doc_id not in truth),
        duplicated_documents=sum(1 for n in seen.values() if n > 1),
        confusion=dict(sorted(confusion.items())),
    )
    ev.metrics = evaluation_metrics(ev)
    return ev
