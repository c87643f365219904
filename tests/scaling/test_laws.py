"""Scaling-law fitters: synthetic recovery, the published Chinchilla fit on Epoch's digitised points,
compute-optimal allocation, IsoFLOP minima, power laws, input validation."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from components.scaling import laws
from components.scaling.laws import (
    HOFFMANN_GRID,
    ChinchillaFit,
    compute_optimal,
    fit_chinchilla,
    fit_kaplan,
    fit_power_law,
    isoflop_minima,
    isoflop_profiles,
)

CHINCHILLA_DIR = Path(__file__).parents[2].parent / "shared/datasets/chinchilla"

# Hoffmann et al.'s (rounded) parameters as a ground truth for synthetic data.
TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# A 243-start subset of Hoffmann's grid: enough for well-designed synthetic data, ~20x cheaper.
SMALL_GRID = {"alpha": [0, 0.5, 1], "beta": [0, 0.5, 1], "e": [-1, 0, 1], "a": [0, 5, 10], "b": [0, 5, 10]}

# README of the data set: plain L-BFGS Huber fit, 4,500 starts, and Epoch's headline MLE (Table 1).
LBFGS_REF = {"A": 477.8, "B": 2143.0, "E": 1.8172, "alpha": 0.3473, "beta": 0.3672}
LBFGS_OBJECTIVE = 1.01827e-3
EPOCH_MLE = {"A": 482.01, "B": 2085.43, "E": 1.8172, "alpha": 0.3478, "beta": 0.3658}


def _rel_err(value: float, reference: float) -> float:
    return abs(value / reference - 1.0)


def _truth_fit(params: dict[str, float] = TRUTH) -> ChinchillaFit:
    return ChinchillaFit(**params, objective=0.0, n_points=0, intervals={})


def _synthetic(noise: float = 0.003, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10 x 10 grid of (N, D) with multiplicative log-normal noise on the loss."""
    N, D = (g.ravel() for g in np.meshgrid(np.logspace(7, 10, 10), np.logspace(9, 12, 10)))
    rng = np.random.default_rng(seed)
    return N, D, _truth_fit().predict(N, D) * np.exp(rng.normal(0.0, noise, N.size))


def _assert_close_to_lbfgs_reference(fit: ChinchillaFit) -> None:
    """The README's tolerances: |Δα|, |Δβ|, |ΔE| < 0.005, A and B within 5%."""
    assert abs(fit.alpha - LBFGS_REF["alpha"]) < 0.005
    assert abs(fit.beta - LBFGS_REF["beta"]) < 0.005
    assert abs(fit.E - LBFGS_REF["E"]) < 0.005
    assert _rel_err(fit.A, LBFGS_REF["A"]) < 0.05
    assert _rel_err(fit.B, LBFGS_REF["B"]) < 0.05


# ------------------------------------------------------------------------------------------------
# Synthetic recovery
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_fit() -> ChinchillaFit:
    N, D, loss = _synthetic()
    return fit_chinchilla(N, D, loss, grid=SMALL_GRID, bootstrap=100, seed=0)


def test_synthetic_recovery(synthetic_fit: ChinchillaFit) -> None:
    fit = synthetic_fit
    assert abs(fit.alpha - TRUTH["alpha"]) < 0.01
    assert abs(fit.beta - TRUTH["beta"]) < 0.01
    assert abs(fit.E - TRUTH["E"]) < 0.02
    assert _rel_err(fit.A, TRUTH["A"]) < 0.15
    assert _rel_err(fit.B, TRUTH["B"]) < 0.15
    assert fit.n_points == 100
    assert fit.a == pytest.approx(fit.beta / (fit.alpha + fit.beta))
    assert fit.a + fit.b == pytest.approx(1.0)


def test_synthetic_bootstrap_intervals_contain_truth(synthetic_fit: ChinchillaFit) -> None:
    assert set(synthetic_fit.intervals) == {"E", "A", "B", "alpha", "beta"}
    for name, (lo, hi) in synthetic_fit.intervals.items():
        assert lo <= TRUTH[name] <= hi, (name, lo, hi)
        assert lo <= getattr(synthetic_fit, name) <= hi, (name, lo, hi)


