"""Everything the scaling stage fits from a table of runs, and the figures and report that show it.

* Approach 3: L = E + A/N^alpha + B/D^beta (components.scaling.laws.fit_chinchilla), bootstrap intervals;
* Approach 2: per IsoFLOP budget the size at the parabola's minimum, then N_opt ∝ C^a by a power law;
* Kaplan: L(N) and L(D) on the Pareto frontier (the runs that no run with fewer parameters, resp.
  tokens, beats: those the other variable did not bottleneck as much);
* the compute-optimal N, D and tokens per parameter at the sweep's budgets and at `plan_compute`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from components.scaling.laws import (  # noqa: E402
    HOFFMANN_GRID,
    ChinchillaFit,
    compute_optimal,
    fit_chinchilla,
    fit_kaplan,
    fit_power_law,
    isoflop_profiles,
)
from components.scaling.points import ScalingPoints  # noqa: E402

log = logging.getLogger(__name__)


def chinchilla_from_dict(d: dict) -> ChinchillaFit:
    return ChinchillaFit(E=d["E"], A=d["A"], B=d["B"], alpha=d["alpha"], beta=d["beta"],
                         objective=d.get("objective", math.nan), n_points=d.get("n_points", 0),
                         intervals={k: tuple(v) for k, v in d.get("intervals", {}).items()})


def pareto_frontier(x: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Indices of the runs whose loss is below that of every run with a smaller x, sorted by x."""
    order = np.argsort(x, kind="stable")
    keep, best = [], np.inf
    for i in order:
        if loss[i] < best:
            keep.append(int(i))
            best = loss[i]
    return np.array(keep, dtype=int)


def _kaplan(x: np.ndarray, loss: np.ndarray, name: str) -> dict:
    idx = pareto_frontier(x, loss)
    if len(np.unique(x[idx])) < 2:
        return {"status": f"needs 2 frontier runs of distinct {name}, has {len(idx)}"}
    x_c, alpha = fit_kaplan(x[idx], loss[idx])
    return {"status": "ok", f"{name}_c": x_c, f"alpha_{name}": alpha, "n_points": len(idx)}


def _approach2(points: ScalingPoints, groups: np.ndarray, k: float) -> dict:
    # A budget only one run has (every point of a grid design) is no IsoFLOP curve: leave it out.
    profiles = [p for p in isoflop_profiles(points.N, groups, points.loss) if p["n_points"] > 1]
    ok = [p for p in profiles if p["status"] == "ok"]
    out: dict = {"profiles": profiles}
    if not profiles:
        out["status"] = "no compute budget is shared by several runs (a grid; sweep.mode=isoflop fits it)"
        return out
    if len(ok) < 2:
        out["status"] = f"needs 2 IsoFLOP budgets with a minimum, has {len(ok)}"
        return out
    C = np.array([p["C"] for p in ok])
    n_opt = np.array([p["N_opt"] for p in ok])
    k_n, a = fit_power_law(C, n_opt)
    k_d, b = fit_power_law(C, C / (k * n_opt))
    out.update(status="ok", a=a, b=b, N_opt_coef=k_n, D_opt_coef=k_d,
               all_minima_interior=all(p["interior"] for p in ok))
    return out


def _grid(fit_cfg: DictConfig) -> dict:
    if fit_cfg.grid == "hoffmann":
        return HOFFMANN_GRID
    return {k: np.asarray(v, dtype=float) for k, v in OmegaConf.to_container(fit_cfg.grid).items()}


def fit_all(points: ScalingPoints, fit_cfg: DictConfig, k: float, isoflop_groups: np.ndarray | None = None,
            budgets: list[float] | None = None) -> dict:
    """Every fit of the points, as a JSON-able dict whose top level is the Approach-3 fit (E, A, B,
    alpha, beta, intervals): what `fit.json` holds. k: FLOPs per parameter-token (C = k N D)."""
    fit = fit_chinchilla(points.N, points.D, points.loss, delta=float(fit_cfg.delta), grid=_grid(fit_cfg),
                         bootstrap=int(fit_cfg.bootstrap), seed=int(fit_cfg.seed))
    predicted = fit.predict(points.N, points.D)
    out = fit.to_dict()
    out["rmse_log"] = float(np.sqrt(np.mean((np.log(predicted) - np.log(points.loss)) ** 2)))
    out["max_abs_rel_error"] = float(np.max(np.abs(predicted / points.loss - 1.0)))
    out["approach2"] = _approach2(points, points.C if isoflop_groups is None else isoflop_groups, k)
    out["kaplan"] = {"L(N)": _kaplan(points.N, points.loss, "N"), "L(D)": _kaplan(points.D, points.loss, "D")}
    compute = sorted({*(budgets or []), *map(float, fit_cfg.plan_compute)})
    out["is_scaling_law"] = fit.is_scaling_law
    out["compute_optimal"] = [_optimal_at(fit, c, k) for c in compute] if fit.is_scaling_law else []
    if not fit.is_scaling_law:
        log.warning("scaling: the fit has alpha=%.3g, beta=%.3g: loss does not fall with both N and D",
                    fit.alpha, fit.beta)
    out["flops_per_param_token"] = k
    return out


