"""The scaling stage as calls: plan the sweep, train its runs, fit and report; or fit a CSV from anywhere.

    python -m components.scaling.stage profile=tiny            # sweep + fit, no Prefect or MLflow
    python -m components.scaling.stage scaling.points=runs.csv # fit a table of (N, D or C, loss)

The flow (flows/scaling.py) maps `train_point` over `plan_sweep` as Prefect tasks, each with its own
MLflow run, then calls `finish_sweep`. Outputs under `${scaling.output_dir}`: `fit.json`, `metrics.json`,
`report.md`, `runs.csv`, `scaling.duckdb` (tables `runs`, `fit_params`, `isoflop`, `compute_optimal`)
and `figures/`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from components.scaling.analysis import (
    chinchilla_from_dict,
    fit_all,
    plot_frontier,
    plot_isoflop,
    plot_residuals,
    report_markdown,
)
from components.scaling.points import ScalingPoints, points_from_rows, read_points
from components.scaling.sweep import FIT, HOLDOUT, SweepPoint, plan_sweep, train_point

log = logging.getLogger(__name__)

RUN_COLUMNS = ("name", "role", "n_layer", "n_embd", "n_head", "lr", "steps", "tokens_per_step", "N",
               "N_with_embeddings", "N_non_embedding", "flops_per_token", "budget", "D", "C", "loss",
               "val_bpb", "train_seconds")


@dataclass
class ScalingResult:
    output_dir: Path
    metrics: dict[str, float]
    fit: dict
    rows: list[dict] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def vocab_size_of(cfg: DictConfig) -> int:
    """The tokenizer stage's vocabulary: what every sweep model embeds."""
    from components.tokenizer.bpe import Tokenizer

    tokenizer_dir = Path(cfg.scaling.tokenizer_dir)
    if not (tokenizer_dir / "tokenizer.json").exists():
        raise FileNotFoundError(f"scaling: no tokenizer in {tokenizer_dir}; run `llmops tokenizer` first "
                                "(or fit a table of runs with scaling.points=PATH.csv)")
    return Tokenizer.load(tokenizer_dir).vocab_size


def counting_info(cfg: DictConfig) -> dict:
    c = cfg.scaling.counting
    return {"embeddings": bool(c.embeddings), "attention_flops": bool(c.attention_flops),
            "flops_per_param_token": float(c.flops_per_param_token)}


def sweep(cfg: DictConfig) -> list[SweepPoint]:
    return plan_sweep(cfg, vocab_size_of(cfg))


def run_scaling(cfg: DictConfig) -> ScalingResult:
    """The whole stage in this process: a CSV fit if scaling.points is set, else the sweep."""
    if cfg.scaling.points:
        return fit_table(cfg)
    rows = [train_point(cfg, p) for p in sweep(cfg)]
    return finish_sweep(cfg, rows)


def fit_table(cfg: DictConfig) -> ScalingResult:
    """Fit a CSV of runs from anywhere (scaling.points); C = k N D with k = counting.flops_per_param_token."""
    s = cfg.scaling
    k = float(s.counting.flops_per_param_token)
    points = read_points(s.points, k).drop_highest_losses(int(s.fit.drop_highest_losses))
    counting = {"source": "table", "flops_per_param_token": k}
    return _finish(cfg, points, k, None, counting, rows=None, holdout=None, budgets=[])


def finish_sweep(cfg: DictConfig, rows: list[dict]) -> ScalingResult:
    """Fit the sweep's runs, predict the held-out one, write the catalog, figures and report."""
    s = cfg.scaling
    fit_rows = [r for r in rows if r["role"] == FIT]
    held = [r for r in rows if r["role"] == HOLDOUT]
    points = points_from_rows(fit_rows)
    k = 6.0  # C = 6 N D (+ attention, folded into each run's C; the law's k for planning stays 6)
    groups = np.array([r["budget"] for r in fit_rows]) if s.sweep.mode == "isoflop" else None
    budgets = sorted({float(r["budget"]) for r in fit_rows}) if s.sweep.mode == "isoflop" else []
    holdout = held[0] if held else None
    return _finish(cfg, points, k, groups, counting_info(cfg), rows, holdout, budgets)


