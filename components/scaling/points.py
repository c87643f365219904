"""Scaling points from anywhere: a CSV of (N, D or C, loss) rows, read into one table the fitters take.

Column names are matched case-insensitively against common spellings (ours, Epoch's Chinchilla CSV,
Kaplan-style tables), so `llmops scaling scaling.points=../shared/datasets/chinchilla/svg_extracted_data.csv`
works as it is. A row that cannot be used (missing, non-numeric, non-positive or non-finite values) is
skipped and counted by reason; a file without the needed columns is refused with a message naming them.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N_COLUMNS = ("n", "params", "parameters", "model size", "model_size", "n_params")
D_COLUMNS = ("d", "tokens", "training tokens", "n_tokens", "data")
C_COLUMNS = ("c", "flops", "compute", "training flop", "training_flops", "training flops")
LOSS_COLUMNS = ("loss", "val_loss", "final_loss")


@dataclass
class ScalingPoints:
    """Runs as parallel arrays: parameters N, tokens D, compute C and final loss (all positive floats)."""

    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    loss: np.ndarray
    names: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped
    source: str = ""

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, keep: np.ndarray) -> ScalingPoints:
        """The points where `keep` (a boolean mask) is true."""
        names = [n for n, k in zip(self.names, keep, strict=True) if k] if self.names else []
        return ScalingPoints(self.N[keep], self.D[keep], self.C[keep], self.loss[keep], names,
                             dict(self.skipped), self.source)

    def drop_highest_losses(self, count: int) -> ScalingPoints:
        """Epoch's outlier rule: keep the rows whose loss is strictly below the count-th largest loss."""
        if count <= 0:
            return self
        if count >= len(self):
            raise ValueError(f"cannot drop the {count} highest losses of {len(self)} points")
        threshold = np.sort(self.loss)[-count]
        out = self.subset(self.loss < threshold)
        out.skipped["highest_loss_dropped"] = len(self) - len(out)
        return out


def _column(header: list[str], choices: tuple[str, ...]) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    return next((lowered[c] for c in choices if c in lowered), None)


def _number(text: str | None) -> float | None:
    try:
        value = float(str(text).strip().replace("_", ""))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def read_points(path: str | Path, flops_per_param_token: float = 6.0) -> ScalingPoints:
    """Read a CSV with a loss column, an N column, and a D column, a C column, or both.

    With only one of D and C the other comes from C = k N D (k = flops_per_param_token, 6 by default:
    Epoch's convention for the Chinchilla points). Rows are skipped and counted in `skipped` when a value
    is missing or not a positive finite number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scaling.points: {path} is not a file (a CSV of N, D or C, loss)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        cols = {"N": _column(header, N_COLUMNS), "D": _column(header, D_COLUMNS),
                "C": _column(header, C_COLUMNS), "loss": _column(header, LOSS_COLUMNS)}
        missing = [k for k in ("N", "loss") if cols[k] is None]
        if cols["D"] is None and cols["C"] is None:
            missing.append("D or C")
        if missing:
            raise ValueError(
                f"scaling.points: {path} lacks column(s) {missing} (has {header}); name them e.g. "
                f"N/params, D/tokens, C/flops and loss")
        name_col = _column(header, ("name", "run"))
        rows, skipped = [], Counter()
        for row in reader:
            values = {k: _number(row.get(c)) if c else None for k, c in cols.items()}
            if values["N"] is None or values["loss"] is None:
                skipped["bad_N" if values["N"] is None else "bad_loss"] += 1
                continue
            if values["D"] is None and values["C"] is None:
                skipped["bad_D_and_C"] += 1
                continue
            n = values["N"]
            d = values["D"] if values["D"] is not None else values["C"] / (flops_per_param_token * n)
            c = values["C"] if values["C"] is not None else flops_per_param_token * n * d
            rows.append((n, d, c, values["loss"], row.get(name_col, "") if name_col else ""))
    if not rows:
        raise ValueError(f"scaling.points: no usable row in {path} (skipped: {dict(skipped)})")
    n, d, c, loss, names = zip(*rows, strict=True)
    return ScalingPoints(np.array(n), np.array(d), np.array(c), np.array(loss),
                         [str(x) for x in names] if name_col else [], dict(skipped), str(path))


def points_from_rows(rows: list[dict], counting_N: str = "N") -> ScalingPoints:
    """Points from sweep rows (dicts with N, D, C, loss and name)."""
    if not rows:
        raise ValueError("no scaling runs to fit")
    return ScalingPoints(
        np.array([float(r[counting_N]) for r in rows]), np.array([float(r["D"]) for r in rows]),
        np.array([float(r["C"]) for r in rows]), np.array([float(r["loss"]) for r in rows]),
        [str(r["name"]) for r in rows], {}, "sweep")