def test_noise_free_recovery_is_tight() -> None:
    N, D, loss = _synthetic(noise=0.0)
    fit = fit_chinchilla(N, D, loss, grid=SMALL_GRID)
    for name, value in TRUTH.items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-3), name
    assert fit.intervals == {}


def test_predict_and_to_dict(synthetic_fit: ChinchillaFit) -> None:
    fit = _truth_fit()
    assert fit.predict(1e9, 2e10) == pytest.approx(1.69 + 406.4 / 1e9**0.34 + 410.7 / 2e10**0.28)
    assert fit.predict(np.array([1e8, 1e9]), np.array([1e10, 1e11])).shape == (2,)
    d = json.loads(json.dumps(synthetic_fit.to_dict()))
    assert set(d) >= {"E", "A", "B", "alpha", "beta", "a", "b", "G", "objective", "n_points", "intervals"}
    assert all(isinstance(v, list) and len(v) == 2 for v in d["intervals"].values())


def test_public_minimize_route_gives_the_same_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback (one scipy minimize per start) and the lock-step driver agree."""
    N, D, loss = _synthetic(seed=3)
    grid = {"alpha": [0.5], "beta": [0.5], "e": [0, 1], "a": [5, 10], "b": [5]}
    fast = fit_chinchilla(N, D, loss, grid=grid)
    monkeypatch.setattr(laws, "_USE_LOCKSTEP", False)
    slow = fit_chinchilla(N, D, loss, grid=grid)
    for name in ("E", "A", "B", "alpha", "beta", "objective"):
        assert getattr(fast, name) == pytest.approx(getattr(slow, name), rel=1e-9), name


def test_lockstep_driver_checks_out_against_scipy() -> None:
    assert laws._lockstep_matches_scipy()


def test_hoffmann_grid_has_4500_starts() -> None:
    assert laws._grid_starts(HOFFMANN_GRID).shape == (4500, 5)
    assert list(HOFFMANN_GRID["e"]) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert list(HOFFMANN_GRID["a"]) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]


def test_gradient_matches_finite_differences() -> None:
    N, D, loss = _synthetic(noise=0.01)
    obj = laws._HuberLSE(np.log(N), np.log(D), np.log(loss), 1e-3)
    theta = np.array([[6.0, 6.0, 0.5, 0.3, 0.3], [5.0, 7.0, 0.4, 0.35, 0.25]])
    rows = np.zeros(2, np.int64)
    _, grad = obj(theta, rows)
    eps = 1e-6
    for j in range(5):
        step = np.zeros(5)
        step[j] = eps
        fd = (obj(theta + step, rows)[0] - obj(theta - step, rows)[0]) / (2 * eps)
        np.testing.assert_allclose(grad[:, j], fd, rtol=1e-5, atol=1e-9)


def test_overflowing_start_is_handled() -> None:
    """exp overflows at a wild start; the shifted log-sum-exp keeps the objective finite."""
    N, D, loss = _synthetic()
    obj = laws._HuberLSE(np.log(N), np.log(D), np.log(loss), 1e-3)
    with np.errstate(over="ignore"):
        f, g = obj(np.array([[800.0, 0.0, 0.0, 0.0, 0.0]]), np.zeros(1, np.int64))
    assert np.isfinite(f).all() and np.isfinite(g).all()


# ------------------------------------------------------------------------------------------------
# The real Chinchilla points (Epoch AI's digitisation of Hoffmann et al. Figure 4)
# ------------------------------------------------------------------------------------------------


def _load_chinchilla() -> dict[str, np.ndarray]:
    path = CHINCHILLA_DIR / "svg_extracted_data.csv"
    if not path.exists():
        pytest.skip(f"Chinchilla reference data absent: {CHINCHILLA_DIR}")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-5]  # README step 2: strictly below the 5th-largest loss
    return {"N": N[keep], "D": C[keep] / (6.0 * N[keep]), "loss": loss[keep], "all_loss": loss,
            "all_N": N}


@pytest.fixture(scope="module")
def chinchilla() -> dict[str, np.ndarray]:
    return _load_chinchilla()


@pytest.fixture(scope="module")
def chinchilla_fit(chinchilla: dict[str, np.ndarray]) -> ChinchillaFit:
    """The full protocol: 4,500 starts (about 6-8 s on a loaded 2-core machine)."""
    return fit_chinchilla(chinchilla["N"], chinchilla["D"], chinchilla["loss"])


def test_chinchilla_protocol_leaves_240_points(chinchilla: dict[str, np.ndarray]) -> None:
    assert len(chinchilla["all_loss"]) == 245
    assert len(chinchilla["N"]) == 240
    dropped = chinchilla["all_loss"] >= np.sort(chinchilla["all_loss"])[-5]
    assert dropped.sum() == 5
    assert round(chinchilla["all_loss"][dropped].min(), 3) >= 3.447
    assert np.all((chinchilla["all_N"][dropped] > 1.9e9) & (chinchilla["all_N"][dropped] < 6.9e9))


def test_chinchilla_full_grid_recovers_lbfgs_fit(chinchilla_fit: ChinchillaFit) -> None:
    _assert_close_to_lbfgs_reference(chinchilla_fit)
    assert chinchilla_fit.objective == pytest.approx(LBFGS_OBJECTIVE, rel=1e-4)
    assert chinchilla_fit.n_points == 240
    assert chinchilla_fit.a == pytest.approx(0.5126, abs=0.005)  # Epoch: a = 0.5126


def test_chinchilla_reduced_grid_recovers_lbfgs_fit(chinchilla: dict[str, np.ndarray]) -> None:
    """The winning start of the full grid is (a, b, e, α, β) = (15, 20, 0.5, 0.5, 0); its grid
    neighbourhood (162 starts) reaches the same optimum."""
    grid = {"a": [10, 15, 20], "b": [15, 20, 25], "e": [0, 0.5, 1], "alpha": [0, 0.5, 1], "beta": [0, 0.5]}
    fit = fit_chinchilla(chinchilla["N"], chinchilla["D"], chinchilla["loss"], grid=grid)
    _assert_close_to_lbfgs_reference(fit)
    assert fit.objective == pytest.approx(LBFGS_OBJECTIVE, rel=1e-4)


def test_chinchilla_compute_optimal(chinchilla_fit: ChinchillaFit) -> None:
    # 0.1196 is G at Epoch's MLE; G = (αA/(βB))^(1/(α+β)) magnifies the small differences of the plain
    # L-BFGS fit from it (ours: 0.113), while N_opt and D_opt, what G is for, agree to ~2%.
    assert _rel_err(chinchilla_fit.G, 0.1196) < 0.08
    at_1e19 = compute_optimal(chinchilla_fit, 1e19)
    assert at_1e19["tokens_per_param"] == pytest.approx(24, rel=0.05)
    at_chinchilla = compute_optimal(chinchilla_fit, 5.76e23)
    assert at_chinchilla["N_opt"] == pytest.approx(7.2e10, rel=0.05)
    assert at_chinchilla["D_opt"] == pytest.approx(1.33e12, rel=0.05)
    assert at_chinchilla["tokens_per_param"] == pytest.approx(18, rel=0.05)


def test_chinchilla_bootstrap_intervals(chinchilla: dict[str, np.ndarray]) -> None:
    """Refits from the default neighbourhood of the optimum; Epoch's MLE lies inside our intervals."""
    grid = {"a": [np.log(LBFGS_REF["A"])], "b": [np.log(LBFGS_REF["B"])], "e": [np.log(LBFGS_REF["E"])],
            "alpha": [LBFGS_REF["alpha"]], "beta": [LBFGS_REF["beta"]]}
    fit = fit_chinchilla(chinchilla["N"], chinchilla["D"], chinchilla["loss"], grid=grid, bootstrap=100)
    for name, (lo, hi) in fit.intervals.items():
        assert lo < EPOCH_MLE[name] < hi, (name, lo, hi)
        assert lo < getattr(fit, name) < hi, (name, lo, hi)
    # Epoch's 95% intervals (4,000 resamples): alpha 0.317-0.373, E 1.769-1.871.
    assert 0.30 < fit.intervals["alpha"][0] < 0.34 and 0.35 < fit.intervals["alpha"][1] < 0.39
    assert 1.74 < fit.intervals["E"][0] < 1.80 and 1.84 < fit.intervals["E"][1] < 1.90


