"""Run records of experiments 1-3 (the paper's claims 1-3): validated, and summarised as one cell per point.

The input is a plain list of run records, so everything downstream can be recomputed from a stored results.json
alone (a JSON list of records, or an object whose "records" key holds that list). One record is one seed of one
pre-trained model and its from-scratch twin:

    {"experiment": "gap" | "size" | "overlap", "task": "ag_news", "articles": 2000, "seed": 0,
     "pretrained_accuracy": 0.83, "scratch_accuracy": 0.41,           # test accuracies, fractions in [0, 1]
     "overlap": {"token": 0.97, "type": 0.88, "weighted": 0.91},      # optional (needed by experiment 3)
     "seconds": 812.5}                                                # optional compute time of the pair

A record may also carry "finetune_seed" (default: its seed): a sweep that fine-tunes each pre-trained model
with several seeds, each next to its own scratch twin. Each pre-training seed's fine-tuning runs are averaged
first, so the intervals are over pre-training seeds (the independent units), never over fine-tuning runs that
share a pre-trained model.

The gap is pretrained - scratch per seed; means carry a Student-t confidence interval over seeds (the gap's
is the paired one, see tinylm.analysis.stats).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.analysis.overlap import LineFit, fit_line
from tinylm.analysis.stats import MeanCI, mean_ci, paired_gap, slopes_by_seed
from tinylm.data.tasks import TASKS


def task_key(task: str, order: Sequence[str] = TASKS) -> tuple[int, str]:
    """Sort key: the tasks of `order` (the paper's, by default) in that order, then any other task alphabetically."""
    return (order.index(task), "") if task in order else (len(order), task)


EXPERIMENTS: tuple[str, ...] = ("gap", "size", "overlap")
REQUIRED_FIELDS: tuple[str, ...] = ("experiment", "task", "articles", "seed", "pretrained_accuracy", "scratch_accuracy")

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
    for key in ("articles", "seed", "finetune_seed"):
        if key in rec and (isinstance(rec[key], bool) or not isinstance(rec[key], int)):
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
        key = (r["experiment"], r["task"], r["articles"], r["seed"], r.get("finetune_seed", r["seed"]))
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
    seeds: tuple[int, ...]  # pre-training seeds
    finetune_seeds: int = 1  # fine-tuning seeds per pre-training seed (the fewest any seed has)
    # Standard deviations of the gap (fractions): between pre-training seeds (of each seed's mean gap) and between
    # fine-tuning seeds of one pre-trained model (pooled over the pre-training seeds); NaN where not measurable.
    pretraining_sd: float = float("nan")
    finetuning_sd: float = float("nan")


def per_seed_means(runs: Sequence[Mapping[str, Any]]) -> dict[int, tuple[float, float, list[float]]]:
    """Pre-training seed -> (mean pre-trained accuracy, mean scratch accuracy, the gaps of its fine-tuning runs)."""
    by_seed: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in runs:
        by_seed[r["seed"]].append(r)
    return {seed: (float(np.mean([r["pretrained_accuracy"] for r in rs])),
                   float(np.mean([r["scratch_accuracy"] for r in rs])),
                   [r["pretrained_accuracy"] - r["scratch_accuracy"] for r in rs])
            for seed, rs in sorted(by_seed.items())}


def _sd_split(means: Mapping[int, tuple[float, float, list[float]]]) -> tuple[float, float]:
    """(SD of the per-seed mean gaps, pooled SD of the gaps within a seed)."""
    gaps = [pre - scratch for pre, scratch, _ in means.values()]
    between = float(np.std(gaps, ddof=1)) if len(gaps) > 1 else float("nan")
    within = [g for _, _, g in means.values() if len(g) > 1]
    dof = sum(len(g) - 1 for g in within)
    pooled = float(np.sqrt(sum((len(g) - 1) * np.var(g, ddof=1) for g in within) / dof)) if dof else float("nan")
    return between, pooled


def summarise(records: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[Cell]:
    """One Cell per (experiment, task, articles), in experiment, paper task and size order."""
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["experiment"], r["task"], r["articles"])].append(r)
    cells = []
    for (experiment, task, articles), runs in groups.items():
        runs = sorted(runs, key=lambda r: (r["seed"], r.get("finetune_seed", r["seed"])))
        means = per_seed_means(runs)
        pre = [m[0] for m in means.values()]
        scratch = [m[1] for m in means.values()]
        between, within = _sd_split(means)
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
            seeds=tuple(means),
            finetune_seeds=min(len(m[2]) for m in means.values()),
            pretraining_sd=between, finetuning_sd=within,
        ))
    return sorted(cells, key=lambda c: (EXPERIMENTS.index(c.experiment), task_key(c.task), c.articles))


def seed_slopes(runs: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Per pre-training seed with 2+ sizes: the least-squares slope of its mean gap (over its fine-tuning seeds) on
    the pre-training size, in gap (fraction) per article. Each seed is one independent replicate of the trend, so
    a test over these slopes does not count runs that share a scratch twin or a pre-trained model as independent."""
    points: dict[int, list[tuple[int, float]]] = defaultdict(list)  # seed -> (articles, its mean gap there)
    for size in sorted({r["articles"] for r in runs}):
        for seed, (_, _, gaps) in per_seed_means([r for r in runs if r["articles"] == size]).items():
            points[seed].append((size, float(np.mean(gaps))))
    return slopes_by_seed(points)


def try_fit(x: Sequence[float], y: Sequence[float], confidence: float) -> LineFit | None:
    """fit_line, or None where no line exists (under 2 points or x constant)."""
    try:
        return fit_line(x, y, confidence)
    except ValueError:
        return None
