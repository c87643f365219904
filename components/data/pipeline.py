"""The FineWeb recipe as datatrove pipelines: filter, MinHash dedup, PII scrub, write shards.

Four datatrove jobs, as in FineWeb's own example: (1) read, filter, compute MinHash signatures and
keep the survivors; (2) bucket signatures; (3) cluster duplicates; (4) drop all but one document per
cluster, scrub PII and write Parquet. Any datatrove executor (local, Slurm, Ray) runs them."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
from datatrove.utils.stats import PipelineStats
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from components.data.readers import CrawlReader

# tldextract (used by datatrove's URL filter) would try to download the public suffix list first.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

DOC_COLUMNS = ("dump", "url", "date", "file_path", "source_format", "language", "language_score")
KEPT_SCHEMA = pa.schema(
    [("text", pa.string()), ("id", pa.string())]
    + [(c, pa.float64() if c == "language_score" else pa.string()) for c in DOC_COLUMNS]
)
EXCLUDED_SCHEMA = KEPT_SCHEMA.append(pa.field("block", pa.string())).append(
    pa.field("filter_reason", pa.string())
)
READER = "reader"
DEDUP = "minhash_dedup"
PII = "pii"


@dataclass
class DataStageLayout:
    """Where the data stage writes, under `${paths.root}/data`."""

    root: Path

    @property
    def kept(self) -> Path:
        return self.root / "kept"

    @property
    def excluded(self) -> Path:
        return self.root / "excluded"

    @property
    def work(self) -> Path:  # intermediate files and datatrove logs; not a versioned output
        return self.root / "work"

    @property
    def input_reports(self) -> Path:
        return self.work / "input_files"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"


def _doc_row(writer, document, block: str | None = None) -> dict:
    row = {"text": document.text, "id": str(document.id)}
    for column in DOC_COLUMNS:
        value = document.metadata.get(column)
        row[column] = (None if value is None else float(value)) if column == "language_score" else (
            None if value is None else str(value)
        )
    if block is not None:
        row["block"] = block
        row["filter_reason"] = document.metadata.get("filter_reason") or block
    return row


def _exclusion_writer(layout: DataStageLayout, block: str) -> ParquetWriter:
    return ParquetWriter(
        str(layout.excluded / block),
        output_filename="${rank}.parquet",
        adapter=partial(_doc_row, block=block),
        schema=EXCLUDED_SCHEMA,
    )


def build_filters(filters_cfg: DictConfig, layout: DataStageLayout) -> list[tuple[str, Any]]:
    """Instantiate the enabled filter blocks in config order, each with its own exclusion writer."""
    blocks = []
    for name, block_cfg in filters_cfg.items():
        block_cfg = OmegaConf.to_container(block_cfg, resolve=True)
        if not block_cfg.pop("enabled", True):
            continue
        blocks.append((name, build(block_cfg, exclusion_writer=_exclusion_writer(layout, name))))
    return blocks


def build(spec: dict | DictConfig, **objects: Any) -> Any:
    """`_target_` + keyword arguments -> object. Unlike `hydra.utils.instantiate`, live objects
    (writers, blocks, executors) pass through untouched instead of being merged into a config."""
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    spec = dict(spec)
    target = spec.pop("_target_")
    return get_class(target)(**spec, **objects)


class RankFileReader(JsonlReader):
    """Reads exactly `<rank>.jsonl.gz`: MinHash's removal indices are positions in that rank's file,
    so the pairing must not depend on which ranks happened to write a file."""

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        name = f"{rank:05d}.jsonl.gz"
        if self.data_folder.exists(name):
            for doc in self.read_file(name):
                self.update_doc_stats(doc)
                yield doc


def build_stages(cfg: DictConfig, files: list[str], layout: DataStageLayout) -> list[tuple[str, list]]:
    """The four datatrove jobs as (job name, [(block name, block), ...])."""
    minhash_cfg = cfg.minhash
    mh = MinhashConfig(
        n_grams=minhash_cfg.n_grams,
        num_buckets=minhash_cfg.num_buckets,
        hashes_per_bucket=minhash_cfg.hashes_per_bucket,
        seed=minhash_cfg.seed,
    )
    filtered = str(layout.work / "filtered")
    signatures, buckets, remove = (str(layout.work / d) for d in ("signatures", "buckets", "remove_ids"))
    filter_job = [(READER, CrawlReader(files, report_dir=str(layout.input_reports), limit=cfg.limit))]
    filter_job += build_filters(cfg.filters, layout)
    # Writers forward documents; the signature step is terminal (it yields nothing), so it goes last.
    filter_job.append(("filtered_writer", JsonlWriter(filtered, output_filename="${rank}.jsonl.gz")))
    if minhash_cfg.enabled:
        filter_job.append(("minhash_signatures", MinhashDedupSignature(output_folder=signatures, config=mh)))

    final_job = [("filtered_reader", RankFileReader(filtered))]
    if minhash_cfg.enabled:
        final_job.append((DEDUP, MinhashDedupFilter(input_folder=remove,
                                                    exclusion_writer=_exclusion_writer(layout, DEDUP))))
    if cfg.pii.enabled:
        pii_cfg = OmegaConf.to_container(cfg.pii, resolve=True)
        pii_cfg.pop("enabled")
        final_job.append((PII, build(pii_cfg)))
    final_job.append(("kept_writer", ParquetWriter(str(layout.kept), output_filename="${rank}.parquet",
                                                   adapter=_doc_row, schema=KEPT_SCHEMA)))
    jobs = [("filter", filter_job)]
    if minhash_cfg.enabled:
        jobs += [
            ("minhash_buckets", [("minhash_buckets", MinhashDedupBuckets(signatures, buckets, config=mh))]),
            ("minhash_cluster", [("minhash_cluster", MinhashDedupCluster(buckets, remove, config=mh,
                                                                         save_cluster_size=True))]),
        ]
    jobs.append(("final", final_job))
    return jobs


def job_tasks(job: str, n_files: int, minhash_buckets: int) -> int:
    """Ranks per job: one per input file, except bucketing (one per bucket) and clustering (one)."""
    return {"minhash_buckets": minhash_buckets, "minhash_cluster": 1}.get(job, n_files)


def build_executors(
    cfg: DictConfig, files: list[str], layout: DataStageLayout
) -> list[tuple[str, Any, list[str]]]:
    """(job, executor, block names) for each job, chained with `depends=` on the configured executor
    (local, Slurm or Ray: the same blocks whichever runs them)."""
    tasks = min(len(files), cfg.max_tasks) if cfg.max_tasks else len(files)
    built, previous = [], None
    for job, blocks in build_stages(cfg, files, layout):
        executor = build(
            cfg.executor,
            pipeline=[block for _, block in blocks],
            tasks=job_tasks(job, tasks, cfg.minhash.num_buckets),
            logging_dir=str(layout.work / "logs" / job),
            depends=previous,
            skip_completed=False,
        )
        built.append((job, executor, [name for name, _ in blocks]))
        previous = executor
    return built


def run_jobs(cfg: DictConfig, files: list[str], layout: DataStageLayout) -> dict[str, list[tuple[str, dict]]]:
    """Run the jobs on the configured datatrove executor; return each job's merged per-block stats."""
    if layout.root.exists():
        for sub in (layout.kept, layout.excluded, layout.work):
            shutil.rmtree(sub, ignore_errors=True)  # stale shards would mix with this run's
    layout.root.mkdir(parents=True, exist_ok=True)
    jobs = build_executors(cfg, files, layout)
    jobs[-1][1].run()  # launches its dependencies first, in order
    if not cfg.executor._target_.endswith("LocalPipelineExecutor"):
        _wait_for([executor for _, executor, _ in jobs], poll_seconds=cfg.poll_seconds)
    return {job: _merged_stats(layout.work / "logs" / job, names) for job, _, names in jobs}


def _wait_for(executors, poll_seconds: int) -> None:
    """Slurm and Ray executors return once submitted: wait until every rank has written its mark."""
    for executor in executors:
        while executor.get_incomplete_ranks(skip_completed=True):
            time.sleep(poll_seconds)


def _merged_stats(logging_dir: Path, block_names: list[str]) -> list[tuple[str, dict]]:
    """Sum the per-rank stats files datatrove writes; pair each block's stats with our block name."""
    total = PipelineStats()
    for path in sorted((logging_dir / "stats").glob("*.json")):
        with open(path) as f:
            total += PipelineStats.from_json(json.load(f))
    stats = [s.to_dict() for s in total.stats] or [{} for _ in block_names]
    if len(stats) != len(block_names):
        raise RuntimeError(f"{logging_dir}: {len(stats)} stats entries for {len(block_names)} blocks")
    return list(zip(block_names, stats, strict=True))