def _finish(cfg: DictConfig, points: ScalingPoints, k: float, groups: np.ndarray | None, counting: dict,
            rows: list[dict] | None, holdout: dict | None, budgets: list[float]) -> ScalingResult:
    s = cfg.scaling
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fits = fit_all(points, s.fit, k, groups, budgets)
    fits["counting"] = counting
    fits["source"] = points.source
    fits["skipped"] = points.skipped
    metrics: dict[str, float] = {f"scaling/{name}": float(fits[name])
                                 for name in ("E", "A", "B", "alpha", "beta", "a", "b", "rmse_log")}
    metrics["scaling/runs_fitted"] = len(points)
    for name, (lo, hi) in fits["intervals"].items():
        metrics[f"scaling/{name}_lo"], metrics[f"scaling/{name}_hi"] = lo, hi
    if fits["approach2"].get("status") == "ok":
        metrics["scaling/approach2_a"] = float(fits["approach2"]["a"])
    held = None
    if holdout is not None:
        law = chinchilla_from_dict(fits)
        predicted = float(law.predict(holdout["N"], holdout["D"]))
        held = {**{key: holdout[key] for key in ("name", "N", "D", "C", "loss")}, "predicted": predicted,
                "rel_error": predicted / holdout["loss"] - 1.0}
        fits["holdout"] = held
        metrics |= {"eval/holdout_loss": holdout["loss"], "eval/holdout_predicted_loss": predicted,
                    "eval/holdout_rel_error": held["rel_error"],
                    "eval/holdout_abs_rel_error": abs(held["rel_error"]),
                    "eval/holdout_compute_ratio": holdout["C"] / float(points.C.max())}
    fig_dir = out / "figures"  # one folder: which figures exist depends on the design (IsoFLOP or grid)
    shutil.rmtree(fig_dir, ignore_errors=True)
    fig_dir.mkdir()
    figures = [plot_frontier(points, fits, fig_dir / "frontier.png", held),
               plot_residuals(points, fits, fig_dir / "residuals.png", held)]
    iso = plot_isoflop(points, fits, points.C if groups is None else groups, fig_dir / "isoflop.png")
    if iso is not None:
        figures.insert(0, iso)
    (out / "fit.json").write_text(json.dumps(fits, indent=1, sort_keys=True, default=_json_default))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    (out / "report.md").write_text(report_markdown(fits, points, rows, held, counting,
                                                   [f"figures/{f.name}" for f in figures]))
    if rows is not None:
        write_runs_csv(rows, out / "runs.csv")
    write_catalog(out / "scaling.duckdb", rows, points, fits)
    return ScalingResult(out, metrics, fits, rows or [], figures)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def write_runs_csv(rows: list[dict], path: Path) -> None:
    """The sweep as a table `llmops scaling scaling.points=runs.csv` fits again (and any tool reads)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUN_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_catalog(path: Path, rows: list[dict] | None, points: ScalingPoints, fits: dict) -> None:
    """DuckDB tables of the runs and the fit, rebuilt whole under a temporary name and moved into place
    (one writer; a reader never sees half a catalog)."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    runs = pd.DataFrame([{c: r.get(c) for c in RUN_COLUMNS} for r in rows]) if rows else pd.DataFrame(
        {"name": points.names or [f"row{i}" for i in range(len(points))], "role": FIT, "N": points.N,
         "D": points.D, "C": points.C, "loss": points.loss})
    params = pd.DataFrame([{"parameter": p, "estimate": float(fits[p]),
                            "lo": fits["intervals"].get(p, [math.nan])[0],
                            "hi": fits["intervals"].get(p, [math.nan, math.nan])[1]}
                           for p in ("E", "A", "B", "alpha", "beta")])
    isoflop = pd.DataFrame(fits["approach2"].get("profiles", []),
                           columns=["C", "n_points", "status", "N_opt", "loss_min", "curvature", "interior"])
    optimal = pd.DataFrame(fits["compute_optimal"], columns=["C", "N_opt", "D_opt", "tokens_per_param",
                                                             "loss"])
    con = duckdb.connect(str(tmp))
    try:
        for name, frame in (("runs", runs), ("fit_params", params), ("isoflop", isoflop),
                            ("compute_optimal", optimal)):
            con.register("frame", frame)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
    finally:
        con.close()
    os.replace(tmp, path)


def plan(cfg: DictConfig) -> dict:
    """`llmops scaling plan compute=...`: the compute-optimal run from the fitted law (scaling.plan)."""
    from components.scaling.plan import load_fit, plan_run

    p, pre = cfg.scaling.plan, cfg.pretrain
    if p.compute is None:
        raise ValueError("give the budget: `llmops scaling plan compute=1e19` (FLOPs)")
    fit = load_fit(p.fit)
    vocab = int(p.vocab_size) if p.vocab_size else int(cfg.tokenizer.vocab_size)
    tokens_per_step = int(pre.micro_batch_size) * int(cfg.model.seq_len) * int(pre.accumulate) * int(
        pre.devices) * int(pre.num_nodes)
    return plan_run(fit, float(p.compute), vocab, int(cfg.model.seq_len), tokens_per_step,
                    int(p.aspect_ratio), int(p.head_dim))


def main(argv: list[str] | None = None) -> int:
    """The stage without Prefect or MLflow."""
    from components.config import stage_main

    return stage_main("scaling", run_scaling, argv)


if __name__ == "__main__":
    sys.exit(main())

