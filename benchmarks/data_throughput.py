"""Documents per second of the whole data stage vs. plain datatrove on the same blocks, input and workers.

    python benchmarks/data_throughput.py [--profile demo] [--repeats N] [--workers W] [--out PATH]

Why: the stage wraps datatrove in a Prefect flow, an MLflow run, a DuckDB catalog and a report; the goal
is that all of that costs at most 10% of datatrove's own throughput (ours >= 0.9x). Both variants run in
this one process, alternating per repeat (reference, ours, reference, ours, ...) so machine noise hits
both alike. The cold `llmops data` command (new process, ephemeral Prefect server, fresh MLflow store) is
measured once on its own, to show the fixed start-up cost. See benchmarks/README.md.

Top-level imports stay light (stdlib only) on purpose: datatrove's forkserver re-imports this file in
its server process, as it re-imports the `llmops` script in a real run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from anywhere, installed or not

GOAL = 0.9
PACKAGES = ("datatrove", "prefect", "mlflow", "duckdb", "trafilatura", "hydra-core", "pyarrow")
# Settings that would send a run to a user's servers or another root: the benchmark owns its own.
ISOLATED_ENV = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "LLMOPS_ROOT")
WARMUP_LIMIT = 25  # documents per rank in the untimed warm-up runs


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- machine, versions, load -------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_model": cpu or platform.processor(), "cores": os.cpu_count(), "usable_cores": usable,
            "ram_gib": ram_gib}


def result_header(name: str, argv: list[str] | None, machine: dict[str, Any],
                  packages: dict[str, str | None]) -> dict[str, Any]:
    """What every benchmark result starts with: what ran, when, on which commit, machine and versions."""
    from components.tracking.provenance import git_commit

    sha, dirty = git_commit(REPO)
    return {
        "benchmark": name,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", f"benchmarks/{name}.py", *(argv or sys.argv[1:])]),
        "git": {"commit": sha, "dirty": dirty},
        "machine": machine,
        "python": platform.python_version(),
        "packages": packages,
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(max_load: float, max_wait_s: float) -> float:
    """Wait until the 1-minute load average is below `max_load` (other jobs skew every timing);
    give up after `max_wait_s` and measure anyway (the JSON records the load). Returns seconds waited."""
    start = time.monotonic()
    while os.getloadavg()[0] >= max_load:
        waited = time.monotonic() - start
        if waited >= max_wait_s:
            log(f"load still {load_average()} after {waited:.0f} s: measuring anyway")
            break
        log(f"load {load_average()} >= {max_load}: waiting")
        time.sleep(15)
    return round(time.monotonic() - start, 1)


class CpuMeter:
    """CPU seconds spent during a run, machine-wide and by this benchmark's processes (datatrove workers,
    the Prefect server included): the difference is what other processes took, which says whether a
    timing was disturbed, since the 1-minute load average cannot tell our own load from theirs."""

    def __init__(self) -> None:
        import psutil  # a Prefect dependency

        self._me = psutil.Process()
        self._errors = (psutil.Error,)
        self._start = self._sample()

    @staticmethod
    def _machine_busy() -> float:
        """Busy CPU seconds of the whole machine so far (user, nice, system, irq, softirq; no steal)."""
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> dict[str, float]:
        def used(times: Any) -> float:  # a process and the children it has reaped
            return times.user + times.system + times.children_user + times.children_system

        tree, server = used(self._me.cpu_times()), 0.0
        for child in self._me.children(recursive=True):
            try:
                seconds = used(child.cpu_times())
                if "uvicorn" in " ".join(child.cmdline()):
                    server += seconds
                tree += seconds
            except self._errors:  # exited meanwhile: counted in its parent's children times
                continue
        return {"machine": self._machine_busy(), "benchmark": tree, "prefect_server": server}

    def stop(self) -> dict[str, float]:
        end = self._sample()
        delta = {k: end[k] - self._start[k] for k in end}
        return {"machine_busy_s": round(delta["machine"], 1), "benchmark_s": round(delta["benchmark"], 1),
                "prefect_server_s": round(delta["prefect_server"], 1),
                "other_processes_s": round(max(delta["machine"] - delta["benchmark"], 0.0), 1)}


# --- the two variants ---------------------------------------------------------------------------


def stage_overrides(profile: str, root: Path, corpus_dir: Path, workers: int, *extra: str) -> list[str]:
    """The same config for every variant: only the output root differs."""
    return [f"profile={profile}", f"paths.root={root}", f"data.corpus.dir={corpus_dir}",
            f"data.executor.workers={workers}", *extra]


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def reader_documents(logging_dir: Path) -> int:
    """Documents the reader (the first block of the filter job) emitted, from datatrove's own stats."""
    from datatrove.utils.stats import PipelineStats

    from components.data.summary import stat_total

    total = PipelineStats()
    for path in sorted((logging_dir / "stats").glob("*.json")):
        total += PipelineStats.from_json(json.loads(path.read_text()))
    return int(stat_total(total.stats[0].to_dict().get("stats", {}).get("documents", 0)))