def _optimal_at(fit: ChinchillaFit, c: float, k: float) -> dict[str, float]:
    """The compute-optimal row at budget c: N_opt, D_opt, tokens per parameter and the predicted loss."""
    o = compute_optimal(fit, c, k)
    return {"C": c, **o, "loss": float(fit.predict(o["N_opt"], o["D_opt"]))}


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _save(fig: plt.Figure, ax: plt.Axes, path: Path) -> Path:
    """Legend, layout, PNG, and the figure closed (a sweep draws many; pyplot keeps them otherwise)."""
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_isoflop(points: ScalingPoints, fits: dict, groups: np.ndarray, path: Path) -> Path | None:
    """Loss against N for each IsoFLOP budget, its parabola and the Approach-3 prediction along it."""
    profiles = [p for p in fits["approach2"].get("profiles", []) if p["n_points"] >= 3]
    if not profiles:
        return None
    fit, k = chinchilla_from_dict(fits), fits["flops_per_param_token"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(profiles)))
    for p, color in zip(profiles, colors, strict=True):
        sel = np.isclose(groups, p["C"], rtol=0.02)
        n = points.N[sel]
        ax.scatter(n, points.loss[sel], color=color, label=f"C={p['C']:.2g}", zorder=3)
        grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
        ax.plot(grid, fit.predict(grid, p["C"] / (k * grid)), color=color, ls="--", lw=1)
        if p["status"] == "ok":
            x = np.log(n)
            coef = np.polyfit(x - x.mean(), points.loss[sel], 2)
            ax.plot(grid, np.polyval(coef, np.log(grid) - x.mean()), color=color, lw=1, alpha=0.6)
            ax.axvline(p["N_opt"], color=color, ls=":", lw=1)
    ax.set(xscale="log", xlabel="parameters N", ylabel="final validation loss (nats/token)",
           title="IsoFLOP curves (solid: parabola, dashed: fitted law)")
    return _save(fig, ax, path)


