"""Scaling-law fitters for pre-training: Chinchilla's parametric law (Approach 3), IsoFLOP minima
(Approach 2), and plain power laws (Kaplan). Pure numpy/scipy so they run anywhere, stage or test.

Approach 3 follows the protocol of Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt"),
which reproduces the published fit on Epoch's digitised points:

* log L̂ = LSE(a − α log N, b − β log D, e), with A = e^a, B = e^b, E = e^e;
* objective = SUM over points of Huber_δ(log L̂ − log L), δ = 1e-3 (a mean shrinks the objective so far
  that L-BFGS stops early: that is how Hoffmann et al. got their worse fit);
* L-BFGS-B from each of Hoffmann's 4,500 starts, keep the best.

Speed: all starts run scipy's L-BFGS-B routine in lock step, their function evaluations batched into
one vectorised call (see _lbfgsb_lockstep); the full 4,500-start fit on 240 points takes ~5-7 s on one
busy CPU core, against ~45 s for a loop of minimize() calls with the same analytic gradient.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

try:  # scipy's compiled L-BFGS-B routine, driven by _lbfgsb_lockstep (see there)
    from scipy.optimize import _lbfgsb
except ImportError:  # pragma: no cover - depends on the scipy build
    _lbfgsb = None

log = logging.getLogger(__name__)

PARAM_ORDER = ("a", "b", "e", "alpha", "beta")  # order of the optimiser's parameter vector

HOFFMANN_GRID: dict[str, np.ndarray] = {
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
    "e": np.arange(-1.0, 1.01, 0.5),
    "a": np.arange(0.0, 25.01, 5.0),
    "b": np.arange(0.0, 25.01, 5.0),
}

# Default bootstrap starts: the full-data optimum plus exponents moved by these offsets (see
# _bootstrap_grid). Resamples sit close to the full-data fit, so a 3x3 neighbourhood suffices.
BOOTSTRAP_EXPONENT_OFFSETS = (-0.1, 0.0, 0.1)

# L-BFGS-B settings: scipy's defaults except gtol. The summed Huber objective is small (~1e-3 on real data),
# so scipy's gtol of 1e-5 is not small against its gradient; stopping is left to ftol (scipy: decrease <
# ftol * max(|f|, 1), i.e. absolute here). Data with far less noise than 1e-3 in log loss stop early.
_LBFGS_OPTIONS = {"maxiter": 1000, "gtol": 1e-12, "ftol": 2.2e-9}
_LBFGS_MAXCOR, _LBFGS_MAXLS, _LBFGS_MAXFUN = 10, 20, 15000  # scipy's defaults

_INTERVAL_NAMES = ("E", "A", "B", "alpha", "beta")


# --------------------------------------------------------------------------------------------------
# Approach 3: parametric fit
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A/N^alpha + B/D^beta, with the fit's diagnostics."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float  # summed Huber at the optimum
    n_points: int
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% bootstrap percentiles

    def predict(self, N, D) -> np.ndarray:
        """Predicted loss; N and D broadcast against each other."""
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def is_scaling_law(self) -> bool:
        """Whether loss falls with both N and D (positive A, B, alpha, beta). A fit to runs that do not
        follow the law (e.g. too few steps for the bigger models) can land on a negative exponent, and
        then there is no compute-optimal allocation."""
        return bool(min(self.A, self.B, self.alpha, self.beta) > 0)

    @property
    def G(self) -> float:
        """(αA/(βB))^(1/(α+β)): N_opt = G (C/k)^a and D_opt = (C/k)^b / G under C = k N D (nan when the
        fit is not a scaling law)."""
        if not self.is_scaling_law:
            return math.nan
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def to_dict(self) -> dict:
        """JSON-able summary (intervals as [lo, hi] lists)."""
        return {
            "E": float(self.E),
            "A": float(self.A),
            "B": float(self.B),
            "alpha": float(self.alpha),
            "beta": float(self.beta),
            "a": float(self.a),
            "b": float(self.b),
            "G": float(self.G),
            "objective": float(self.objective),
            "n_points": int(self.n_points),
            "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
        }


def _validate_points(
    N, D, loss, min_points: int = 5, names: tuple[str, str, str] = ("N", "D", "loss")
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays of equal length, all finite and positive; ValueError otherwise."""
    arrays = [np.asarray(v, dtype=float).ravel() for v in (N, D, loss)]
    lengths = {name: len(a) for name, a in zip(names, arrays, strict=True)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{', '.join(names)} must have the same length, got {lengths}")
    for name, a in zip(names, arrays, strict=True):
        bad = ~(np.isfinite(a) & (a > 0))
        if bad.any():
            raise ValueError(f"{name} must be finite and positive; {int(bad.sum())} value(s) are not "
                             f"(first: {a[bad][0]!r})")
    if len(arrays[0]) < min_points:
        raise ValueError(f"need at least {min_points} points to fit, got {len(arrays[0])}")
    return arrays[0], arrays[1], arrays[2]


def _grid_starts(grid: dict[str, np.ndarray]) -> np.ndarray:
    """Cartesian product of the grid as an (n_starts, 5) array in PARAM_ORDER."""
    missing = set(PARAM_ORDER) - set(grid)
    if missing:
        raise ValueError(f"grid lacks {sorted(missing)}; it needs values for each of {list(PARAM_ORDER)}")
    axes = [np.atleast_1d(np.asarray(grid[k], dtype=float)).ravel() for k in PARAM_ORDER]
    if any(len(ax) == 0 or not np.isfinite(ax).all() for ax in axes):
        raise ValueError("grid values must be non-empty and finite")
    return np.array(list(itertools.product(*axes)), dtype=float).reshape(-1, len(PARAM_ORDER))


class _HuberLSE:
    """Summed Huber objective of the log-sum-exp model and its analytic gradient, for a batch of
    parameter vectors at once (the lock-step optimiser evaluates all pending starts in one call).

    Data: the design Z = [1; ln N; ln D; ln L], either (4, n), shared by every start, or (R, 4, n) with
    one resample per row for the bootstrap, where rows[i] names start i's resample. The three log-terms
    minus ln L come out of one batched matrix product T @ Z and the gradient out of another, so the cost
    is a handful of passes over the data. The fast path skips the max-shift of log-sum-exp (the terms sit
    near ln L, far from overflow) and redoes, with the shift, only rows whose result is not finite.
    """

    def __init__(self, ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray, delta: float):
        ln_n, ln_d, ln_l = (np.asarray(v, dtype=float) for v in (ln_n, ln_d, ln_l))
        self.Z = np.stack([np.ones_like(ln_l), ln_n, ln_d, ln_l], axis=-2)  # (4, n) or (R, 4, n)
        self.ZT = np.ascontiguousarray(np.swapaxes(self.Z, -1, -2))
        self.inv_l = np.exp(-ln_l)  # the E term is E / L: a product, not an exp
        self.shared = self.Z.ndim == 2
        self.delta = float(delta)
        self._ws: dict[str, np.ndarray] = {}

    def _buffers(self, k: int) -> dict[str, np.ndarray]:
        """Work arrays for k starts, reused across calls: fresh multi-MB temporaries cost page faults."""
        if len(self._ws.get("s", ())) < k:
            n = self.Z.shape[-1]
            self._ws = {"T": np.zeros((k, 2, 4)), "U": np.empty((k, 2, n)), "X": np.empty((k, 3, n)),
                        "s": np.empty((k, n)), "r": np.empty((k, n)), "c": np.empty((k, n)),
                        "t": np.empty((k, n)), "G": np.empty((k, 3, 4))}
            self._ws["T"][:, :, 3] = -1.0
        return {name: buf[:k] for name, buf in self._ws.items()}

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """theta (k, 5) in PARAM_ORDER, rows (k,) -> objective (k,), gradient (k, 5)."""
        Z, ZT, inv_l = (self.Z, self.ZT, self.inv_l) if self.shared else (
            self.Z[rows], self.ZT[rows], self.inv_l[rows])
        w = self._buffers(len(theta))
        T, X, s = w["T"], w["X"], w["s"]
        T[:, 0, 0], T[:, 1, 0] = theta[:, 0], theta[:, 1]  # a, b
        T[:, 0, 1], T[:, 1, 2] = -theta[:, 3], -theta[:, 4]  # -alpha, -beta
        U = np.matmul(T, Z, out=w["U"])  # (k, 2, n): a - alpha ln N - ln L, b - beta ln D - ln L
        np.exp(U, out=X[:, :2])
        np.multiply(np.exp(theta[:, 2:3]), inv_l, out=X[:, 2])  # E / L
        np.add.reduce(X, axis=1, out=s)
        r = np.log(s, out=w["r"])  # log L̂ - log L
        f, c = self._huber(r, w["c"], w["t"])
        bad = ~np.isfinite(f)
        if bad.any():  # exp over- or underflowed: redo those rows with the max-shift
            f[bad] = self._shifted(theta[bad], U[bad], Z if self.shared else Z[bad], X, s, r, c, bad)
        np.divide(c, s, out=w["t"])
        X *= w["t"][:, None, :]  # softmax weights times Huber'
        G = np.matmul(X, ZT, out=w["G"])  # (k, 3, 4): df/d(coefficients of 1, ln N, ln D, ln L)
        return f, np.stack([G[:, 0, 0], G[:, 1, 0], G[:, 2, 0], -G[:, 0, 1], -G[:, 1, 2]], axis=1)

    def _shifted(self, theta, U, Z, X, s, r, c, bad) -> np.ndarray:
        """Overflow-proof log-sum-exp for the rows in bad; updates X, s, r, c there, returns f there."""
        V = np.concatenate([U, (theta[:, 2:3] - Z[..., 3, :])[:, None, :]], axis=1)  # (kb, 3, n)
        m = V.max(axis=1)
        X[bad] = np.exp(V - m[:, None, :])
        s[bad] = X[bad].sum(axis=1)
        r[bad] = m + np.log(s[bad])
        f, c[bad] = self._huber(r[bad], np.empty_like(m), np.empty_like(m))
        return f

    def _huber(self, r: np.ndarray, c: np.ndarray, tmp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row sums of Huber(r), and Huber'(r) in c: c r - c^2/2 with c = clip(r) is r^2/2 inside ±delta
        and delta (|r| - delta/2) outside, and not finite where r is not."""
        d = self.delta
        np.maximum(r, -d, out=c)
        np.minimum(c, d, out=c)
        np.multiply(c, -0.5, out=tmp)
        tmp += r
        return np.einsum("ij,ij->i", c, tmp), c


def _lbfgsb_lockstep(fun, x0s: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy's L-BFGS-B from every row of x0s, all advanced in lock step.

    Each start gets its own state for scipy's compiled routine (the private
    scipy.optimize._lbfgsb.setulb, scipy >= 1.15), driven exactly as minimize(method="L-BFGS-B") drives
    it with the options above; whenever the routine asks for f and g, the requests of all starts are
    answered by one batched call fun(x (k, p), rows (k,)). Same algorithm, same iterates as one minimize()
    per start (up to rounding in the batched objective), at a fraction of the cost: per start, numpy's
    call overhead dwarfs the arithmetic of a few hundred points. _lbfgsb_many checks the driver first.
    """
    K, p = x0s.shape
    m = _LBFGS_MAXCOR
    X = np.array(x0s, dtype=np.float64)  # setulb updates each row in place
    G, F = np.zeros((K, p)), np.zeros(K)
    WA = np.zeros((K, 2 * m * p + 5 * p + 11 * m * m + 8 * m))
    IWA = np.zeros((K, 3 * p), np.int32)
    TASK, LN_TASK = np.zeros((K, 2), np.int32), np.zeros((K, 2), np.int32)
    LSAVE, ISAVE, DSAVE = np.zeros((K, 4), np.int32), np.zeros((K, 44), np.int32), np.zeros((K, 29))
    state = list(zip(X, G, WA, IWA, TASK, LSAVE, ISAVE, DSAVE, LN_TASK, strict=True))  # row views
    nbd, lo, hi = np.zeros(p, np.int32), np.zeros(p), np.zeros(p)  # unbounded
    factr, pgtol = _LBFGS_OPTIONS["ftol"] / np.finfo(float).eps, _LBFGS_OPTIONS["gtol"]
    maxiter, setulb = _LBFGS_OPTIONS["maxiter"], _lbfgsb.setulb
    n_iter, n_fev = np.zeros(K, np.int64), np.zeros(K, np.int64)
    active = list(range(K))
    while active:
        pending = []
        for i in active:
            x, g, wa, iwa, task, lsave, isave, dsave, ln_task = state[i]
            while True:
                setulb(m, x, lo, hi, nbd, F[i], g, factr, pgtol, wa, iwa, task, lsave, isave, dsave,
                       _LBFGS_MAXLS, ln_task)
                if task[0] == 3:  # wants f and g at x
                    pending.append(i)
                    break
                if task[0] != 1:  # converged, or stopped
                    break
                n_iter[i] += 1  # a new iterate
                if n_iter[i] >= maxiter or n_fev[i] > _LBFGS_MAXFUN:
                    task[0], task[1] = 5, 504  # stop, as minimize does
        if pending:
            idx = np.array(pending)
            F[idx], G[idx] = fun(X[idx], rows[idx])
            n_fev[idx] += 1
        active = pending
    # After a failed line search the routine restores the previous x but not the caller's f: re-evaluate.
    return X, fun(X, rows)[0]


def _lbfgsb_scipy(fun, x0s: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The public route, one minimize(method="L-BFGS-B") per start."""
    options = {**_LBFGS_OPTIONS, "maxcor": _LBFGS_MAXCOR, "maxls": _LBFGS_MAXLS, "maxfun": _LBFGS_MAXFUN}
    xs, fs = np.array(x0s, dtype=np.float64), np.zeros(len(x0s))
    for i, (x0, row) in enumerate(zip(x0s, rows, strict=True)):

        def one(x: np.ndarray, row: int = row) -> tuple[float, np.ndarray]:
            f, g = fun(x[None, :], np.array([row]))
            return float(f[0]), g[0]

        res = minimize(one, x0, jac=True, method="L-BFGS-B", options=options)
        xs[i], fs[i] = res.x, res.fun
    return xs, fun(xs, rows)[0]


def _lockstep_matches_scipy() -> bool:
    """Whether the lock-step driver reproduces minimize() bit for bit on a small test problem."""
    if _lbfgsb is None:
        return False

    def rosen(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = x[:, 1] - x[:, 0] ** 2
        f = 100.0 * w**2 + (1.0 - x[:, 0]) ** 2
        return f, np.stack([-400.0 * x[:, 0] * w - 2.0 * (1.0 - x[:, 0]), 200.0 * w], axis=1)

    x0s, rows = np.array([[-1.2, 1.0], [2.0, -1.0], [0.5, 0.5]]), np.zeros(3, np.int64)
    try:
        x_d, f_d = _lbfgsb_lockstep(rosen, x0s, rows)
    except Exception:  # any failure of the private API means: use the public one
        return False
    x_s, f_s = _lbfgsb_scipy(rosen, x0s, rows)
    return bool(np.array_equal(x_d, x_s) and np.array_equal(f_d, f_s))


_USE_LOCKSTEP: bool | None = None  # decided on first use
_CHUNK = 512  # starts per lock-step batch: bounds memory, keeps the batch's arrays in cache


def _lbfgsb_many(fun, x0s: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimise from every start with scipy's L-BFGS-B -> (x (K, p), f (K,)); lock-step when it checks out."""
    global _USE_LOCKSTEP
    if _USE_LOCKSTEP is None:
        _USE_LOCKSTEP = _lockstep_matches_scipy()
        if not _USE_LOCKSTEP:
            log.info("scaling.laws: lock-step L-BFGS-B unavailable, using scipy.optimize.minimize per start")
    solver = _lbfgsb_lockstep if _USE_LOCKSTEP else _lbfgsb_scipy
    xs, fs = np.empty_like(x0s, dtype=np.float64), np.empty(len(x0s))
    with np.errstate(all="ignore"):  # wild starts may overflow on the way; non-finite results are dropped
        for lo in range(0, len(x0s), _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            xs[sl], fs[sl] = solver(fun, x0s[sl], rows[sl])
    fs[~np.isfinite(xs).all(axis=1)] = np.nan
    return xs, fs


def _best_of_starts(objective: _HuberLSE, starts: np.ndarray) -> tuple[np.ndarray, float]:
    """Run L-BFGS-B from every start on one data set; the parameters and objective of the best result."""
    xs, fs = _lbfgsb_many(objective, starts, np.zeros(len(starts), np.int64))
    if not np.isfinite(fs).any():
        raise RuntimeError("no start converged to a finite objective")
    i = int(np.nanargmin(fs))
    return xs[i], float(fs[i])


def _bootstrap_grid(best: np.ndarray, N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Starts for bootstrap refits: the full-data optimum and its exponents moved by ±0.1.

    When an exponent moves, its log-coefficient moves with it (a += Δα·mean log N) so that each start
    predicts the same loss at the data's geometric-mean size: every start is a plausible fit.
    """
    a, b, e, alpha, beta = best
    mean_ln_n, mean_ln_d = float(np.mean(np.log(N))), float(np.mean(np.log(D)))
    starts = [
        (a + da * mean_ln_n, b + db * mean_ln_d, e, alpha + da, beta + db)
        for da in BOOTSTRAP_EXPONENT_OFFSETS
        for db in BOOTSTRAP_EXPONENT_OFFSETS
    ]
    starts.sort(key=lambda s: abs(s[3] - alpha) + abs(s[4] - beta))  # the optimum itself first
    return np.array(starts, dtype=float)


def _natural_params(theta: np.ndarray) -> dict[str, float]:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": alpha, "beta": beta}


def fit_chinchilla(
    N,
    D,
    loss,
    *,
    delta: float = 1e-3,
    grid: dict[str, np.ndarray] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    bootstrap_grid: dict | None = None,
) -> ChinchillaFit:
    """Fit L = E + A/N^α + B/D^β by Chinchilla's Approach 3 (see the module docstring).

    grid maps each of a, b, e, alpha, beta to the values whose Cartesian product gives the starts
    (default HOFFMANN_GRID, 4,500 starts). With bootstrap > 0, the points are resampled with replacement
    that many times and each resample is refitted from bootstrap_grid (same format as grid; default: the
    full-data optimum plus a 3x3 neighbourhood in (α, β), see _bootstrap_grid); intervals are the
    2.5/97.5 percentiles of E, A, B, alpha, beta.
    """
    N, D, loss = _validate_points(N, D, loss)
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    objective = _HuberLSE(np.log(N), np.log(D), np.log(loss), delta)
    best, best_f = _best_of_starts(objective, _grid_starts(HOFFMANN_GRID if grid is None else grid))
    intervals: dict[str, tuple[float, float]] = {}
    if bootstrap > 0:
        intervals = _bootstrap_intervals(N, D, loss, delta, best, bootstrap, seed, bootstrap_grid)
    return ChinchillaFit(**_natural_params(best), objective=best_f, n_points=len(N), intervals=intervals)


def _bootstrap_intervals(
    N: np.ndarray,
    D: np.ndarray,
    loss: np.ndarray,
    delta: float,
    best: np.ndarray,
    n_boot: int,
    seed: int,
    bootstrap_grid: dict | None,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals from refits on resampled points (all resamples x starts in one batch)."""
    starts = _bootstrap_grid(best, N, D) if bootstrap_grid is None else _grid_starts(bootstrap_grid)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(N), size=(n_boot, len(N)))  # one resample per row
    objective = _HuberLSE(np.log(N)[idx], np.log(D)[idx], np.log(loss)[idx], delta)
    n_starts = len(starts)
    xs, fs = _lbfgsb_many(objective, np.tile(starts, (n_boot, 1)), np.repeat(np.arange(n_boot), n_starts))
    fs = np.where(np.isfinite(fs), fs, np.inf).reshape(n_boot, n_starts)
    ok = np.isfinite(fs).any(axis=1)
    if not ok.all():
        log.warning("fit_chinchilla: %d of %d bootstrap refits failed and are left out", (~ok).sum(), n_boot)
    if not ok.any():
        return {}
    theta = xs.reshape(n_boot, n_starts, -1)[np.arange(n_boot), fs.argmin(axis=1)][ok]
    samples = np.column_stack([np.exp(theta[:, 2]), np.exp(theta[:, 0]), np.exp(theta[:, 1]),
                               theta[:, 3], theta[:, 4]])  # in _INTERVAL_NAMES order
    lo, hi = np.percentile(samples, [2.5, 97.5], axis=0)
    return {k: (float(lo[j]), float(hi[j])) for j, k in enumerate(_INTERVAL_NAMES)}


def compute_optimal(
    fit: ChinchillaFit, compute, flops_per_param_token: float = 6.0
) -> dict[str, np.ndarray | float]:
    """Loss-minimising N and D at compute C under C = k N D (k = flops_per_param_token).

    Minimising E + A/N^α + B/D^β along N D = C/k gives N_opt = G (C/k)^a and D_opt = (C/k)^b / G with
    G = (αA/(βB))^(1/(α+β)). Scalars in, floats out; arrays in, arrays out.
    """
    C = np.asarray(compute, dtype=float)
    if not np.all(np.isfinite(C) & (C > 0)):
        raise ValueError("compute must be finite and positive")
    if not flops_per_param_token > 0:
        raise ValueError(f"flops_per_param_token must be positive, got {flops_per_param_token}")
    if not fit.is_scaling_law:
        raise ValueError(
            f"the fitted law (A={fit.A:.3g}, B={fit.B:.3g}, alpha={fit.alpha:.3g}, beta={fit.beta:.3g}) does "
            "not fall with both N and D, so it has no compute-optimal allocation: the runs do not follow a "
            "scaling law (too few steps for the larger models?); sweep longer runs or fewer sizes")
    G = fit.G
    x = C / flops_per_param_token
    n_opt = G * x**fit.a
    d_opt = x**fit.b / G
    out = {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt}
    if C.ndim == 0:
        return {k: float(v) for k, v in out.items()}
    return out


# --------------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP profiles
# --------------------------------------------------------------------------------------------------


def _group_by_compute(C: np.ndarray, rtol: float = 0.01) -> list[np.ndarray]:
    """Indices of runs sharing a compute budget: sorted C values join a group while they are within
    rtol of the group's smallest member (anchoring on the first member stops long chains drifting)."""
    order = np.argsort(C, kind="stable")
    groups: list[list[int]] = []
    anchor = -np.inf
    for i in order:
        if groups and C[i] <= anchor * (1.0 + rtol):
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
            anchor = C[i]
    return [np.array(g) for g in groups]


def isoflop_profiles(N, C, loss, *, min_points: int = 3) -> list[dict]:
    """Every IsoFLOP group with its parabola fit (loss against ln N) and a status.

    status is "ok", "too_few_points" (fewer than min_points runs or fewer than 3 distinct sizes) or
    "non_positive_curvature" (no minimum). Keys: C (geometric mean of the group's budgets), n_points,
    status, N_opt, loss_min (NaN unless ok), curvature (coefficient of (ln N)^2, NaN if not fitted),
    interior (whether N_opt lies within the group's sampled sizes: an extrapolated minimum is weak).
    """
    N, C, loss = _validate_points(N, C, loss, min_points=1, names=("N", "C", "loss"))
    out = []
    for idx in _group_by_compute(C):
        row = {"C": float(np.exp(np.mean(np.log(C[idx])))), "n_points": len(idx), "N_opt": float("nan"),
               "loss_min": float("nan"), "curvature": float("nan"), "interior": False}
        x = np.log(N[idx])
        if len(idx) < max(min_points, 3) or len(np.unique(x)) < 3:
            out.append({**row, "status": "too_few_points"})
            continue
        x0 = float(np.mean(x))  # centre for conditioning
        p2, p1, p0 = np.polyfit(x - x0, loss[idx], 2)
        row["curvature"] = float(p2)
        if not p2 > 0:
            out.append({**row, "status": "non_positive_curvature"})
            continue
        xm = -p1 / (2.0 * p2)
        row.update(N_opt=float(np.exp(x0 + xm)), loss_min=float(p0 - p1**2 / (4.0 * p2)),
                   interior=bool(x.min() <= x0 + xm <= x.max()))
        out.append({**row, "status": "ok"})
    return out


def isoflop_minima(N, C, loss, *, min_points: int = 3) -> list[dict]:
    """Approach 2: per compute budget, the N minimising a parabola of loss in ln N.

    Runs are grouped by C (equal within 1%). Only groups with >= min_points runs (and >= 3 distinct sizes)
    whose parabola opens upwards are returned, sorted by C, as {"C", "N_opt", "loss_min", "n_points",
    "curvature", "interior"}; skipped groups are logged at WARNING and listed by isoflop_profiles.
    """
    profiles = isoflop_profiles(N, C, loss, min_points=min_points)
    skipped = [p for p in profiles if p["status"] != "ok"]
    if skipped:
        log.warning("isoflop_minima: skipped %d of %d compute groups: %s", len(skipped), len(profiles),
                    ", ".join(f"C={p['C']:.3g} ({p['status']}, {p['n_points']} runs)" for p in skipped))
    return [{k: v for k, v in p.items() if k != "status"} for p in profiles if p["status"] == "ok"]


# --------------------------------------------------------------------------------------------------
# Single power laws
# --------------------------------------------------------------------------------------------------


def _positive_pair(x, y, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if len(x) != len(y):
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {len(x)} and {len(y)}")
    for name, v in zip(names, (x, y), strict=True):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"{name} must be finite and positive")
    if len(np.unique(x)) < 2:
        raise ValueError(f"need at least 2 distinct {names[0]} values, got {len(np.unique(x))}")
    return x, y


def fit_power_law(x, y) -> tuple[float, float]:
    """y = k x^p by least squares in log-log space -> (k, p). E.g. N_opt(C) from isoflop minima."""
    x, y = _positive_pair(x, y, ("x", "y"))
    p, log_k = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(log_k)), float(p)


def fit_kaplan(x, loss) -> tuple[float, float]:
    """Kaplan et al.'s L(x) = (x_c / x)^α_x, fitted in log space -> (x_c, α_x).

    log L = α log x_c − α log x is linear in log x: slope −α, intercept α log x_c.
    """
    x, loss = _positive_pair(x, loss, ("x", "loss"))
    slope, intercept = np.polyfit(np.log(x), np.log(loss), 1)
    alpha = -float(slope)
    if alpha == 0.0:
        raise ValueError("loss does not vary with x: alpha_x = 0 leaves x_c undefined")
    return float(np.exp(intercept / alpha)), alpha