def run_reference(overrides: list[str], files: list[str]) -> tuple[float, int, dict[str, int]]:
    """Plain datatrove: the blocks `build_stages` builds, one LocalPipelineExecutor per job chained with
    `depends=`, the same tasks and workers as `run_jobs`. Returns (seconds, documents read, tasks per job)."""
    from datatrove.executor import LocalPipelineExecutor

    from components.config import load_config
    from components.data.pipeline import DataStageLayout, build_stages, job_tasks

    cfg = load_config([*overrides, "stage=data"]).data
    if cfg.executor._target_ != "datatrove.executor.LocalPipelineExecutor":
        raise SystemExit(f"the benchmark compares against LocalPipelineExecutor, not {cfg.executor._target_}")
    layout = DataStageLayout(Path(cfg.output_dir))
    clean(layout.root)
    layout.root.mkdir(parents=True)
    n_tasks = min(len(files), cfg.max_tasks) if cfg.max_tasks else len(files)

    start = time.perf_counter()
    jobs = build_stages(cfg, files, layout)  # fresh block objects, as every stage run builds them
    executors: list[LocalPipelineExecutor] = []
    tasks: dict[str, int] = {}
    for job, blocks in jobs:
        tasks[job] = job_tasks(job, n_tasks, cfg.minhash.num_buckets)
        executors.append(LocalPipelineExecutor(
            pipeline=[block for _, block in blocks], tasks=tasks[job], workers=cfg.executor.workers,
            start_method=cfg.executor.start_method, logging_dir=str(layout.work / "logs" / job),
            depends=executors[-1] if executors else None, skip_completed=False,
        ))
    executors[-1].run()  # runs its dependencies first, in order
    seconds = time.perf_counter() - start

    for (job, _), executor in zip(jobs, executors, strict=True):
        if incomplete := executor.get_incomplete_ranks(skip_completed=True):
            raise RuntimeError(f"reference job {job}: ranks {incomplete} did not complete")
    return seconds, reader_documents(layout.work / "logs" / "filter"), tasks


