"""Multi-seed statistics: a mean with its Student-t confidence interval, the per-seed pre-training gap, and one
trend slope per seed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats


class MeanCI(NamedTuple):
    """A mean over n runs and the half-width of its confidence interval (NaN when n < 2: no interval exists)."""

    mean: float
    half_width: float
    n: int

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.half_width)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes(self, value: float = 0.0) -> bool:
        """True when the interval exists and lies entirely above or below `value`."""
        return self.has_ci and (self.low > value or self.high < value)


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanCI:
    """Mean and the half-width of its two-sided t-interval: t_{(1+c)/2, n-1} * s / sqrt(n).

    One value gives half_width NaN (the spread of one run is unknown); no values, or a non-finite one, is an error.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    xs = np.asarray(values, dtype=float)
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError("mean_ci needs a non-empty 1-D sequence of values")
    if not np.all(np.isfinite(xs)):
        raise ValueError(f"values must be finite, got {xs.tolist()}")
    n = int(xs.size)
    if n < 2:
        return MeanCI(float(xs[0]), float("nan"), 1)
    sem = float(xs.std(ddof=1)) / math.sqrt(n)
    return MeanCI(float(xs.mean()), float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sem, n)


def slopes_by_seed(points: Mapping[int, Sequence[tuple[float, float]]]) -> dict[int, float]:
    """Least-squares slope of y on x within each seed's (x, y) points, seeds ascending; a seed whose x values do
    not differ has none. One slope per seed makes each seed one independent replicate of a trend, so a test over
    the slopes never counts runs that share a scratch twin or a pre-trained model as independent."""
    slopes = {}
    for seed, pts in sorted(points.items()):
        x, y = np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)
        if len(set(x.tolist())) > 1:
            slopes[seed] = float(np.polyfit(x, y, 1)[0])
    return slopes


def paired_gap(
    pretrained: Sequence[float] | np.ndarray, scratch: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> MeanCI:
    """Mean and CI of the per-seed gaps pretrained[i] - scratch[i].

    Pairing by seed (each pair shares data order and head initialisation) removes the seed-to-seed spread
    the two arms have in common, so this interval is the one to judge the gap by.
    """
    a, b = np.asarray(pretrained, dtype=float), np.asarray(scratch, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_gap needs one scratch run per pre-trained run, got {a.shape} and {b.shape}")
    return mean_ci(a - b, confidence)
