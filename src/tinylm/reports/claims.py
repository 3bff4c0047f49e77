"""The paper's claims 1-3 judged from run records: validated records, one cell per point, and the verdict rules.

The input is a plain list of run records, so a report can be re-rendered from a stored results.json alone
(a JSON list of records, or an object whose "records" key holds that list). One record is one seed of one
pre-trained model and its from-scratch twin:

    {"experiment": "gap" | "size" | "overlap", "task": "ag_news", "articles": 2000, "seed": 0,
     "pretrained_accuracy": 0.83, "scratch_accuracy": 0.41,           # test accuracies, fractions in [0, 1]
     "overlap": {"token": 0.97, "type": 0.88, "weighted": 0.91},      # optional (needed by experiment 3)
     "seconds": 812.5}                                                # optional compute time of the pair

The gap is pretrained - scratch per seed; means carry a Student-t confidence interval over seeds (the gap's
is the paired one, see tinylm.analysis.stats). Every verdict ("shows", "not established", "does not show") is
generated from these numbers by the rules in gap_finding, size_finding and overlap_finding; the report that
shows them is tinylm.reports.experiments.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.analysis.overlap import LineFit, fit_line
from tinylm.analysis.stats import MeanCI, mean_ci, paired_gap
from tinylm.reports.render import fmt_mean_ci, task_key

EXPERIMENTS: tuple[str, ...] = ("gap", "size", "overlap")
REQUIRED_FIELDS: tuple[str, ...] = ("experiment", "task", "articles", "seed", "pretrained_accuracy", "scratch_accuracy")

# Verdicts of the findings; the report's summary groups tasks by them.
SHOWS, UNCLEAR, NO, NA = "shows", "not established", "does not show", "no data"


# ---------------------------------------------------------------- records


def _check_record(record: Any, index: int) -> dict[str, Any]:
    """A validated copy of one record; ValueError naming its index when it is malformed."""
    where = f"record {index}"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    rec = dict(record)
    if rec["experiment"] not in EXPERIMENTS:
        raise ValueError(f"{where}: experiment must be one of {', '.join(EXPERIMENTS)}, got {rec['experiment']!r}")
    if not isinstance(rec["task"], str) or not rec["task"]:
        raise ValueError(f"{where}: task must be a non-empty string")
    for key in ("articles", "seed"):
        if isinstance(rec[key], bool) or not isinstance(rec[key], int):
            raise ValueError(f"{where}: {key} must be an integer, got {rec[key]!r}")
    for key in ("pretrained_accuracy", "scratch_accuracy"):
        value = rec[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"{where}: {key} must be a fraction in [0, 1], got {value!r}")
    overlap = rec.get("overlap")
    if overlap is not None and not (
        isinstance(overlap, Mapping) and all(isinstance(v, int | float) and 0 <= v <= 1 for v in overlap.values())
    ):
        raise ValueError(f"{where}: overlap must map measure names to fractions in [0, 1], got {overlap!r}")
    return rec


def load_records(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validated records from a results.json path or an in-memory list; one seed per point at most."""
    if isinstance(source, str | os.PathLike):
        data = json.loads(Path(source).read_text(encoding="utf-8"))
        if isinstance(data, Mapping):
            data = data.get("records")
        if not isinstance(data, list):
            raise ValueError(f"{source}: expected a list of run records or an object with a 'records' list")
    else:
        data = list(source)
    records = [_check_record(r, i) for i, r in enumerate(data)]
    if not records:
        raise ValueError("no run records to report on")
    seen: set[tuple[Any, ...]] = set()
    for i, r in enumerate(records):
        key = (r["experiment"], r["task"], r["articles"], r["seed"])
        if key in seen:  # a repeated seed would be counted twice in the mean and narrow the CI falsely
            raise ValueError(f"record {i}: duplicate run {key}")
        seen.add(key)
    return records


@dataclass(frozen=True)
class Cell:
    """All seeds of one (experiment, task, pre-training size) point."""

    experiment: str
    task: str
    articles: int
    pretrained: MeanCI
    scratch: MeanCI
    gap: MeanCI
    overlap: dict[str, float]  # mean over the seeds that carry it (the same subset, so normally identical)
    seconds: float
    seeds: tuple[int, ...]


def summarise(records: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[Cell]:
    """One Cell per (experiment, task, articles), in experiment, paper task and size order."""
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["experiment"], r["task"], r["articles"])].append(r)
    cells = []
    for (experiment, task, articles), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        pre = [r["pretrained_accuracy"] for r in runs]
        scratch = [r["scratch_accuracy"] for r in runs]
        overlap_values: dict[str, list[float]] = defaultdict(list)
        for r in runs:
            for name, value in (r.get("overlap") or {}).items():
                overlap_values[name].append(value)
        cells.append(Cell(
            experiment, task, articles,
            pretrained=mean_ci(pre, confidence),
            scratch=mean_ci(scratch, confidence),
            gap=paired_gap(pre, scratch, confidence),
            overlap={name: float(np.mean(v)) for name, v in overlap_values.items()},
            seconds=float(sum(r.get("seconds") or 0.0 for r in runs)),
            seeds=tuple(r["seed"] for r in runs),
        ))
    return sorted(cells, key=lambda c: (EXPERIMENTS.index(c.experiment), task_key(c.task), c.articles))