# ------------------------------------------------------------------------------------------------
# Compute-optimal allocation
# ------------------------------------------------------------------------------------------------


def test_compute_optimal_matches_readme_numbers() -> None:
    """Epoch's parameters: G ≈ 0.1196, N_opt ≈ 7.2e10, D_opt ≈ 1.33e12 (≈ 18 tokens/param) at
    5.76e23 FLOP, ≈ 24 tokens/param at 1e19 FLOP."""
    fit = _truth_fit(EPOCH_MLE)
    assert _rel_err(fit.G, 0.1196) < 0.005
    big = compute_optimal(fit, 5.76e23)
    assert isinstance(big["N_opt"], float)
    assert big["N_opt"] == pytest.approx(7.2e10, rel=0.02)
    assert big["D_opt"] == pytest.approx(1.33e12, rel=0.02)
    assert big["tokens_per_param"] == pytest.approx(18, rel=0.03)
    assert compute_optimal(fit, 1e19)["tokens_per_param"] == pytest.approx(24, rel=0.03)


@pytest.mark.parametrize("k", [6.0, 8.0])
def test_compute_optimal_spends_the_budget(k: float) -> None:
    fit = _truth_fit()
    C = np.logspace(18, 25, 8)
    opt = compute_optimal(fit, C, flops_per_param_token=k)
    assert opt["N_opt"].shape == C.shape
    np.testing.assert_allclose(k * opt["N_opt"] * opt["D_opt"], C, rtol=1e-10)
    np.testing.assert_allclose(opt["tokens_per_param"], opt["D_opt"] / opt["N_opt"])
    # N_opt minimises the loss along the iso-compute line.
    for c, n_opt in zip(C[::3], opt["N_opt"][::3], strict=True):
        N = n_opt * np.array([0.9, 1.0, 1.1])
        losses = fit.predict(N, c / (k * N))
        assert losses[1] < losses[0] and losses[1] < losses[2]