def plot_frontier(points: ScalingPoints, fits: dict, path: Path, holdout: dict | None = None) -> Path:
    """Loss against compute, coloured by size, with the fitted compute-optimal frontier L(N_opt, D_opt)."""
    fit, k = chinchilla_from_dict(fits), fits["flops_per_param_token"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sc = ax.scatter(points.C, points.loss, c=np.log10(points.N), cmap="viridis", zorder=3, label="sweep runs")
    fig.colorbar(sc, ax=ax, label="log10 N")
    c_max = points.C.max() * 10 if holdout is None else max(points.C.max(), holdout["C"]) * 3
    grid = np.geomspace(points.C.min() / 3, c_max, 100)
    if fit.is_scaling_law:
        o = compute_optimal(fit, grid, k)
        ax.plot(grid, fit.predict(o["N_opt"], o["D_opt"]), color="black", lw=1.5, label="fitted frontier")
    if holdout is not None:
        ax.scatter([holdout["C"]], [holdout["loss"]], marker="*", s=180, color="red", zorder=4,
                   label="held-out run")
        ax.scatter([holdout["C"]], [holdout["predicted"]], marker="x", s=80, color="red", zorder=4,
                   label="its prediction")
    ax.set(xscale="log", xlabel="training compute C (FLOPs)", ylabel="final validation loss",
           title="Loss against compute")
    return _save(fig, ax, path)


def plot_residuals(points: ScalingPoints, fits: dict, path: Path, holdout: dict | None = None) -> Path:
    """Relative error of the fitted law per run, against compute."""
    fit = chinchilla_from_dict(fits)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.scatter(points.C, fit.predict(points.N, points.D) / points.loss - 1.0, label="fit runs")
    if holdout is not None:
        ax.scatter([holdout["C"]], [holdout["rel_error"]], marker="*", s=180, color="red", label="held-out")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set(xscale="log", xlabel="training compute C (FLOPs)", ylabel="predicted / actual - 1",
           title="Residuals of the Approach-3 fit")
    return _save(fig, ax, path)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _interval(fits: dict, name: str) -> str:
    lo_hi = fits.get("intervals", {}).get(name)
    return f"{lo_hi[0]:.4g} – {lo_hi[1]:.4g}" if lo_hi else "–"


def report_markdown(fits: dict, points: ScalingPoints, rows: list[dict] | None, holdout: dict | None,
                    counting: dict, figures: list[str]) -> str:
    lines = ["# Scaling laws", "",
             f"{len(points)} runs fitted (source: {points.source}); N counted "
             f"{'with' if counting.get('embeddings') else 'without'} the token embedding; "
             f"C = {fits['flops_per_param_token']:g} N D"
             f"{' + attention FLOPs' if counting.get('attention_flops') else ''}.", ""]
    if points.skipped:
        lines += [f"Rows skipped: {points.skipped}.", ""]
    lines += ["## Approach 3: L = E + A/N^alpha + B/D^beta", "",
              "| parameter | estimate | 95% bootstrap interval |", "| --- | --- | --- |"]
    for name in ("E", "A", "B", "alpha", "beta"):
        lines.append(f"| {name} | {fits[name]:.4g} | {_interval(fits, name)} |")
    if not fits.get("is_scaling_law", True):
        lines += ["", f"**Not a scaling law:** alpha = {fits['alpha']:.3g}, beta = {fits['beta']:.3g}; the "
                  "loss does not fall with both N and D, so there is no compute-optimal allocation. The runs "
                  "do not follow the law (too few steps for the larger models?): sweep longer runs."]
    lines += ["", f"N_opt ∝ C^{fits['a']:.3f}, D_opt ∝ C^{fits['b']:.3f}; summed Huber objective "
              f"{fits['objective']:.4g}; RMSE in log loss {fits['rmse_log']:.4f}; largest relative error "
              f"on a fitted run {fits['max_abs_rel_error']:.2%}.", ""]
    a2 = fits["approach2"]
    lines += ["## Approach 2: IsoFLOP minima", ""]
    if a2.get("profiles"):
        lines += ["| C | runs | status | N_opt | loss at minimum | minimum inside the sampled sizes |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for p in a2["profiles"]:
            lines.append(f"| {p['C']:.3g} | {p['n_points']} | {p['status']} | {p['N_opt']:.3g} | "
                         f"{p['loss_min']:.4f} | {p['interior']} |")
        lines.append("")
    lines += [f"N_opt ∝ C^{a2['a']:.3f}, D_opt ∝ C^{a2['b']:.3f} (Approach 3 says {fits['a']:.3f}, "
              f"{fits['b']:.3f})." if a2.get("status") == "ok" else f"Not fitted: {a2.get('status')}.", ""]
    lines += ["## Kaplan's single-variable laws (Pareto frontier)", ""]
    for law, d in fits["kaplan"].items():
        var = law[2]
        lines.append(f"- {law} = ({var}_c / {var})^alpha_{var}: {var}_c = {d[f'{var}_c']:.4g}, alpha_{var} = "
                     f"{d[f'alpha_{var}']:.4f} ({d['n_points']} runs)" if d["status"] == "ok"
                     else f"- {law}: not fitted ({d['status']})")
    lines += ["", "## Compute-optimal allocation", "", "| C (FLOPs) | N_opt | D_opt | tokens per parameter | "
              "predicted loss |", "| --- | --- | --- | --- | --- |"]
    for o in fits["compute_optimal"]:
        lines.append(f"| {o['C']:.3g} | {o['N_opt']:.4g} | {o['D_opt']:.4g} | {o['tokens_per_param']:.1f} | "
                     f"{o['loss']:.4f} |")
    if holdout is not None:
        lines += ["", "## Held-out run", "",
                  f"`{holdout['name']}` (N = {holdout['N']:.4g}, D = {holdout['D']:.4g}, "
                  f"C = {holdout['C']:.3g}, {holdout['C'] / points.C.max():.1f}x the largest fitted "
                  f"compute): loss {holdout['loss']:.4f}, predicted {holdout['predicted']:.4f}, "
                  f"relative error {holdout['rel_error']:+.2%}."]
    if rows:
        lines += ["", "## Runs", "", "| run | role | N | D | C | steps | lr | loss | seconds |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['name']} | {r['role']} | {r['N']:.4g} | {r['D']:.4g} | {r['C']:.3g} | "
                         f"{r['steps']} | {r['lr']:g} | {r['loss']:.4f} | {r['train_seconds']:.1f} |")
    if figures:
        lines += ["", "Figures: " + ", ".join(f"`{f}`" for f in figures) + "."]
    return "\n".join(lines) + "\n"
