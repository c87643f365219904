"""The config switch that moves the same blocks onto datatrove's Slurm executor (built, not submitted)."""

from __future__ import annotations

from pathlib import Path

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

from components.config import load_config
from components.data.pipeline import DataStageLayout, build_executors

FILES = ["crawl-0.warc.gz", "crawl-1.warc.gz", "extracted.jsonl.gz"]


def _jobs(tmp_path: Path, *overrides: str):
    cfg = load_config([f"paths.root={tmp_path}", *overrides])
    return cfg, build_executors(cfg.data, FILES, DataStageLayout(Path(cfg.data.output_dir)))


def test_local_executor_chains_the_four_fineweb_jobs(tmp_path):
    cfg, jobs = _jobs(tmp_path)
    assert [job for job, _, _ in jobs] == ["filter", "minhash_buckets", "minhash_cluster", "final"]
    executors = [executor for _, executor, _ in jobs]
    assert all(isinstance(e, LocalPipelineExecutor) for e in executors)
    assert [e.depends for e in executors] == [None, *executors[:-1]]
    assert [e.world_size for e in executors] == [3, cfg.data.minhash.num_buckets, 1, 3]
    assert jobs[0][2][:3] == ["reader", "url_filter", "text_extraction"]
    assert jobs[-1][2][-1] == "kept_writer"


def test_switched_off_blocks_are_not_built(tmp_path):
    _, jobs = _jobs(tmp_path, "data.minhash.enabled=false", "data.filters.language_filter.enabled=false",
                    "data.pii.enabled=false")
    assert [job for job, _, _ in jobs] == ["filter", "final"]
    names = [name for _, _, blocks in jobs for name in blocks]
    assert "language_filter" not in names and "pii" not in names and "minhash_dedup" not in names


def test_slurm_executor_runs_the_same_blocks(tmp_path):
    _, local = _jobs(tmp_path)
    _, jobs = _jobs(tmp_path, "data/executor=slurm", "data.executor.partition=cpu", "data.max_tasks=2")
    executors = [executor for _, executor, _ in jobs]
    assert all(isinstance(e, SlurmPipelineExecutor) for e in executors)
    assert executors[0].partition == "cpu" and executors[0].world_size == 2
    assert [e.depends for e in executors] == [None, *executors[:-1]]
    assert [names for _, _, names in jobs] == [names for _, _, names in local]
