"""Predict a pre-training gap from token overlap with the stored gap-vs-overlap fit (experiment 3).

The fit is the one the experiments report draws: one point per (task, pre-training size), x = the subset's
overlap with the task in percent, y = the mean gap over seeds in accuracy points, a least-squares line
through them (tinylm.reports.experiments.summarise + tinylm.analysis.overlap.fit_line). A new subset's gap
is read off that line with a prediction interval for one new point (a new mean over the same number of seeds):

    y0 +- t_{(1+c)/2, n-2} * s * sqrt(1 + 1/n + (x0 - mean(x))^2 / Sxx),   s^2 = SSE / (n - 2)

The interval says how far the stored points scatter around the line; it does not cover a wrong model, and
outside the fitted x range it is an extrapolation, which `GapPrediction.extrapolation` flags.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from tinylm.analysis.overlap import DEFAULT_MEASURE, fit_line
from tinylm.analysis.records import load_records, summarise


@dataclass(frozen=True)
class GapPrediction:
    """A predicted gap (accuracy points) at one overlap (percent), with its prediction interval."""

    overlap: float
    gap: float
    low: float
    high: float
    confidence: float
    extrapolation: bool  # the overlap lies outside the range the line was fitted on

    def covers(self, measured: float) -> bool:
        return self.low <= measured <= self.high


@dataclass(frozen=True)
class GapFit:
    """The stored fit of mean gap (points) on overlap (%) for one measure, and what a prediction needs."""

    measure: str
    slope: float
    intercept: float
    r: float
    r_ci: tuple[float, float] | None
    p_value: float
    n: int
    x: tuple[float, ...]  # the fitted points, overlap in percent
    y: tuple[float, ...]  # mean gap in accuracy points
    labels: tuple[str, ...]  # "task@articles" of each point

    @property
    def residual_sd(self) -> float:
        """s, the residual standard deviation with n - 2 degrees of freedom (NaN below 3 points)."""
        if self.n < 3:
            return float("nan")
        x, y = np.asarray(self.x), np.asarray(self.y)
        residuals = y - (self.slope * x + self.intercept)
        return float(math.sqrt((residuals @ residuals) / (self.n - 2)))

    def predict(self, overlap: float, confidence: float = 0.95) -> GapPrediction:
        """The line's gap at `overlap` (percent) and the prediction interval of one new point."""
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
        x = np.asarray(self.x)
        gap = self.slope * overlap + self.intercept
        half = float("nan")
        if self.n >= 3:  # n - 2 degrees of freedom: two points leave no residual spread to estimate
            sxx = float(((x - x.mean()) ** 2).sum())
            se = self.residual_sd * math.sqrt(1 + 1 / self.n + (overlap - x.mean()) ** 2 / sxx)
            half = float(stats.t.ppf((1 + confidence) / 2, self.n - 2)) * se
        outside = bool(overlap < x.min() or overlap > x.max())
        return GapPrediction(float(overlap), float(gap), float(gap - half), float(gap + half), confidence, outside)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "residual_sd": self.residual_sd}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GapFit:
        """Inverse of to_dict (derived keys such as residual_sd are recomputed, not read)."""
        r_ci = d.get("r_ci")
        return cls(d["measure"], float(d["slope"]), float(d["intercept"]), float(d["r"]),
                   tuple(r_ci) if r_ci else None, float(d["p_value"]), int(d["n"]), tuple(d["x"]), tuple(d["y"]),
                   tuple(d["labels"]))


def fit_gap_on_overlap(records: Sequence[Mapping[str, Any]], measure: str = DEFAULT_MEASURE,
                       confidence: float = 0.95) -> GapFit:
    """The report's experiment-3 line for `measure` from run records (those of experiment "overlap")."""
    cells = [c for c in summarise(load_records(records), confidence)
             if c.experiment == "overlap" and measure in c.overlap]
    if len(cells) < 2:
        raise ValueError(f"the results hold {len(cells)} experiment-3 point(s) with {measure} overlap; "
                         "a fit needs at least 2 (run `tinylm reproduce overlap` first)")
    x = [100 * c.overlap[measure] for c in cells]
    y = [100 * c.gap.mean for c in cells]
    line = fit_line(x, y, confidence)
    return GapFit(measure, line.slope, line.intercept, line.r, line.r_ci, line.p_value, line.n, tuple(x), tuple(y),
                  tuple(f"{c.task}@{c.articles}" for c in cells))


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A results.json of `tinylm reproduce` as a dict with a 'records' list (a bare list is wrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results file (the results.json of `tinylm reproduce overlap|all`)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        data = {"records": data}
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError(f"{path}: expected a list of run records or an object with a 'records' list")
    return data


def load_fit(path: str | os.PathLike[str], measure: str = DEFAULT_MEASURE, confidence: float = 0.95) -> GapFit:
    """The stored gap-vs-overlap fit of a results.json for `measure`."""
    return fit_gap_on_overlap(load_results(path)["records"], measure, confidence)
