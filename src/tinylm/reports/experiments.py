"""Reports of the paper's experiments 1-3 from run records: markdown, a self-contained HTML page, PNG plots.

The input is a plain list of run records, so a report can be re-rendered from a stored results.json alone
(a JSON list of records, or an object whose "records" key holds that list). One record is one seed of one
pre-trained model and its from-scratch twin:

    {"experiment": "gap" | "size" | "overlap", "task": "ag_news", "articles": 2000, "seed": 0,
     "pretrained_accuracy": 0.83, "scratch_accuracy": 0.41,           # test accuracies, fractions in [0, 1]
     "overlap": {"token": 0.97, "type": 0.88, "weighted": 0.91},      # optional (needed by experiment 3)
     "seconds": 812.5}                                                # optional compute time of the pair

The gap is pretrained - scratch per seed; means carry a Student-t confidence interval over seeds (the gap's
is the paired one, see tinylm.analysis.stats). Every verdict in the report ("shows", "not established",
"does not show") is generated from these numbers by the rules in gap_finding, size_finding and overlap_finding.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tinylm.analysis.overlap import DEFAULT_MEASURE, OVERLAP_MEASURES, WEIGHTED_MIN_COUNT, LineFit, fit_line
from tinylm.analysis.stats import MeanCI, mean_ci, paired_gap
from tinylm.data.tasks import TASKS

EXPERIMENTS: tuple[str, ...] = ("gap", "size", "overlap")
REQUIRED_FIELDS: tuple[str, ...] = ("experiment", "task", "articles", "seed", "pretrained_accuracy", "scratch_accuracy")
SIZE_PLOT, OVERLAP_PLOT = "gap_vs_size.png", "gap_vs_overlap.png"

# Verdicts of the findings; the summary groups tasks by them.
SHOWS, UNCLEAR, NO, NA = "shows", "not established", "does not show", "no data"

PaperNumbers = Mapping[str, float | str | Mapping[str, float]]


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


def _task_key(task: str) -> tuple[int, str]:
    """The paper's task order first, then any other task alphabetically."""
    return (TASKS.index(task), "") if task in TASKS else (len(TASKS), task)


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
    return sorted(cells, key=lambda c: (EXPERIMENTS.index(c.experiment), _task_key(c.task), c.articles))


def _try_fit(x: Sequence[float], y: Sequence[float], confidence: float) -> LineFit | None:
    """fit_line, or None where no line exists (under 2 points or x constant)."""
    try:
        return fit_line(x, y, confidence)
    except ValueError:
        return None


# ---------------------------------------------------------------- numbers as text


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def fmt_mean_ci(m: MeanCI, signed: bool = False, unit: str = "") -> str:
    """A fraction as percent: '83.1 ± 1.2 (3 seeds)', or '83.1 (1 seed)' where no interval exists."""
    value = f"{100 * m.mean:+.1f}" if signed else f"{100 * m.mean:.1f}"
    if not m.has_ci:
        return f"{value}{unit} ({_seeds(m.n)})"
    return f"{value} ± {100 * m.half_width:.1f}{unit} ({_seeds(m.n)})"


