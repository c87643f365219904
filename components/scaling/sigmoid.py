"""ScaleRL's compute curve for RL: R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B).

A is the asymptotic reward (what more compute can buy at most), B the efficiency (how steeply reward
rises around the midpoint), C_mid the compute at which half of the gain A - R0 is reached. ScaleRL fixes
R0 to the starting performance and compares recipes by A and B, so those are what the fit must get
right; C_mid is fitted in log space because it ranges over decades.

Internally x = ln C - mean(ln C) and m = ln C_mid - mean(ln C), so R = R0 + (A - R0) expit(B (x - m)).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.optimize import least_squares
from scipy.special import expit

log = logging.getLogger(__name__)

B_BOUNDS = (1e-3, 20.0)  # efficiency: beyond 20 the sigmoid is a step, which few points cannot pin down
C_MID_MARGIN_DECADES = 4.0  # C_mid may lie this many decades beyond the observed compute range
_B_STARTS = (0.5, 1.0, 2.0)
_M_START_QUANTILES = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class SigmoidFit:
    """R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B), with 95% bootstrap intervals."""

    A: float
    B: float
    C_mid: float
    R0: float
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95%, see interval_method
    rmse: float = float("nan")
    n_points: int = 0
    interval_method: str = "bootstrap"  # "bootstrap" (percentiles over point resamples) or "covariance"

    def predict(self, C) -> np.ndarray:
        """Predicted reward at compute C (array or float)."""
        x = np.log(np.asarray(C, dtype=float)) - np.log(self.C_mid)
        return self.R0 + (self.A - self.R0) * expit(self.B * x)

    def to_dict(self) -> dict:
        """JSON-able summary (intervals as [lo, hi] lists)."""
        return {
            "A": float(self.A),
            "B": float(self.B),
            "C_mid": float(self.C_mid),
            "R0": float(self.R0),
            "rmse": float(self.rmse),
            "n_points": int(self.n_points),
            "interval_method": self.interval_method,
            "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
        }


class _Problem:
    """Residuals and Jacobian in the internal parameters.

    R0 fixed: p = (A, B, m). R0 fitted: p = (A, B, m, g) with R0 = A - g and g >= 0, which turns the
    constraint R0 <= A into a plain bound.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, R0: float | None):
        self.x, self.y, self.R0 = x, y, R0

    def unpack(self, p: np.ndarray) -> tuple[float, float, float, float]:
        """-> (A, B, m, R0)."""
        if self.R0 is None:
            return p[0], p[1], p[2], p[0] - p[3]
        return p[0], p[1], p[2], self.R0

    def residuals(self, p: np.ndarray) -> np.ndarray:
        A, B, m, R0 = self.unpack(p)
        return R0 + (A - R0) * expit(B * (self.x - m)) - self.y

    def jacobian(self, p: np.ndarray) -> np.ndarray:
        A, B, m, R0 = self.unpack(p)
        dx = self.x - m
        s = expit(B * dx)
        gain_ds = (A - R0) * s * (1.0 - s)
        cols = [s, gain_ds * dx, -gain_ds * B]  # d/dA (R0 fixed), d/dB, d/dm
        if self.R0 is not None:
            return np.column_stack(cols)
        return np.column_stack([np.ones_like(s), cols[1], cols[2], s - 1.0])  # R = A - g + g s