class Phases:
    """Wall time spent in named parts of the flow, by wrapping module attributes for the duration of a
    run. A wrapper costs about a microsecond per call (a dozen calls per run), so the timed runs carry it."""

    # (module, attribute, phase): functions the flow and the stage call through module globals.
    FUNCTIONS = (
        ("flows.data", "load_config", "config"),
        ("flows.data", "stage_inputs", "inputs"),
        ("flows.data", "run_data_stage", "stage_component"),
        ("flows.data", "create_markdown_artifact", "prefect_artifact"),
        ("components.data.stage", "run_jobs", "stage_component/datatrove_jobs"),
        ("components.data.stage", "summarize", "stage_component/summary"),
        ("components.data.stage", "evaluate", "stage_component/evaluation"),
        ("components.data.stage", "build_catalog", "stage_component/catalog"),
        ("components.data.stage", "write_report", "stage_component/report"),
    )
    METHODS = (
        ("log_metrics", "mlflow_metrics"),
        ("log_artifacts", "mlflow_artifacts"),
        ("log_artifact", "mlflow_artifacts"),
        ("log_dvc_hashes", "dvc_hashes"),
    )
    # Top-level phases: what the run's total minus these leaves is Prefect's flow/task machinery.
    TOP = ("config", "mlflow_run", "inputs", "stage_component", "mlflow_metrics", "mlflow_artifacts",
           "dvc_hashes", "prefect_artifact")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def _timed(self, fn: Callable, phase: str) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(phase, time.perf_counter() - start)

        return wrapper

    def _timed_cm(self, fn: Callable, phase: str) -> Callable:
        """Time a context manager's enter and exit, not the block it wraps (MLflow run open/close)."""

        @contextmanager
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            start = time.perf_counter()
            exit_start: float | None = None
            try:
                with fn(*args, **kwargs) as value:
                    self.add(phase, time.perf_counter() - start)
                    try:
                        yield value
                    finally:
                        exit_start = time.perf_counter()
            finally:
                if exit_start is not None:
                    self.add(phase, time.perf_counter() - exit_start)

        return wrapper

    @contextmanager
    def patched(self) -> Iterator[Phases]:
        import importlib

        from components.tracking.runs import StageRun

        with ExitStack() as stack:
            def patch(owner: Any, name: str, value: Any) -> None:
                original = getattr(owner, name)
                setattr(owner, name, value)
                stack.callback(setattr, owner, name, original)

            flows_data = importlib.import_module("flows.data")
            patch(flows_data, "stage_run", self._timed_cm(flows_data.stage_run, "mlflow_run"))
            for module, name, phase in self.FUNCTIONS:
                mod = importlib.import_module(module)
                patch(mod, name, self._timed(getattr(mod, name), phase))
            for name, phase in self.METHODS:
                patch(StageRun, name, self._timed(getattr(StageRun, name), phase))
            yield self

    def breakdown(self, total: float) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in sorted(self.seconds.items())}
        out["prefect_and_other"] = round(total - sum(self.seconds.get(k, 0.0) for k in self.TOP), 3)
        return out


def run_ours(overrides: list[str], root: Path) -> tuple[float, int, dict[str, float]]:
    """The whole stage through the Prefect flow in this process (server already up): config, MLflow run,
    inputs, datatrove, summary, evaluation, catalog, report, tracking. Returns (seconds, documents read,
    seconds per phase)."""
    from flows.data import data_flow

    clean(root / "data")  # the MLflow store under root/.state stays, as a tracking server's would
    phases = Phases()
    with phases.patched():
        start = time.perf_counter()
        metrics = data_flow(overrides)
        seconds = time.perf_counter() - start
    return seconds, int(metrics["data/documents_read"]), phases.breakdown(seconds)


def run_cold(overrides: list[str], root: Path, log_path: Path) -> tuple[float, int, str, float]:
    """`llmops data ...` as a new process with no Prefect server and no MLflow store yet: what a user
    pays per command (imports, ephemeral Prefect server start, MLflow schema creation) on top of the work."""
    clean(root)
    script = Path(sys.executable).with_name("llmops")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    cmd += ["data", *overrides]
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_ENV}
    started, start = time.time(), time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}; see {log_path}")
    metrics = json.loads((root / "data" / "metrics.json").read_text())
    shown = ["llmops", *cmd[1:]] if script.exists() else cmd
    return seconds, int(metrics["data/documents_read"]), " ".join(shown), started


PREFECT_LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d(?:\.\d+)?) \| \w+ +\| (.*)$")