def try_fit(x: Sequence[float], y: Sequence[float], confidence: float) -> LineFit | None:
    """fit_line, or None where no line exists (under 2 points or x constant)."""
    try:
        return fit_line(x, y, confidence)
    except ValueError:
        return None


# ---------------------------------------------------------------- findings (the report's verdicts)


def gap_finding(label: str, gap: MeanCI, confidence: float = 0.95) -> tuple[str, str]:
    """Claim 1 for one point: (verdict, sentence). Shows only when the gap's CI lies above 0."""
    pct = f"{confidence:.0%}"
    g = fmt_mean_ci(gap, signed=True, unit=" accuracy points")
    if not gap.has_ci:
        if gap.mean > 0:
            return UNCLEAR, (f"{label}: the gap is {g}; one seed gives no confidence interval, so the effect is "
                             "not established.")
        return NO, f"{label}: the effect does not show: the gap is {g}, not positive."
    if gap.low > 0:
        return SHOWS, f"{label}: pre-training helps: the gap is {g} and its {pct} CI excludes 0."
    if gap.high < 0:
        return NO, (f"{label}: the effect does not show: the gap is {g}; the from-scratch model is better "
                    f"(the {pct} CI lies below 0).")
    return NO, f"{label}: the effect does not show: the gap is {g} and its {pct} CI includes 0."


def size_finding(task: str, cells: Sequence[Cell], points: Sequence[tuple[int, float]],
                 confidence: float = 0.95) -> tuple[str, str]:
    """Claim 2 for one task: a per-run line fit of gap on articles; shows when its slope is > 0 and significant."""
    sizes = [c.articles for c in cells]
    if len(sizes) < 2:
        return NA, f"{task}: only one pre-training size ({sizes[0]:,} articles); no trend can be measured."
    means = [100 * c.gap.mean for c in cells]
    steps = "rises at every step" if all(b > a for a, b in itertools.pairwise(means)) else "does not rise at every step"
    head = (f"{task}: the mean gap goes from {means[0]:+.1f} points at {sizes[0]:,} articles to {means[-1]:+.1f} "
            f"at {sizes[-1]:,} and {steps}")
    fit = try_fit([p[0] for p in points], [100 * p[1] for p in points], confidence)
    if fit is None or math.isnan(fit.r):
        return NO, f"{head}; the gap is the same in every run, so the effect does not show."
    alpha = 1 - confidence
    trend = (f"per-run fit: {1000 * fit.slope:+.2f} points per 1,000 articles, r = {fit.r:.2f}, "
             f"p = {fit.p_value:.2g}, {fit.n} runs")
    if fit.slope <= 0:
        return NO, f"{head} ({trend}). The effect does not show: the gap does not grow with pre-training size here."
    if fit.p_value < alpha:
        return SHOWS, f"{head} ({trend}). The gap grows with pre-training size."
    return UNCLEAR, (f"{head} ({trend}). The upward trend is not statistically clear (p ≥ {alpha:.2g}), so growth "
                     "with size is not established by these runs.")


def overlap_finding(measure: str, fit: LineFit | None, n_points: int, confidence: float = 0.95) -> tuple[str, str]:
    """Claim 3: shows when r >= 0.5 and the CI of r lies above 0; a low or negative r does not show."""
    if n_points < 3:
        return NA, (f"Only {n_points} (task, size) point(s) carry {measure} overlap values; at least 3 are needed "
                    "to judge a correlation.")
    if fit is None:
        return NA, f"The {measure} overlap is the same at every point, so no relation to the gap can be measured."
    if math.isnan(fit.r):
        return NO, f"The gap is the same at every point, so the effect does not show (no correlation with {measure})."
    ci = f"{confidence:.0%} CI {fit.r_ci[0]:.2f} to {fit.r_ci[1]:.2f}" if fit.r_ci else "too few points for a CI"
    desc = f"r = {fit.r:.2f} ({ci}), slope {fit.slope:+.2f} gap points per overlap point, {fit.n} points"
    if fit.r <= 0:
        return NO, f"The effect does not show: the gap does not grow with {measure} overlap ({desc})."
    established = fit.r_ci is not None and fit.r_ci[0] > 0
    if established and fit.r >= 0.5:
        return SHOWS, f"The gap grows with {measure} overlap ({desc})."
    if established:
        return NO, (f"The gap is only weakly correlated with {measure} overlap ({desc}); the near-linear growth the "
                    "paper reports does not show.")
    if fit.r < 0.5:
        return NO, f"The effect does not show: the correlation of the gap with {measure} overlap is low ({desc})."
    return UNCLEAR, (f"The gap is positively correlated with {measure} overlap ({desc}), but the CI of r includes 0 or "
                     "cannot be computed, so the effect is not established by these runs.")