def test_compute_optimal_rejects_bad_compute() -> None:
    with pytest.raises(ValueError, match="compute"):
        compute_optimal(_truth_fit(), [1e20, -1.0])


# ------------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP minima
# ------------------------------------------------------------------------------------------------


def _isoflop_data(budgets: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per budget, 9 sizes around the analytic optimum (±0.5 decades); budgets jittered by < 0.5%."""
    fit = _truth_fit()
    rng = np.random.default_rng(seed)
    Ns, Cs = [], []
    for c in budgets:
        n = compute_optimal(fit, c)["N_opt"] * np.logspace(-0.5, 0.5, 9)
        Ns.append(n)
        Cs.append(c * (1 + rng.uniform(-0.005, 0.005, n.size)))
    N, C = np.concatenate(Ns), np.concatenate(Cs)
    return N, C, fit.predict(N, C / (6 * N))


def test_isoflop_minima_recover_compute_optimal() -> None:
    budgets = np.logspace(18, 22, 5)
    minima = isoflop_minima(*_isoflop_data(budgets))
    assert len(minima) == 5
    for m, c in zip(minima, budgets, strict=True):
        assert m["C"] == pytest.approx(c, rel=0.01)
        assert m["n_points"] == 9
        assert m["interior"]
        assert m["N_opt"] == pytest.approx(compute_optimal(_truth_fit(), c)["N_opt"], rel=0.1)
        n_opt = compute_optimal(_truth_fit(), c)["N_opt"]
        assert m["loss_min"] == pytest.approx(_truth_fit().predict(n_opt, c / (6 * n_opt)), rel=0.01)
    k, p = fit_power_law([m["C"] for m in minima], [m["N_opt"] for m in minima])
    fit = _truth_fit()
    assert p == pytest.approx(fit.a, abs=0.01)
    _, p_d = fit_power_law([m["C"] for m in minima], [m["C"] / (6 * m["N_opt"]) for m in minima])
    assert p_d == pytest.approx(fit.b, abs=0.01)


def test_isoflop_skips_small_and_concave_groups(caplog: pytest.LogCaptureFixture) -> None:
    N, C, loss = _isoflop_data(np.array([1e19, 1e20]))
    # a group with 2 runs, and one whose loss is concave in log N
    N = np.concatenate([N, [1e8, 1e9], [1e8, 3e8, 1e9, 3e9]])
    C = np.concatenate([C, [1e21, 1e21], [1e22] * 4])
    loss = np.concatenate([loss, [2.5, 2.4], [2.0, 2.3, 2.3, 2.0]])
    with caplog.at_level(logging.WARNING, logger="components.scaling.laws"):
        minima = isoflop_minima(N, C, loss)
    assert [m["C"] for m in minima] == pytest.approx([1e19, 1e20], rel=0.01)
    assert "skipped 2 of 4" in caplog.text
    statuses = [p["status"] for p in isoflop_profiles(N, C, loss)]
    assert statuses == ["ok", "ok", "too_few_points", "non_positive_curvature"]
    assert len(isoflop_minima(N, C, loss, min_points=10)) == 0


def test_isoflop_groups_do_not_chain() -> None:
    """Budgets 0.8% apart stepwise form several groups, not one long chain."""
    C = 1e20 * 1.008 ** np.arange(6)
    groups = laws._group_by_compute(C)
    assert [len(g) for g in groups] == [2, 2, 2]


# ------------------------------------------------------------------------------------------------
# Power laws
# ------------------------------------------------------------------------------------------------


def test_fit_power_law_exact() -> None:
    x = np.logspace(18, 24, 7)
    k, p = fit_power_law(x, 0.3 * x**0.49)
    assert k == pytest.approx(0.3, rel=1e-8)
    assert p == pytest.approx(0.49, rel=1e-10)


def test_fit_kaplan_recovers_parameters() -> None:
    x_c, alpha = 8.8e13, 0.076  # Kaplan et al.'s L(N)
    x = np.logspace(6, 10, 12)
    k_xc, k_alpha = fit_kaplan(x, (x_c / x) ** alpha)
    assert k_xc == pytest.approx(x_c, rel=1e-6)
    assert k_alpha == pytest.approx(alpha, rel=1e-8)
    noisy = (x_c / x) ** alpha * np.exp(np.random.default_rng(0).normal(0, 0.001, x.size))
    n_xc, n_alpha = fit_kaplan(x, noisy)
    assert n_alpha == pytest.approx(alpha, abs=0.002)
    assert abs(np.log10(n_xc / x_c)) < 0.5  # x_c = exp(intercept / α) amplifies noise


# ------------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("N", "D", "loss", "match"),
    [
        ([1e8] * 5, [1e9] * 4, [3.0] * 5, "same length"),
        ([1e8, 1e8, -1e8, 1e8, 1e8], [1e9] * 5, [3.0] * 5, "N must be finite and positive"),
        ([1e8] * 5, [1e9, 0, 1e9, 1e9, 1e9], [3.0] * 5, "D must be finite and positive"),
        ([1e8] * 5, [1e9] * 5, [3.0, np.nan, 3.0, 3.0, 3.0], "loss must be finite and positive"),
        ([1e8] * 5, [1e9] * 5, [3.0, np.inf, 3.0, 3.0, 3.0], "loss must be finite and positive"),
        ([1e8] * 4, [1e9] * 4, [3.0] * 4, "at least 5 points"),
    ],
)
def test_fit_chinchilla_validates_inputs(N, D, loss, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_chinchilla(N, D, loss)


def test_fit_chinchilla_validates_options() -> None:
    N, D, loss = _synthetic()
    with pytest.raises(ValueError, match="delta"):
        fit_chinchilla(N, D, loss, delta=0.0)
    with pytest.raises(ValueError, match="grid lacks"):
        fit_chinchilla(N, D, loss, grid={"a": [0.0], "b": [0.0]})
    with pytest.raises(ValueError, match="bootstrap"):
        fit_chinchilla(N, D, loss, grid=SMALL_GRID, bootstrap=-1)
    with pytest.raises(ValueError, match="non-empty and finite"):
        fit_chinchilla(N, D, loss, grid={**SMALL_GRID, "e": [np.nan]})


def test_power_law_and_isoflop_validation() -> None:
    with pytest.raises(ValueError, match="same length"):
        fit_power_law([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2, 3], [1, -2, 3])
    with pytest.raises(ValueError, match="distinct"):
        fit_kaplan([5, 5, 5], [1, 2, 3])
    with pytest.raises(ValueError, match="C must be finite and positive"):
        isoflop_minima([1e8, 2e8, 3e8], [1e20, 0, 1e20], [2.0, 2.1, 2.2])
    with pytest.raises(ValueError, match="same length"):
        isoflop_minima([1e8, 2e8], [1e20], [2.0, 2.1])