def _validate(
    compute, reward, R0: float | None, A_max: float, bootstrap: int
) -> tuple[np.ndarray, np.ndarray]:
    C = np.asarray(compute, dtype=float).ravel()
    y = np.asarray(reward, dtype=float).ravel()
    if len(C) != len(y):
        raise ValueError(f"compute and reward must have the same length, got {len(C)} and {len(y)}")
    if not np.all(np.isfinite(C) & (C > 0)):
        raise ValueError("compute must be finite and positive")
    if not np.all(np.isfinite(y)):
        raise ValueError("reward must be finite")
    needed = 3 if R0 is not None else 4
    if len(C) < needed:
        how = "with R0 fixed" if R0 is not None else "when R0 is fitted (fix R0 to need only 3)"
        raise ValueError(f"need at least {needed} points {how}, got {len(C)}")
    if not np.isfinite(A_max):
        raise ValueError(f"A_max must be finite, got {A_max}")
    if R0 is not None and not (np.isfinite(R0) and A_max > R0):
        raise ValueError(f"R0 must be finite and below A_max={A_max}, got {R0}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    return C, y


def _bounds(x: np.ndarray, R0: float | None, A_max: float) -> tuple[np.ndarray, np.ndarray]:
    margin = C_MID_MARGIN_DECADES * np.log(10.0)
    lo = [-np.inf if R0 is None else R0, B_BOUNDS[0], x.min() - margin]
    hi = [A_max, B_BOUNDS[1], x.max() + margin]
    if R0 is None:
        lo.append(0.0)
        hi.append(np.inf)
    return np.array(lo), np.array(hi)


def _starts(x: np.ndarray, y: np.ndarray, R0: float | None, A_max: float) -> list[np.ndarray]:
    """Grid of starts: asymptote at/above the best reward seen, a few slopes, midpoints inside and just
    beyond the data (curves fitted early in training often have not reached their midpoint)."""
    top = float(y.max())
    floor = float(y.min()) if R0 is None else R0
    a_starts = sorted({min(max(a, floor), A_max) for a in (top, 0.5 * (top + A_max), A_max)})
    m_starts = [*np.quantile(x, _M_START_QUANTILES), x.max() + 1.0]
    out = []
    for a, b, m in itertools.product(a_starts, _B_STARTS, m_starts):
        out.append(np.array([a, b, m] if R0 is not None else [a, b, m, max(a - floor, 0.0)]))
    return out


def _solve(problem: _Problem, starts: list[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Best least-squares solution over the starts (None if every start fails)."""
    best_p, best_cost = None, np.inf
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    for p0 in starts:
        p0 = np.clip(p0, lo + 1e-9 * span, hi - 1e-9 * span)  # strictly feasible
        try:
            res = least_squares(problem.residuals, p0, jac=problem.jacobian, bounds=(lo, hi), method="trf",
                                x_scale="jac")
        except (ValueError, np.linalg.LinAlgError):  # degenerate resample: skip this start
            continue
        if np.isfinite(res.cost) and res.cost < best_cost:
            best_p, best_cost = res.x, float(res.cost)
    return best_p


def fit_sigmoid(
    compute,
    reward,
    *,
    R0: float | None = None,
    A_max: float = 1.0,
    bootstrap: int = 200,
    seed: int = 0,
) -> SigmoidFit:
    """Least-squares fit of ScaleRL's sigmoid to (compute, reward) points.

    R0 is held at the given value (ScaleRL: the starting performance) or fitted. Bounds: R0 <= A <= A_max,
    B in B_BOUNDS, C_mid within C_MID_MARGIN_DECADES of the observed compute range. Best of a small grid
    of starts (36). Needs >= 3 points with R0 fixed, >= 4 otherwise.

    95% intervals for A, B, C_mid (and R0 when fitted):
    * bootstrap > 0: 2.5/97.5 percentiles over `bootstrap` refits on points resampled with replacement
      (refits start from the full-data fit). Robust to uneven noise, but with ~20 points they cover the
      truth ~88% of the time rather than 95%, and with very few points they are wide.
    * bootstrap == 0: from the covariance s^2 (J^T J)^-1 at the optimum with a t quantile (C_mid in log
      space), clipped to the bounds; cheap, close to nominal coverage for well-sampled homoscedastic
      curves; {} when there are no spare degrees of freedom (n <= number of fitted parameters).
    Either way, when the gain A - R0 is not distinguishable from zero (a flat curve), B and C_mid are not
    identified and their intervals are set to their whole allowed range.
    """
    C, y = _validate(compute, reward, R0, A_max, bootstrap)
    mu = float(np.mean(np.log(C)))
    x = np.log(C) - mu
    lo, hi = _bounds(x, R0, A_max)
    problem = _Problem(x, y, R0)
    p = _solve(problem, _starts(x, y, R0, A_max), lo, hi)
    if p is None:
        raise RuntimeError("sigmoid fit failed from every start")
    A, B, m, r0 = problem.unpack(p)
    rmse = float(np.sqrt(np.mean(problem.residuals(p) ** 2)))
    if bootstrap > 0:
        intervals = _bootstrap(x, y, R0, lo, hi, p, mu, bootstrap, seed)
    else:
        intervals = _covariance_intervals(problem, p, lo, hi, mu)
    intervals = _widen_if_flat(intervals, lo, hi, mu, scale=max(float(np.ptp(y)), abs(float(A)), 1e-12))
    return SigmoidFit(A=float(A), B=float(B), C_mid=float(np.exp(m + mu)), R0=float(r0), intervals=intervals,
                      rmse=rmse, n_points=len(C),
                      interval_method="bootstrap" if bootstrap > 0 else "covariance")


def _named(A: float, B: float, m: float, r0: float, mu: float, fitted_r0: bool) -> dict[str, float]:
    """Reported quantities of one parameter vector, plus the gain A - R0 (used by _widen_if_flat)."""
    out = {"A": A, "B": B, "C_mid": float(np.exp(m + mu)), "gain": A - r0}
    if fitted_r0:
        out["R0"] = r0
    return out


def _bootstrap(
    x: np.ndarray,
    y: np.ndarray,
    R0: float | None,
    lo: np.ndarray,
    hi: np.ndarray,
    p_hat: np.ndarray,
    mu: float,
    n_boot: int,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals from refits on points resampled with replacement."""
    rng = np.random.default_rng(seed)
    samples: list[dict[str, float]] = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), size=len(x))
        problem = _Problem(x[idx], y[idx], R0)
        p = _solve(problem, [p_hat], lo, hi)
        if p is not None:
            samples.append(_named(*problem.unpack(p), mu, R0 is None))
    if len(samples) < n_boot:
        log.warning("fit_sigmoid: %d of %d bootstrap refits failed and are left out",
                    n_boot - len(samples), n_boot)
    if not samples:
        return {}
    names = list(samples[0])
    lo_q, hi_q = np.percentile(np.array([[d[k] for k in names] for d in samples]), [2.5, 97.5], axis=0)
    return {k: (float(lo_q[j]), float(hi_q[j])) for j, k in enumerate(names)}


def _covariance_intervals(
    problem: _Problem, p: np.ndarray, lo: np.ndarray, hi: np.ndarray, mu: float
) -> dict[str, tuple[float, float]]:
    """95% Wald intervals: s^2 (J^T J)^+ with s^2 = SSR / (n - k) and Student's t on n - k dof."""
    n, k = len(problem.y), len(p)
    if n <= k:
        return {}
    res, J = problem.residuals(p), problem.jacobian(p)
    cov = float(res @ res) / (n - k) * np.linalg.pinv(J.T @ J)
    t = float(stats.t.ppf(0.975, n - k))
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))

    def around(j: int) -> tuple[float, float]:
        return (float(max(p[j] - t * se[j], lo[j])), float(min(p[j] + t * se[j], hi[j])))

    A, B, m, r0 = problem.unpack(p)
    m_lo, m_hi = around(2)
    out = {"A": around(0), "B": around(1), "C_mid": (float(np.exp(m_lo + mu)), float(np.exp(m_hi + mu)))}
    if problem.R0 is None:  # gain g = p[3]; R0 = A - g
        se_r0 = float(np.sqrt(max(cov[0, 0] + cov[3, 3] - 2.0 * cov[0, 3], 0.0)))
        out["R0"] = (float(r0 - t * se_r0), float(min(r0 + t * se_r0, A)))
        out["gain"] = around(3)
    else:
        out["gain"] = (out["A"][0] - problem.R0, out["A"][1] - problem.R0)
    return out


def _widen_if_flat(
    intervals: dict[str, tuple[float, float]], lo: np.ndarray, hi: np.ndarray, mu: float, scale: float
) -> dict[str, tuple[float, float]]:
    """Drop the internal gain interval; if it reaches zero (to 1e-6 of the reward scale: starts sit 1e-9
    inside the bounds), B and C_mid get their whole allowed range."""
    intervals = dict(intervals)
    gain = intervals.pop("gain", None)
    if gain is not None and gain[0] <= 1e-6 * scale:
        intervals["B"] = (float(lo[1]), float(hi[1]))
        intervals["C_mid"] = (float(np.exp(lo[2] + mu)), float(np.exp(hi[2] + mu)))
    return intervals