def cold_phases(log_path: Path, started: float, seconds: float) -> dict[str, float] | None:
    """Split the cold command's time at Prefect's own log lines (local time of day): imports until the
    server starts, the server start until the flow begins, the flow, and exit. None if a mark is missing."""
    lt = time.localtime(started)
    start_of_day = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + started % 1
    marks: dict[str, float] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if not (m := PREFECT_LOG_LINE.match(line)):
            continue
        at = (int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) - start_of_day) % 86400
        message = m[4]
        if "Starting temporary server" in message:
            marks.setdefault("server", at)
        elif message.startswith("Flow run") and "Beginning flow run" in message:
            marks.setdefault("flow", at)
        elif message.startswith("Flow run") and "Finished in state" in message:
            marks["done"] = at
    if len(marks) < 3:
        return None
    return {"imports_s": round(marks["server"], 1),
            "prefect_server_start_s": round(marks["flow"] - marks["server"], 1),
            "flow_s": round(marks["done"] - marks["flow"], 1),
            "exit_s": round(seconds - marks["done"], 1)}


# --- driver -------------------------------------------------------------------------------------


def summarize_runs(runs: list[dict], variant: str) -> dict[str, Any]:
    mine = [r for r in runs if r["variant"] == variant]
    return {
        "seconds": [r["seconds"] for r in mine],
        "docs_per_s": [r["docs_per_s"] for r in mine],
        "median_seconds": round(statistics.median(r["seconds"] for r in mine), 3),
        "median_docs_per_s": round(statistics.median(r["docs_per_s"] for r in mine), 2),
    }


def median_breakdown(runs: list[dict]) -> dict[str, float]:
    phases = sorted({k for r in runs for k in r.get("phases", {})})
    return {p: round(statistics.median(r["phases"].get(p, 0.0) for r in runs if "phases" in r), 3)
            for p in phases}


def default_out(profile: str, machine: dict[str, Any]) -> Path:
    kind = f"cpu-{machine['usable_cores']}core"
    suffix = "" if profile == "demo" else f"_{profile}"
    return REPO / "benchmarks" / "results" / f"data_throughput_{kind}{suffix}.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo", help="config profile (demo: 3000 documents; tiny: 200)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each variant (alternating)")
    p.add_argument("--workers", type=int, default=None,
                   help="datatrove workers for both variants (default: data.executor.workers of the config)")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (default: benchmarks/results/"
                   "data_throughput_cpu-<cores>core[_<profile>].json)")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "llmops-bench",
                   help="corpus and run outputs (the corpus is reused across invocations)")
    p.add_argument("--max-load", type=float, default=0.5,
                   help="wait for the 1-minute load average to drop below this before measuring")
    p.add_argument("--max-wait", type=float, default=1800, help="give up waiting for low load after this (s)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold `llmops data` subprocess run")
    return p.parse_args(argv)