def _fmt_paper(value: float | str | Mapping[str, float]) -> str:
    """A number from the paper: a float is a gap (fraction), a string is shown as given (e.g. '≈ 40, Fig. 2')."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        names = {"pretrained": "pre-trained", "scratch": "scratch", "gap": "gap"}
        return ", ".join(f"{names.get(k, k)} {100 * v:{'+' if k == 'gap' else ''}.1f}" for k, v in value.items())
    return f"gap {100 * value:+.1f}"


def _paper_value(paper: PaperNumbers | None, task: str, articles: int, task_wide: bool) -> str:
    """'task@articles' first; the plain task key only where a row stands for the task (experiment 1)."""
    if not paper:
        return ""
    for key in (f"{task}@{articles}", task) if task_wide else (f"{task}@{articles}",):
        if key in paper:
            return _fmt_paper(paper[key])
    return ""


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
    fit = _try_fit([p[0] for p in points], [100 * p[1] for p in points], confidence)
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


# ---------------------------------------------------------------- plots (matplotlib's Agg canvas, no pyplot state)


def new_figure(figsize: tuple[float, float] = (6.4, 4.2)) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg: works headless and leaves the global backend alone
    return fig, fig.add_subplot()


def _err(m: MeanCI) -> float:
    return 100 * m.half_width if m.has_ci else 0.0  # one seed: a point without a bar


def plot_gap_vs_size(cells: Sequence[Cell], path: Path, confidence: float = 0.95) -> Path | None:
    """Mean gap against pre-training articles, one line per task, error bars = CI over seeds."""
    cells = [c for c in cells if c.experiment == "size"]
    if not cells:
        return None
    fig, ax = new_figure()
    for task, group in itertools.groupby(cells, key=lambda c: c.task):
        group = list(group)
        ax.errorbar([c.articles for c in group], [100 * c.gap.mean for c in group], yerr=[_err(c.gap) for c in group],
                    marker="o", capsize=3, label=task)
    ax.axhline(0, color="grey", lw=0.8, ls="--")  # the no-effect line
    sizes = sorted({c.articles for c in cells})
    ax.set_xticks(sizes, [f"{a:,}" for a in sizes])
    ax.set_xlabel("pre-training articles")
    ax.set_ylabel("gap: pre-trained − scratch (accuracy points)")
    ax.set_title(f"Gap vs pre-training size (bars: {confidence:.0%} CI over seeds)")
    ax.legend()
    fig.savefig(path, format="png")
    return path


def plot_gap_vs_overlap(cells: Sequence[Cell], path: Path, measure: str = DEFAULT_MEASURE,
                        confidence: float = 0.95) -> Path | None:
    """Mean gap against overlap (%) per (task, size) point with the fitted line; r in the legend."""
    cells = [c for c in cells if c.experiment == "overlap" and measure in c.overlap]
    if not cells:
        return None
    fig, ax = new_figure()
    for task, group in itertools.groupby(cells, key=lambda c: c.task):
        group = list(group)
        ax.errorbar([100 * c.overlap[measure] for c in group], [100 * c.gap.mean for c in group],
                    yerr=[_err(c.gap) for c in group], marker="o", ls="none", capsize=3, label=task)
    x = np.array([100 * c.overlap[measure] for c in cells])
    fit = _try_fit(x, [100 * c.gap.mean for c in cells], confidence)
    if fit is not None and not math.isnan(fit.r):
        xs = np.linspace(x.min(), x.max(), 2)
        ci = f" [{fit.r_ci[0]:.2f}, {fit.r_ci[1]:.2f}]" if fit.r_ci else ""
        ax.plot(xs, fit.slope * xs + fit.intercept, color="black", lw=1, label=f"fit: r = {fit.r:.2f}{ci}, n = {fit.n}")
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"{measure} overlap with the pre-training subset (%)")
    ax.set_ylabel("gap: pre-trained − scratch (accuracy points)")
    ax.set_title(f"Gap vs {measure} overlap (bars: {confidence:.0%} CI over seeds)")
    ax.legend()
    fig.savefig(path, format="png")
    return path


# ---------------------------------------------------------------- document blocks, rendered to markdown and HTML


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]

    def numeric(self) -> list[bool]:
        """Columns holding only numbers (or '–'), which both renderers right-align."""
        return [all(re.match(r"[+\-–]?\d|–$", row[i]) for row in self.rows) for i in range(len(self.header))]


@dataclass(frozen=True)
class Image:
    filename: str
    alt: str


Block = Heading | Para | Bullets | Table | Image


def _accuracy_table(cells: Sequence[Cell], paper: PaperNumbers | None, task_wide: bool) -> Table:
    header = ["Task", "Articles", "Pre-trained acc. (%)", "Scratch acc. (%)", "Gap (points)"]
    rows = [[c.task, f"{c.articles:,}", fmt_mean_ci(c.pretrained), fmt_mean_ci(c.scratch),
             fmt_mean_ci(c.gap, signed=True)] for c in cells]
    paper_col = [_paper_value(paper, c.task, c.articles, task_wide) for c in cells]
    if any(paper_col):  # the column only where the paper gives a number for some row
        header.append("Paper")
        rows = [[*row, value or "–"] for row, value in zip(rows, paper_col, strict=True)]
    return Table(header, rows)


def _summary_line(claim: str, verdicts: Sequence[tuple[str, str]]) -> str:
    """'Claim: shows for a, b; does not show for c.' from (label, verdict) pairs."""
    if not verdicts:
        return f"{claim}: no runs of this experiment in the results."
    by: dict[str, list[str]] = defaultdict(list)
    for label, verdict in verdicts:
        by[verdict].append(label)
    parts = [f"{v} for {', '.join(by[v])}" for v in (SHOWS, UNCLEAR, NO, NA) if by[v]]
    return f"{claim}: {'; '.join(parts)}."


def _compute_text(records: Sequence[Mapping[str, Any]]) -> str:
    """Total training time, each run counted once: experiments share runs (the size sweep's largest point is
    experiment 1's pair, every pre-trained model serves all tasks), so summing records would count them again."""
    by_run: dict[str, float] = {}
    loose: list[float] = []  # records without run names: their own seconds, as given
    for r in records:
        if r.get("runs") and r.get("timings"):
            for kind, name in r["runs"].items():
                if r["timings"].get(kind) is not None:
                    by_run[name] = float(r["timings"][kind])
        elif r.get("seconds") is not None:
            loose.append(float(r["seconds"]))
    if not by_run and not loose:
        return "no run times recorded"
    return f"compute {(sum(by_run.values()) + sum(loose)) / 3600:.2f} h over {len(by_run) + len(loose)} timed runs"


def build_blocks(records: Sequence[Mapping[str, Any]], paper: PaperNumbers | None = None,
                 confidence: float = 0.95, measure: str = DEFAULT_MEASURE,
                 figures: Mapping[str, str] | None = None) -> list[Block]:
    """The report as blocks; `figures` maps plot names (SIZE_PLOT, OVERLAP_PLOT) to the image files written."""
    figures = figures or {}
    cells = summarise(records, confidence)
    pct = f"{confidence:.0%}"
    lo, hi = min(c.gap.n for c in cells), max(c.gap.n for c in cells)
    compute = _compute_text(records)
    blocks: list[Block] = [
        Heading("tinylm: the paper's experiments 1-3", 1),
        Para(f"{len(records)} runs in {len(cells)} points (experiment, task, pre-training size); "
             f"{_seeds(lo) if lo == hi else f'{lo}-{hi} seeds'} per point; {compute}."),
        Para(f"Accuracies are test accuracies in percent. The gap is pre-trained minus from-scratch accuracy in "
             f"points, paired by seed. '±' is the half-width of the {pct} Student-t interval over seeds; a point "
             "with one seed has none."),
    ]
    summary_at = len(blocks)  # the summary is filled in once every finding is known
    blocks += quality_blocks(records, confidence)

    # Experiment 1: the gap per task.
    gap_cells = [c for c in cells if c.experiment == "gap"]
    gap_verdicts = [gap_finding(_label(c, gap_cells), c.gap, confidence) for c in gap_cells]
    blocks.append(Heading("1. Pre-trained vs from scratch"))
    if gap_cells:
        blocks += [_accuracy_table(gap_cells, paper, task_wide=True), Bullets([s for _, s in gap_verdicts])]
    else:
        blocks.append(Para("No runs of this experiment in the results."))

    # Experiment 2: the gap against the pre-training size.
    size_cells = [c for c in cells if c.experiment == "size"]
    size_verdicts: list[tuple[str, str, str]] = []
    blocks.append(Heading("2. Gap vs pre-training size"))
    if size_cells:
        for task, group in itertools.groupby(size_cells, key=lambda c: c.task):
            group = list(group)
            points = [(r["articles"], r["pretrained_accuracy"] - r["scratch_accuracy"])
                      for r in records if r["experiment"] == "size" and r["task"] == task]
            size_verdicts.append((task, *size_finding(task, group, points, confidence)))
        blocks.append(_accuracy_table(size_cells, paper, task_wide=False))
        if SIZE_PLOT in figures:
            blocks.append(Image(figures[SIZE_PLOT], "gap vs pre-training size"))
        blocks.append(Bullets([s for _, _, s in size_verdicts]))
    else:
        blocks.append(Para("No runs of this experiment in the results."))

    # Experiment 3: the gap against token overlap, one point per (task, size).
    overlap_cells = [c for c in cells if c.experiment == "overlap"]
    blocks.append(Heading("3. Gap vs token overlap"))
    overlap_verdict: tuple[str, str] | None = None
    if overlap_cells:
        names = [m for m in OVERLAP_MEASURES if any(m in c.overlap for c in overlap_cells)]
        names += sorted({m for c in overlap_cells for m in c.overlap} - set(names))
        blocks.append(Para(
            f"The text and plot use the {measure} measure. token: the fraction of the task's token occurrences whose "
            "token type occurs in the pre-training subset; type: the fraction of the task's distinct token types "
            f"that occur there; weighted: token overlap where a type seen c times in pre-training counts "
            f"min(1, c/{WEIGHTED_MIN_COUNT}). Special tokens are not counted."))
        blocks.append(Table(
            ["Task", "Articles", *[f"{m} overlap (%)" for m in names], "Gap (points)"],
            [[c.task, f"{c.articles:,}", *[f"{100 * c.overlap[m]:.1f}" if m in c.overlap else "–" for m in names],
              fmt_mean_ci(c.gap, signed=True)] for c in overlap_cells]))
        fit_rows = []
        for m in names:
            with_m = [c for c in overlap_cells if m in c.overlap]
            fit = _try_fit([100 * c.overlap[m] for c in with_m], [100 * c.gap.mean for c in with_m], confidence)
            if m == measure:
                overlap_verdict = overlap_finding(m, fit, len(with_m), confidence)
            ok = fit is not None and not math.isnan(fit.r)
            fit_rows.append([
                m + (" (used)" if m == measure else ""),
                f"{fit.r:.2f}" if ok else "–",
                f"{fit.r_ci[0]:.2f} to {fit.r_ci[1]:.2f}" if ok and fit.r_ci else "–",
                f"{fit.p_value:.2g}" if ok else "–",
                f"{fit.slope:+.2f}" if fit is not None else "–",
                str(len(with_m)),
            ])
        blocks.append(Table(["Measure", "r", f"{pct} CI of r", "p", "Slope (gap points per overlap point)",
                             "Points"], fit_rows))
        if OVERLAP_PLOT in figures:
            blocks.append(Image(figures[OVERLAP_PLOT], f"gap vs {measure} overlap"))
        if overlap_verdict is None:
            overlap_verdict = (NA, f"No point carries the {measure} overlap measure, so the effect cannot be judged.")
        blocks.append(Bullets([overlap_verdict[1]]))
    else:
        blocks.append(Para("No runs of this experiment in the results."))

    blocks[summary_at:summary_at] = [Heading("Summary"), Bullets([
        _summary_line("Claim 1, pre-trained beats from scratch",
                      [(_label(c, gap_cells), v) for c, (v, _) in zip(gap_cells, gap_verdicts, strict=True)]),
        _summary_line("Claim 2, the gap grows with pre-training size", [(t, v) for t, v, _ in size_verdicts]),
        f"Claim 3, the gap grows with {measure} overlap: "
        + (f"{overlap_verdict[0]}." if overlap_verdict else "no runs of this experiment in the results."),
    ])]

    # Every run, so a reader can check any number above.
    blocks += [Heading("Runs"), Table(
        ["Experiment", "Task", "Articles", "Seed", "Pre-trained acc. (%)", "Scratch acc. (%)", "Gap (points)",
         "Seconds"],
        [[r["experiment"], r["task"], f"{r['articles']:,}", str(r["seed"]), f"{100 * r['pretrained_accuracy']:.1f}",
          f"{100 * r['scratch_accuracy']:.1f}", f"{100 * (r['pretrained_accuracy'] - r['scratch_accuracy']):+.1f}",
          f"{r['seconds']:.0f}" if r.get("seconds") is not None else "–"]
         for r in sorted(records, key=lambda r: (EXPERIMENTS.index(r["experiment"]), _task_key(r["task"]),
                                                 r["articles"], r["seed"]))])]
    return blocks


def quality_blocks(records: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[Block]:
    """Did pre-training learn language? Held-out MLM accuracy per pre-training size against the unigram level.

    One value per pre-training run (a run serves every task); records without quality (older runs) are skipped."""
    runs: dict[tuple[int, int], Mapping[str, Any]] = {}
    for r in records:
        if r.get("pretrain_quality"):
            runs[(r["articles"], r["seed"])] = r["pretrain_quality"]
    if not runs:
        return []
    rows = []
    for size in sorted({a for a, _ in runs}):
        qs = [q for (a, _), q in sorted(runs.items()) if a == size]
        acc = mean_ci([q["mlm_accuracy"] for q in qs], confidence)
        rows.append([f"{size:,}", fmt_mean_ci(acc), f"{100 * np.mean([q['unigram_accuracy'] for q in qs]):.1f}",
                     f"{np.mean([q['mlm_loss'] for q in qs]):.2f}", f"{np.mean([q['unigram_loss'] for q in qs]):.2f}",
                     f"{100 * np.mean([q['cloze_top5'] for q in qs]):.0f}"])
    return [Heading("Did pre-training learn language?"),
            Para("Held-out masked-token accuracy and loss on Wikipedia openings that no subset trains on (a "
                 "fixed 15 % of their tokens replaced by [MASK]), against the unigram baseline: predicting the "
                 "training subset's token frequencies everywhere, the level of an MLM that ignores context. Cloze: "
                 "top-5 hits on a fixed probe of short sentences with a known answer (tinylm.mlm_quality)."),
            Table(["Articles", "Held-out MLM acc. (%)", "Unigram acc. (%)", "MLM loss", "Unigram loss",
                   "Cloze top-5 (%)"], rows)]


def _label(cell: Cell, cells: Sequence[Cell]) -> str:
    """The task name, with its size where one task appears at several sizes."""
    if sum(c.task == cell.task for c in cells) > 1:
        return f"{cell.task} ({cell.articles:,} articles)"
    return cell.task


def to_markdown(blocks: Sequence[Block]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out: list[str] = []
    for block in blocks:
        match block:
            case Heading(text, level):
                out.append(f"{'#' * level} {text}")
            case Para(text):
                out.append(text)
            case Bullets(items):
                out.append("\n".join(f"- {item}" for item in items))
            case Table(header, rows):
                align = ["---:" if numeric else "---" for numeric in block.numeric()]
                lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
                lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
                out.append("\n".join(lines))
            case Image(filename, alt):
                out.append(f"![{alt}]({filename})")
    return "\n\n".join(out) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
        "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem}"
        "td.num{text-align:right}th{background:#f3f3f3}img{max-width:100%}")


def to_html(blocks: Sequence[Block], image_dir: Path, title: str = "tinylm report") -> str:
    """A self-contained page: inline CSS, images embedded as base64 data URIs (no external references)."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{esc(title)}</title>",
           f"<style>{_CSS}</style>", "</head>", "<body>"]
    for block in blocks:
        match block:
            case Heading(text, level):
                out.append(f"<h{level}>{esc(text)}</h{level}>")
            case Para(text):
                out.append(f"<p>{esc(text)}</p>")
            case Bullets(items):
                out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>")
            case Table(header, rows):
                head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
                tds = ['<td class="num">' if numeric else "<td>" for numeric in block.numeric()]
                body = "".join("<tr>" + "".join(f"{td}{esc(v)}</td>" for td, v in zip(tds, row, strict=True)) + "</tr>"
                               for row in rows)
                out.append(f"<table><thead>{head}</thead><tbody>{body}</tbody></table>")
            case Image(filename, alt):
                data = base64.b64encode((image_dir / filename).read_bytes()).decode("ascii")
                out.append(f'<p><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></p>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def render_report(
    source: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    paper_numbers: PaperNumbers | None = None,
    *,
    measure: str = DEFAULT_MEASURE,
    confidence: float = 0.95,
) -> list[Path]:
    """Write report.md, report.html and the PNG plots for the runs in `source`; returns the paths written.

    paper_numbers: numbers from the paper for a "Paper" column, keyed by task (experiment 1 rows) or
    "task@articles" (any row). A float is a gap (fraction); a mapping of "pretrained"/"scratch"/"gap" fractions
    shows each; a string is shown as given, e.g. "≈ +40 (read off Fig. 2, approximate)".
    """
    records = load_records(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = summarise(records, confidence)
    figures: dict[str, str] = {}
    written: list[Path] = []
    for name, plot in ((SIZE_PLOT, lambda p: plot_gap_vs_size(cells, p, confidence)),
                       (OVERLAP_PLOT, lambda p: plot_gap_vs_overlap(cells, p, measure, confidence))):
        path = plot(out / name)
        if path is not None:
            figures[name] = name
            written.append(path)
    blocks = build_blocks(records, paper_numbers, confidence, measure, figures)
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, out), encoding="utf-8")
    return [md, page, *written]
