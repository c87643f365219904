"""The scaling stage as calls: a tiny sweep trains, fits, predicts its held-out run and writes its catalog;
a table of runs from anywhere fits the same way; the plan turns a fit into a model config of ours."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pytest

from components.config import load_config
from components.scaling.plan import load_fit, plan_run, shape_for
from components.scaling.points import read_points
from components.scaling.stage import fit_table, run_scaling
from components.scaling.sweep import FIT, HOLDOUT, plan_sweep, point_config
from tests.token_fixtures import build_pydoc_token_store

CHINCHILLA_CSV = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "chinchilla" / \
    "svg_extracted_data.csv"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return build_pydoc_token_store(tmp_path_factory.mktemp("tokenizer"))


def tiny(tmp_path: Path, tokenizer_dir: Path, *extra: str):
    return load_config(["profile=tiny", f"paths.root={tmp_path}", f"scaling.tokenizer_dir={tokenizer_dir}",
                        "stage=scaling", *extra])


def test_isoflop_plan_spends_each_budget_with_its_own_schedule(tmp_path, tokenizer_dir) -> None:
    cfg = tiny(tmp_path, tokenizer_dir)
    points = plan_sweep(cfg, 512)
    fit = [p for p in points if p.role == FIT]
    assert len(fit) == 6 and [p.role for p in points].count(HOLDOUT) == 1
    for p in fit:  # D = steps x tokens per step, C = 6 N D within the rounding of one step
        assert abs(p.C / p.budget - 1) < 6 * p.N * p.tokens_per_step / p.budget + 1e-9
        assert pytest.approx(6 * p.N * p.D) == p.C
    run = point_config(cfg, fit[0])
    assert run.pretrain.max_steps == fit[0].steps  # a whole run of its own length, never a truncated one
    assert run.pretrain.optim.warmup_steps == math.ceil(0.05 * fit[0].steps)
    assert run.model.n_embd == fit[0].n_embd and run.model.seq_len == 64
    assert run.pretrain.output_dir.endswith(f"scaling/runs/{fit[0].name}")


def test_counting_switches_change_N_and_C(tmp_path, tokenizer_dir) -> None:
    base = {p.name: p for p in plan_sweep(tiny(tmp_path, tokenizer_dir, "scaling.sweep.mode=grid",
                                                "scaling.sweep.tokens=[20000]"), 512)}
    emb = {p.name: p for p in plan_sweep(tiny(tmp_path, tokenizer_dir, "scaling.sweep.mode=grid",
                                               "scaling.sweep.tokens=[20000]",
                                               "scaling.counting.embeddings=true",
                                               "scaling.counting.attention_flops=true"), 512)}
    assert base.keys() == emb.keys()
    for name, p in base.items():
        q = emb[name]
        assert q.N == p.N_with_embeddings == p.N + 512 * p.n_embd
        assert q.flops_per_token == pytest.approx(6 * q.N + 12 * q.n_layer * q.n_embd * 64)
        assert q.D == p.D  # grid mode: the token budget does not depend on the counting


def test_bad_sweeps_are_refused(tmp_path, tokenizer_dir) -> None:
    with pytest.raises(ValueError, match="grid or isoflop"):
        plan_sweep(tiny(tmp_path, tokenizer_dir, "scaling.sweep.mode=nope"), 512)
    with pytest.raises(ValueError, match="unknown key"):
        plan_sweep(tiny(tmp_path, tokenizer_dir, "scaling.sweep.sizes=[{n_layers:1}]"), 512)
    with pytest.raises(ValueError, match="never saw"):  # the held-out run must not be a fit point
        plan_sweep(tiny(tmp_path, tokenizer_dir, "scaling.sweep.mode=grid", "scaling.sweep.tokens=[60000]",
                        "scaling.holdout.size={n_layer:1,n_embd:16,n_head:2}"), 512)
    with pytest.raises(FileNotFoundError, match="llmops tokenizer"):
        run_scaling(tiny(tmp_path, tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("sweep")
    cfg = tiny(root, tokenizer_dir)
    return cfg, run_scaling(cfg)


@pytest.mark.slow
def test_sweep_trains_fits_predicts_and_catalogs(swept) -> None:
    cfg, result = swept
    out = Path(cfg.scaling.output_dir)
    assert len(result.rows) == 7
    losses = {r["name"]: r["loss"] for r in result.rows}
    assert all(math.isfinite(v) and 2.0 < v < 7.0 for v in losses.values())
    # More compute for the same model gives a lower loss: the runs learned.
    by_shape: dict[tuple, list] = {}
    for r in result.rows:
        by_shape.setdefault((r["n_layer"], r["n_embd"]), []).append((r["C"], r["loss"]))
    for runs in by_shape.values():
        runs.sort()
        assert all(later[1] < earlier[1] for earlier, later in zip(runs, runs[1:], strict=False))

    fit = json.loads((out / "fit.json").read_text())
    for name in ("E", "A", "B", "alpha", "beta"):
        assert math.isfinite(fit[name]) and name in fit["intervals"]
    assert fit["holdout"]["name"] == next(r["name"] for r in result.rows if r["role"] == HOLDOUT)
    assert result.metrics["eval/holdout_rel_error"] == pytest.approx(
        fit["holdout"]["predicted"] / fit["holdout"]["loss"] - 1)
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(result.metrics)
    assert {f.name for f in result.figures} == {"isoflop.png", "frontier.png", "residuals.png"}
    assert "## Held-out run" in (out / "report.md").read_text()

    con = duckdb.connect(str(out / "scaling.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 7
        assert con.execute("SELECT count(*) FROM runs WHERE role = 'holdout'").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM fit_params").fetchone()[0] == 5
        assert con.execute("SELECT count(DISTINCT C) FROM isoflop").fetchone()[0] == 2
        assert con.execute("SELECT min(N_opt) > 0 FROM compute_optimal").fetchone()[0]
    finally:
        con.close()


@pytest.mark.slow
def test_rerun_trains_nothing_and_gives_the_same_fit(swept) -> None:
    cfg, first = swept
    again = run_scaling(cfg)
    assert all(r["resumed_from_step"] == r["steps"] for r in again.rows)
    assert [r["loss"] for r in again.rows] == [r["loss"] for r in first.rows]
    assert again.metrics["scaling/E"] == pytest.approx(first.metrics["scaling/E"])


@pytest.mark.slow
def test_runs_csv_fits_again_as_a_table(swept, tmp_path) -> None:
    cfg, first = swept
    runs_csv = Path(cfg.scaling.output_dir) / "runs.csv"
    points = read_points(runs_csv)
    assert len(points) == 7 and points.skipped == {}
    table_cfg = load_config(["profile=tiny", f"paths.root={tmp_path}", "stage=scaling",
                             f"scaling.points={runs_csv}"])
    result = fit_table(table_cfg)
    assert result.metrics["scaling/runs_fitted"] == 7  # the table holds the held-out run too
    assert (tmp_path / "scaling" / "fit.json").exists()


def test_points_csv_skips_and_counts_bad_rows(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("params,tokens,loss\n1e6,2e7,3.1\n2e6,,3.0\n-1,2e7,3.0\n1e6,2e7,nan\n4e6,8e7,2.9\n")
    points = read_points(path)
    assert len(points) == 2 and points.skipped == {"bad_D_and_C": 1, "bad_N": 1, "bad_loss": 1}
    assert pytest.approx(6 * points.N * points.D) == points.C
    (tmp_path / "bad.csv").write_text("size,loss\n1,2\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_points(tmp_path / "bad.csv")


def test_chinchilla_table_through_the_stage(tmp_path) -> None:
    """`llmops scaling scaling.points=...chinchilla...`: Epoch's protocol (drop the 5 highest losses)
    recovers their fit; the numbers themselves are pinned by tests/scaling/test_laws.py."""
    if not CHINCHILLA_CSV.exists():
        pytest.skip(f"Chinchilla reference data absent: {CHINCHILLA_CSV.parent}")
    cfg = load_config(["profile=tiny", f"paths.root={tmp_path}", "stage=scaling",
                       f"scaling.points={CHINCHILLA_CSV}", "scaling.fit.drop_highest_losses=5",
                       "scaling.fit.bootstrap=0"])
    result = fit_table(cfg)
    fit = result.fit
    assert result.metrics["scaling/runs_fitted"] == 240 and fit["skipped"] == {"highest_loss_dropped": 5}
    # The plain L-BFGS Huber fit Epoch's notebook reports, within the chinchilla README's tolerances.
    for name in ("E", "alpha", "beta"):
        assert fit[name] == pytest.approx({"E": 1.8172, "alpha": 0.3473, "beta": 0.3672}[name], abs=0.005)
    assert fit["A"] == pytest.approx(477.8, rel=0.05) and fit["B"] == pytest.approx(2143.0, rel=0.05)
    chinchilla = plan_run(load_fit(tmp_path / "scaling" / "fit.json"), 5.76e23, 32000, 2048, 2048 * 1536)
    assert chinchilla["N_opt"] == pytest.approx(7.2e10, rel=0.1)
    assert chinchilla["tokens_per_param"] == pytest.approx(18, rel=0.1)


def test_runs_that_break_the_law_are_reported_not_planned(tmp_path) -> None:
    """Bigger models worse at every budget (what too-short runs give): the fit is flagged, the report
    says so, and planning from it is refused with a message instead of a complex-valued G."""
    n = np.repeat([1e5, 2e5, 4e5, 8e5], 3)
    d = np.tile([1e6, 2e6, 4e6], 4)
    loss = 2.0 + 1e-3 * n**0.5 + 300.0 / d**0.4
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(n, d, loss, strict=True)))
    cfg = load_config(["profile=tiny", f"paths.root={tmp_path}", "stage=scaling", f"scaling.points={path}",
                       "scaling.fit.bootstrap=0"])
    result = fit_table(cfg)
    assert result.fit["alpha"] < 0 and result.fit["is_scaling_law"] is False
    assert result.fit["compute_optimal"] == []
    assert "Not a scaling law" in (tmp_path / "scaling" / "report.md").read_text()
    with pytest.raises(ValueError, match="no compute-optimal allocation"):
        plan_run(load_fit(tmp_path / "scaling" / "fit.json"), 1e19, 4096, 256, 4096)


def test_plan_picks_our_shape_nearest_N_opt() -> None:
    fit = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.3478, "beta": 0.3658, "flops_per_param_token": 6.0,
           "counting": {"embeddings": True}}
    plan = plan_run(fit, 1e19, 32768, 1024, 524288)
    assert plan["tokens_per_param"] == pytest.approx(plan["D_opt"] / plan["N_opt"])
    m = plan["model"]
    assert m["n_embd"] % 64 == 0 and m["n_head"] == m["n_embd"] // 64
    assert abs(np.log(plan["model_params"] / plan["N_opt"])) < 0.25  # the nearest shape of the family
    assert plan["steps"] * 524288 >= plan["tokens"]
    assert f"model.n_layer={m['n_layer']}" in plan["command"]
    other = shape_for(plan["N_opt"], 32768, 1024, embeddings=True)
    assert other.n_layer == m["n_layer"]
    with pytest.raises(ValueError, match="positive"):
        plan_run(fit, -1.0, 32768, 1024, 524288)


def test_plan_without_a_fit_says_what_to_run(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="llmops scaling"):
        load_fit(tmp_path / "fit.json")
    (tmp_path / "fit.json").write_text("{}")
    with pytest.raises(ValueError, match="not a scaling fit"):
        load_fit(tmp_path / "fit.json")