def _noop() -> None:
    """The warm-up flow: its first run opens Prefect's client and logging machinery."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    work = args.work_dir.expanduser().absolute() / args.profile
    work.mkdir(parents=True, exist_ok=True)
    for name in ISOLATED_ENV:
        os.environ.pop(name, None)
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")  # before Prefect is imported: not ~/.prefect

    from components.config import load_config
    from components.data.inputs import ensure_demo_corpus
    from components.data.readers import resolve_inputs

    machine = machine_info()
    base = load_config([f"profile={args.profile}", "stage=data"])
    workers = args.workers or int(base.data.executor.workers)
    corpus_dir = work / "corpus"
    roots = {v: work / v for v in ("reference", "ours", "cold")}
    ovr = {v: stage_overrides(args.profile, roots[v], corpus_dir, workers) for v in roots}

    log(f"corpus ({args.profile}) in {corpus_dir}, outside the timed region")
    corpus_cfg = load_config([*ovr["reference"], "stage=data"]).data.corpus
    _, manifest = ensure_demo_corpus(corpus_cfg)
    files = resolve_inputs([str(corpus_dir)])
    log(f"{len(files)} input files, {workers} workers")

    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    runs: list[dict[str, Any]] = []
    warmup: dict[str, float] = {}
    with prefect_test_harness(server_startup_timeout=120):
        log("Prefect server up; warm-up (untimed): forkserver, imports, MLflow store")
        flow(name="benchmark-warmup")(_noop)()
        start = time.perf_counter()
        run_reference([*ovr["reference"], f"data.limit={WARMUP_LIMIT}"], files)
        warmup["reference_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        run_ours([*ovr["ours"], f"data.limit={WARMUP_LIMIT}"], roots["ours"])
        warmup["ours_s"] = round(time.perf_counter() - start, 3)

        waited = wait_for_quiet(args.max_load, args.max_wait)
        load_before = load_average()
        log(f"measuring; load {load_before}")
        tasks: dict[str, int] = {}
        for repeat in range(1, args.repeats + 1):
            for variant in ("reference", "ours"):
                load = load_average()
                cpu = CpuMeter()
                if variant == "reference":
                    seconds, docs, tasks = run_reference(ovr[variant], files)
                    phases = None
                else:
                    seconds, docs, phases = run_ours(ovr[variant], roots[variant])
                run = {"repeat": repeat, "variant": variant, "seconds": round(seconds, 3), "documents": docs,
                       "docs_per_s": round(docs / seconds, 2), "load_before": load, "cpu": cpu.stop()}
                if phases is not None:
                    run["phases"] = phases
                runs.append(run)
                log(f"repeat {repeat} {variant}: {seconds:.1f} s, {docs} documents, "
                    f"{docs / seconds:.1f} docs/s")
        load_after = load_average()

    documents = {r["documents"] for r in runs}
    if len(documents) != 1:
        raise RuntimeError(f"the variants read different numbers of documents: {runs}")
    n_documents = documents.pop()

    cold = None
    if not args.no_cold:
        log("cold command (new process: imports, ephemeral Prefect server, fresh MLflow store)")
        seconds, docs, command, started = run_cold(ovr["cold"], roots["cold"], work / "cold.log")
        if docs != n_documents:
            raise RuntimeError(f"cold run read {docs} documents, the others {n_documents}")
        cold = {"command": command, "seconds": round(seconds, 3), "docs_per_s": round(docs / seconds, 2),
                "phases_s": cold_phases(work / "cold.log", started, seconds), "load_before": load_after}
        log(f"cold: {seconds:.1f} s")

    reference, ours = summarize_runs(runs, "reference"), summarize_runs(runs, "ours")
    ratio = round(ours["median_docs_per_s"] / reference["median_docs_per_s"], 3)
    ours["phases_median_s"] = median_breakdown([r for r in runs if r["variant"] == "ours"])
    if cold is not None:
        cold["startup_cost_s"] = round(cold["seconds"] - ours["median_seconds"], 3)
        cold["ratio_vs_reference"] = round(cold["docs_per_s"] / reference["median_docs_per_s"], 3)
    result = {
        **result_header("data_throughput", argv, machine, package_versions()),
        "profile": args.profile,
        "documents": n_documents,
        "input_files": len(files),
        "corpus": {k: manifest.get(k) for k in ("n_documents_requested", "n_warc_files", "seed")},
        "workers": workers,
        "tasks_per_job": tasks,
        "repeats": args.repeats,
        "load_average": {"waited_s": waited, "before": load_before, "after": load_after,
                         "max_load": args.max_load},
        "warmup_untimed": warmup,
        "runs": runs,
        "reference": reference,
        "ours": ours,
        "ratio": ratio,
        "goal": GOAL,
        "goal_met": ratio >= GOAL,
        "cold_command": cold,
    }
    out = args.out or default_out(args.profile, machine)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"reference {reference['median_docs_per_s']} docs/s, ours {ours['median_docs_per_s']} docs/s, "
        f"ratio {ratio} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'}); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
