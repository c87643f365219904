"""ScaleRL's sigmoid compute curve: recovery, intervals, few points, flat curves, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.scaling.sigmoid import B_BOUNDS, SigmoidFit, fit_sigmoid

TRUTH = {"A": 0.62, "B": 1.5, "C_mid": 300.0}
R0 = 0.2
COMPUTE = np.logspace(1, 4, 20)


def _curve(C: np.ndarray, A: float = TRUTH["A"], B: float = TRUTH["B"], C_mid: float = TRUTH["C_mid"],
           r0: float = R0) -> np.ndarray:
    return r0 + (A - r0) / (1.0 + (C_mid / C) ** B)


def _noisy(seed: int, noise: float = 0.01) -> np.ndarray:
    return _curve(COMPUTE) + np.random.default_rng(seed).normal(0.0, noise, COMPUTE.size)


def _assert_recovers(fit: SigmoidFit) -> None:
    assert abs(fit.A - TRUTH["A"]) < 0.02
    assert abs(fit.B / TRUTH["B"] - 1) < 0.15
    assert abs(fit.C_mid / TRUTH["C_mid"] - 1) < 0.15


def _covers(fit: SigmoidFit, truth: dict[str, float]) -> dict[str, bool]:
    return {k: fit.intervals[k][0] <= v <= fit.intervals[k][1] for k, v in truth.items()}


@pytest.mark.parametrize("r0", [R0, None], ids=["R0-fixed", "R0-fitted"])
def test_recovers_noisy_curve_with_bootstrap_intervals(r0: float | None) -> None:
    fit = fit_sigmoid(COMPUTE, _noisy(seed=1), R0=r0, seed=1)
    _assert_recovers(fit)
    assert fit.interval_method == "bootstrap"
    expected = {"A", "B", "C_mid"} | ({"R0"} if r0 is None else set())
    assert set(fit.intervals) == expected
    assert all(_covers(fit, TRUTH).values()), fit.intervals
    if r0 is None:
        assert abs(fit.R0 - R0) < 0.02
        assert fit.intervals["R0"][0] <= R0 <= fit.intervals["R0"][1]
    else:
        assert fit.R0 == R0
    assert fit.rmse == pytest.approx(0.01, rel=0.5)
    assert fit.n_points == COMPUTE.size


@pytest.mark.parametrize("r0", [R0, None], ids=["R0-fixed", "R0-fitted"])
def test_covariance_intervals_cover_the_truth_at_about_95_percent(r0: float | None) -> None:
    hits = {k: 0 for k in TRUTH}
    n = 20
    for seed in range(n):
        fit = fit_sigmoid(COMPUTE, _noisy(seed), R0=r0, bootstrap=0)
        assert fit.interval_method == "covariance"
        for k, ok in _covers(fit, TRUTH).items():
            hits[k] += ok
    assert all(h >= 0.8 * n for h in hits.values()), hits


def test_bootstrap_intervals_cover_the_truth_mostly() -> None:
    """Point-resampling percentiles run a little below nominal (~88% with 20 points)."""
    n = 10
    hits = {k: 0 for k in TRUTH}
    for seed in range(n):
        fit = fit_sigmoid(COMPUTE, _noisy(seed + 100), R0=R0, bootstrap=50, seed=seed)
        for k, ok in _covers(fit, TRUTH).items():
            hits[k] += ok
    assert all(h >= 0.7 * n for h in hits.values()), hits


def test_noise_free_exact_and_extrapolates_beyond_the_data() -> None:
    """ScaleRL fits early runs and extrapolates: data stop at 2x C_mid, the asymptote is still found."""
    C = np.logspace(np.log10(TRUTH["C_mid"] / 30), np.log10(2 * TRUTH["C_mid"]), 12)
    for r0 in (R0, None):
        fit = fit_sigmoid(C, _curve(C), R0=r0, bootstrap=0)
        for name, value in TRUTH.items():
            assert getattr(fit, name) == pytest.approx(value, rel=1e-4), name
        assert fit.rmse < 1e-6


def test_predict_and_to_dict() -> None:
    fit = fit_sigmoid(COMPUTE, _noisy(seed=2), R0=R0, bootstrap=20)
    assert fit.predict(fit.C_mid) == pytest.approx((fit.A + fit.R0) / 2)
    assert fit.predict(1e12) == pytest.approx(fit.A, abs=1e-4)
    np.testing.assert_allclose(fit.predict(COMPUTE), _curve(COMPUTE, fit.A, fit.B, fit.C_mid, fit.R0))
    d = json.loads(json.dumps(fit.to_dict()))
    assert set(d) >= {"A", "B", "C_mid", "R0", "rmse", "n_points", "intervals", "interval_method"}
    assert all(len(v) == 2 for v in d["intervals"].values())
    cov = fit_sigmoid(COMPUTE, _noisy(seed=2), R0=R0, bootstrap=0)
    assert cov.to_dict()["interval_method"] == "covariance"


def test_bounds_hold() -> None:
    """Data that would like an asymptote above A_max get A = A_max; a fitted R0 stays <= A."""
    y = _curve(COMPUTE, A=0.97)
    fit = fit_sigmoid(COMPUTE, y, A_max=0.9, bootstrap=0)
    assert fit.A <= 0.9 + 1e-12
    assert fit.R0 <= fit.A
    assert B_BOUNDS[0] <= fit.B <= B_BOUNDS[1]
    decreasing = fit_sigmoid(COMPUTE, 0.6 - 0.2 * np.linspace(0, 1, COMPUTE.size), bootstrap=0)
    assert decreasing.R0 <= decreasing.A + 1e-12


@pytest.mark.parametrize("r0", [0.3, None], ids=["R0-fixed", "R0-fitted"])
@pytest.mark.parametrize("noise", [0.0, 0.01])
@pytest.mark.parametrize("bootstrap", [0, 30])
def test_flat_curve_does_not_crash(r0: float | None, noise: float, bootstrap: int) -> None:
    C = np.logspace(1, 3, 10)
    y = 0.3 + np.random.default_rng(0).normal(0, noise, C.size)
    fit = fit_sigmoid(C, y, R0=r0, bootstrap=bootstrap)
    assert abs(fit.A - 0.3) < 0.02
    assert np.all(np.isfinite(fit.predict(C)))
    if noise == 0.0:  # no gain at all: B and C_mid unidentified, intervals span their whole range
        assert fit.intervals["B"] == pytest.approx(B_BOUNDS)
        assert fit.intervals["C_mid"][0] < C.min() / 1e3 and fit.intervals["C_mid"][1] > C.max() * 1e3


def test_few_points() -> None:
    C = np.array([10.0, 100.0, 1000.0, 10000.0])
    y = _curve(C) + np.array([0.003, -0.002, 0.004, -0.001])
    three = fit_sigmoid(C[:3], y[:3], R0=R0, bootstrap=30)
    four = fit_sigmoid(C, y, bootstrap=30)
    for fit in (three, four):
        assert np.isfinite([fit.A, fit.B, fit.C_mid, fit.R0, fit.rmse]).all()
        assert R0 - 0.5 <= fit.R0 <= fit.A <= 1.0
    # no spare degrees of freedom: no covariance intervals
    assert fit_sigmoid(C[:3], y[:3], R0=R0, bootstrap=0).intervals == {}


def test_too_few_points_raise() -> None:
    C, y = np.array([10.0, 100.0]), np.array([0.3, 0.4])
    with pytest.raises(ValueError, match="at least 3 points with R0 fixed, got 2"):
        fit_sigmoid(C, y, R0=0.2)
    with pytest.raises(ValueError, match="at least 4 points when R0 is fitted"):
        fit_sigmoid(np.array([10.0, 100.0, 1000.0]), np.array([0.3, 0.4, 0.5]))


@pytest.mark.parametrize(
    ("compute", "reward", "kwargs", "match"),
    [
        ([1, 2, 3, 4], [0.1, 0.2, 0.3], {}, "same length"),
        ([1, 0, 3, 4], [0.1, 0.2, 0.3, 0.4], {}, "compute must be finite and positive"),
        ([1, 2, np.inf, 4], [0.1, 0.2, 0.3, 0.4], {}, "compute must be finite and positive"),
        ([1, 2, 3, 4], [0.1, np.nan, 0.3, 0.4], {}, "reward must be finite"),
        ([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], {"R0": 1.0}, "R0 must be finite and below A_max"),
        ([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], {"R0": np.nan}, "R0 must be finite"),
        ([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], {"A_max": np.inf}, "A_max must be finite"),
        ([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], {"bootstrap": -1}, "bootstrap must be >= 0"),
    ],
)
def test_validation(compute, reward, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_sigmoid(compute, reward, **kwargs)
