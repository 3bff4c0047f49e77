"""The report of the paper's experiments 1-3 from run records: markdown, a self-contained HTML page, PNG plots.

The records and the per-point cells are tinylm.analysis.records's (its docstring describes a record), the
verdict rules tinylm.reports.claims's; this module lays them out: the summary, one section per experiment, the plots
and every run.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.analysis.overlap import DEFAULT_MEASURE, OVERLAP_MEASURES, WEIGHTED_MIN_COUNT
from tinylm.analysis.records import EXPERIMENTS, Cell, load_records, seed_slopes, summarise, try_fit
from tinylm.analysis.stats import mean_ci
from tinylm.reports.claims import NA, NO, SHOWS, UNCLEAR, gap_finding, overlap_finding, size_finding
from tinylm.reports.render import (
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    err_points,
    fmt_mean_ci,
    new_figure,
    pct,
    seeds_text,
    task_key,
    write_report,
)

SIZE_PLOT, OVERLAP_PLOT = "gap_vs_size.png", "gap_vs_overlap.png"
NO_RUNS = Para("No runs of this experiment in the results.")

PaperNumbers = Mapping[str, float | str | Mapping[str, float]]
Verdicts = list[tuple[str, str]]  # (label, verdict) pairs, what the summary groups


# ---------------------------------------------------------------- plots


def plot_gap_vs_size(cells: Sequence[Cell], path: Path, confidence: float = 0.95) -> Path | None:
    """Mean gap against pre-training articles, one line per task, error bars = CI over seeds."""
    cells = [c for c in cells if c.experiment == "size"]
    if not cells:
        return None
    fig, ax = new_figure()
    for task, group in itertools.groupby(cells, key=lambda c: c.task):
        group = list(group)
        ax.errorbar([c.articles for c in group], [100 * c.gap.mean for c in group],
                    yerr=[err_points(c.gap) for c in group], marker="o", capsize=3, label=task)
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
    """Experiment 3: mean gap against overlap (%) per (task, size) point with the fitted line; r in the legend."""
    cells = [c for c in cells if c.experiment == "overlap" and measure in c.overlap]
    if not cells:
        return None
    fig, ax = new_figure()
    for task, group in itertools.groupby(cells, key=lambda c: c.task):
        group = list(group)
        ax.errorbar([100 * c.overlap[measure] for c in group], [100 * c.gap.mean for c in group],
                    yerr=[err_points(c.gap) for c in group], marker="o", ls="none", capsize=3, label=task)
    x = np.array([100 * c.overlap[measure] for c in cells])
    fit = try_fit(x, [100 * c.gap.mean for c in cells], confidence)
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


# ---------------------------------------------------------------- pieces of text and tables


def _fmt_paper(value: float | str | Mapping[str, float]) -> str:
    """A number from the paper: a float is a gap (fraction), a string is shown as given (e.g. '≈ 40, Fig. 2')."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        names = {"pretrained": "pre-trained", "scratch": "scratch", "gap": "gap"}
        return ", ".join(f"{names.get(k, k)} {pct(v, signed=k == 'gap')}" for k, v in value.items())
    return f"gap {pct(value, signed=True)}"


def _paper_value(paper: PaperNumbers | None, task: str, articles: int, task_wide: bool) -> str:
    """'task@articles' first; the plain task key only where a row stands for the task (experiment 1)."""
    if not paper:
        return ""
    for key in (f"{task}@{articles}", task) if task_wide else (f"{task}@{articles}",):
        if key in paper:
            return _fmt_paper(paper[key])
    return ""


def _accuracy_table(cells: Sequence[Cell], paper: PaperNumbers | None, task_wide: bool) -> Table:
    header = ["Task", "Articles", "Pre-trained acc. (%)", "Scratch acc. (%)", "Gap (points)"]
    rows = [[c.task, f"{c.articles:,}", fmt_mean_ci(c.pretrained), fmt_mean_ci(c.scratch),
             fmt_mean_ci(c.gap, signed=True)] for c in cells]
    paper_col = [_paper_value(paper, c.task, c.articles, task_wide) for c in cells]
    if any(paper_col):  # the column only where the paper gives a number for some row
        header.append("Paper")
        rows = [[*row, value or "–"] for row, value in zip(rows, paper_col, strict=True)]
    return Table(header, rows)


def _summary_line(claim: str, verdicts: Verdicts) -> str:
    """'Claim: shows for a, b; does not show for c.' from (label, verdict) pairs."""
    if not verdicts:
        return f"{claim}: no runs of this experiment in the results."
    by: dict[str, list[str]] = defaultdict(list)
    for label, verdict in verdicts:
        by[verdict].append(label)
    parts = [f"{v} for {', '.join(by[v])}" for v in (SHOWS, UNCLEAR, NO, NA) if by[v]]
    return f"{claim}: {'; '.join(parts)}."


def compute_text(records: Sequence[Mapping[str, Any]]) -> str:
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


def _label(cell: Cell, cells: Sequence[Cell]) -> str:
    """The task name, with its size where one task appears at several sizes."""
    if sum(c.task == cell.task for c in cells) > 1:
        return f"{cell.task} ({cell.articles:,} articles)"
    return cell.task


# ---------------------------------------------------------------- sections


def _intro_blocks(records: Sequence[Mapping[str, Any]], cells: Sequence[Cell], confidence: float) -> list[Block]:
    lo, hi = min(c.gap.n for c in cells), max(c.gap.n for c in cells)
    finetunes = min(c.finetune_seeds for c in cells)
    if finetunes == 1:
        return [
            Heading("tinylm: the paper's experiments 1-3", 1),
            Para(f"{len(records)} runs in {len(cells)} points (experiment, task, pre-training size); "
                 f"{seeds_text(lo) if lo == hi else f'{lo}-{hi} seeds'} per point; {compute_text(records)}."),
            Para(f"Accuracies are test accuracies in percent. The gap is pre-trained minus from-scratch accuracy in "
                 f"points, paired by seed. '±' is the half-width of the {confidence:.0%} Student-t interval over "
                 "seeds; a point with one seed has none."),
        ]
    seeds = f"{lo} pre-training seeds" if lo == hi else f"{lo}-{hi} pre-training seeds"
    return [
        Heading("tinylm: the paper's experiments 1-3", 1),
        Para(f"{len(records)} pairs of fine-tuning runs in {len(cells)} points (experiment, task, pre-training "
             f"size); {seeds} per point, each pre-trained model fine-tuned with {finetunes} seeds, each next to its "
             f"own from-scratch twin; {compute_text(records)}."),
        Para(f"Accuracies are test accuracies in percent. The gap is pre-trained minus from-scratch accuracy in "
             f"points. Each pre-training seed's fine-tuning runs are averaged first; '±' is the half-width of the "
             f"{confidence:.0%} Student-t interval over pre-training seeds of those means (the gap's paired by seed), "
             "so it covers both sources of spread and never counts runs that share a pre-trained model as "
             "independent. The task samples are fixed (data seed 42): the intervals do not cover another draw of "
             "the training or test texts."),
    ]


def _summary_blocks(gap: Verdicts, size: Verdicts, overlap: str | None, measure: str) -> list[Block]:
    return [Heading("Summary"), Bullets([
        _summary_line("Claim 1, pre-trained beats from scratch", gap),
        _summary_line("Claim 2, the gap grows with pre-training size", size),
        f"Claim 3, the gap grows with {measure} overlap: "
        + (f"{overlap}." if overlap else "no runs of this experiment in the results."),
    ])]


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
        rows.append([f"{size:,}", fmt_mean_ci(acc), pct(np.mean([q["unigram_accuracy"] for q in qs])),
                     f"{np.mean([q['mlm_loss'] for q in qs]):.2f}", f"{np.mean([q['unigram_loss'] for q in qs]):.2f}",
                     pct(np.mean([q["cloze_top5"] for q in qs]), 0)])
    return [Heading("Did pre-training learn language?"),
            Para("Held-out masked-token accuracy and loss on Wikipedia openings that no subset trains on (a "
                 "fixed 15 % of their tokens replaced by [MASK]), against the unigram baseline: predicting the "
                 "training subset's token frequencies everywhere, the level of an MLM that ignores context. Cloze: "
                 "top-5 hits on a fixed probe of short sentences with a known answer (tinylm.mlm_quality)."),
            Table(["Articles", "Held-out MLM acc. (%)", "Unigram acc. (%)", "MLM loss", "Unigram loss",
                   "Cloze top-5 (%)"], rows)]


def _gap_section(records: Sequence[Mapping[str, Any]], cells: Sequence[Cell], paper: PaperNumbers | None,
                 confidence: float) -> tuple[list[Block], Verdicts]:
    """Experiment 1: the gap per task."""
    gap_cells = [c for c in cells if c.experiment == "gap"]
    labels = [_label(c, gap_cells) for c in gap_cells]
    findings = [gap_finding(label, c.gap, confidence) for label, c in zip(labels, gap_cells, strict=True)]
    blocks: list[Block] = [Heading("1. Pre-trained vs from scratch")]
    if gap_cells:
        blocks += [_accuracy_table(gap_cells, paper, task_wide=True), Bullets([s for _, s in findings])]
        if any(c.finetune_seeds > 1 for c in gap_cells):
            blocks += _spread_blocks(records, gap_cells)
    else:
        blocks.append(NO_RUNS)
    return blocks, [(label, v) for label, (v, _) in zip(labels, findings, strict=True)]


COLLAPSE_POINTS = 10  # a fine-tuning run this far below its group's median is flagged as collapsed


def _spread_blocks(records: Sequence[Mapping[str, Any]], cells: Sequence[Cell]) -> list[Block]:
    """Where the gap's spread comes from (pre-training vs fine-tuning seeds), and any run that collapsed."""
    rows, flagged = [], []
    for c in cells:
        runs = [r for r in records if r["experiment"] == c.experiment and r["task"] == c.task
                and r["articles"] == c.articles]
        for arm in ("pretrained", "scratch"):
            accs = [r[f"{arm}_accuracy"] for r in runs]
            median = float(np.median(accs))
            flagged += [f"{c.task} {arm}, seed {r['seed']} / fine-tuning seed {r.get('finetune_seed', r['seed'])}: "
                        f"{pct(r[f'{arm}_accuracy'])} % against the median {pct(median)} %"
                        for r in runs if 100 * (median - r[f"{arm}_accuracy"]) > COLLAPSE_POINTS]
        rows.append([c.task, f"{c.articles:,}", str(c.gap.n), str(c.finetune_seeds),
                     f"{100 * c.pretraining_sd:.1f}", f"{100 * c.finetuning_sd:.1f}",
                     f"{100 * min(r['pretrained_accuracy'] - r['scratch_accuracy'] for r in runs):+.1f}",
                     f"{100 * max(r['pretrained_accuracy'] - r['scratch_accuracy'] for r in runs):+.1f}"])
    collapse = (Bullets(flagged) if flagged else
                Para(f"No fine-tuning run, pre-trained or from scratch, ended more than {COLLAPSE_POINTS} points below "
                     "the median of its group (task, arm)."))
    return [Heading("Where the spread comes from", 3),
            Para("SD of the gap in points: between pre-training seeds (of each seed's mean gap over its fine-tuning "
                 "seeds), and between fine-tuning seeds of one pre-trained model (pooled over the pre-training "
                 "seeds); then the smallest and largest gap of a single pair."),
            Table(["Task", "Articles", "Pre-training seeds", "Fine-tuning seeds", "SD between pre-training seeds",
                   "SD between fine-tuning seeds", "Smallest pair gap", "Largest pair gap"], rows),
            collapse]


def _size_section(records: Sequence[Mapping[str, Any]], cells: Sequence[Cell], paper: PaperNumbers | None,
                  confidence: float, figures: Mapping[str, str]) -> tuple[list[Block], Verdicts]:
    """Experiment 2: the gap against the pre-training size; the trend is one slope per pre-training seed, tested over
    the seeds (runs that share a scratch twin or a pre-trained model are not independent)."""
    size_cells = [c for c in cells if c.experiment == "size"]
    blocks: list[Block] = [Heading("2. Gap vs pre-training size")]
    if not size_cells:
        return [*blocks, NO_RUNS], []
    findings: list[tuple[str, str, str]] = []
    for task, group in itertools.groupby(size_cells, key=lambda c: c.task):
        slopes = seed_slopes([r for r in records if r["experiment"] == "size" and r["task"] == task])
        findings.append((task, *size_finding(task, list(group), slopes, confidence)))
    blocks.append(_accuracy_table(size_cells, paper, task_wide=False))
    if SIZE_PLOT in figures:
        blocks.append(Image(figures[SIZE_PLOT], "gap vs pre-training size"))
    blocks.append(Bullets([s for _, _, s in findings]))
    return blocks, [(task, v) for task, v, _ in findings]


def _overlap_fits(cells: Sequence[Cell], names: Sequence[str], measure: str, confidence: float
                  ) -> tuple[Table, tuple[str, str] | None]:
    """One fit of gap on overlap per measure, and the finding of the measure the report uses."""
    finding = None
    rows = []
    for m in names:
        with_m = [c for c in cells if m in c.overlap]
        xs = [100 * c.overlap[m] for c in with_m]
        fit = try_fit(xs, [100 * c.gap.mean for c in with_m], confidence)
        if m == measure:
            finding = overlap_finding(m, fit, len(with_m), confidence, span=max(xs) - min(xs) if xs else None)
        ok = fit is not None and not math.isnan(fit.r)
        rows.append([
            m + (" (used)" if m == measure else ""),
            f"{fit.r:.2f}" if ok else "–",
            f"{fit.r_ci[0]:.2f} to {fit.r_ci[1]:.2f}" if ok and fit.r_ci else "–",
            f"{fit.p_value:.2g}" if ok else "–",
            f"{fit.slope:+.2f}" if fit is not None else "–",
            str(len(with_m)),
        ])
    header = ["Measure", "r", f"{confidence:.0%} CI of r", "p", "Slope (gap points per overlap point)", "Points"]
    return Table(header, rows), finding


def _overlap_section(cells: Sequence[Cell], confidence: float, measure: str, figures: Mapping[str, str]
                     ) -> tuple[list[Block], str | None]:
    """Experiment 3: the gap against token overlap, one point per (task, size); returns the verdict (None: no runs)."""
    overlap_cells = [c for c in cells if c.experiment == "overlap"]
    blocks: list[Block] = [Heading("3. Gap vs token overlap")]
    if not overlap_cells:
        return [*blocks, NO_RUNS], None
    names = [m for m in OVERLAP_MEASURES if any(m in c.overlap for c in overlap_cells)]
    names += sorted({m for c in overlap_cells for m in c.overlap} - set(names))
    blocks.append(Para(
        f"The text and plot use the {measure} measure. token: the fraction of the task's token occurrences whose "
        "token type occurs in the pre-training subset; type: the fraction of the task's distinct token types "
        f"that occur there; weighted: token overlap where a type seen c times in pre-training counts "
        f"min(1, c/{WEIGHTED_MIN_COUNT}). Special tokens are not counted."))
    blocks.append(Table(
        ["Task", "Articles", *[f"{m} overlap (%)" for m in names], "Gap (points)"],
        [[c.task, f"{c.articles:,}", *[pct(c.overlap[m]) if m in c.overlap else "–" for m in names],
          fmt_mean_ci(c.gap, signed=True)] for c in overlap_cells]))
    fits, finding = _overlap_fits(overlap_cells, names, measure, confidence)
    blocks.append(fits)
    if OVERLAP_PLOT in figures:
        blocks.append(Image(figures[OVERLAP_PLOT], f"gap vs {measure} overlap"))
    if finding is None:
        finding = (NA, f"No point carries the {measure} overlap measure, so the effect cannot be judged.")
    blocks.append(Bullets([finding[1]]))
    return blocks, finding[0]


def _runs_blocks(records: Sequence[Mapping[str, Any]]) -> list[Block]:
    """Every run, so a reader can check any number above."""
    ordered = sorted(records, key=lambda r: (EXPERIMENTS.index(r["experiment"]), task_key(r["task"]), r["articles"],
                                             r["seed"], r.get("finetune_seed", r["seed"])))
    with_ft = any("finetune_seed" in r for r in records)
    ft_col = ["Fine-tuning seed"] if with_ft else []
    return [Heading("Runs"), Table(
        ["Experiment", "Task", "Articles", "Seed", *ft_col, "Pre-trained acc. (%)", "Scratch acc. (%)",
         "Gap (points)", "Seconds"],
        [[r["experiment"], r["task"], f"{r['articles']:,}", str(r["seed"]),
          *([str(r.get("finetune_seed", r["seed"]))] if with_ft else []), pct(r["pretrained_accuracy"]),
          pct(r["scratch_accuracy"]), pct(r["pretrained_accuracy"] - r["scratch_accuracy"], signed=True),
          f"{r['seconds']:.0f}" if r.get("seconds") is not None else "–"] for r in ordered])]


def build_blocks(records: Sequence[Mapping[str, Any]], paper: PaperNumbers | None = None,
                 confidence: float = 0.95, measure: str = DEFAULT_MEASURE,
                 figures: Mapping[str, str] | None = None) -> list[Block]:
    """The report as blocks; `figures` maps plot names (SIZE_PLOT, OVERLAP_PLOT) to the image files written."""
    figures = figures or {}
    cells = summarise(records, confidence)
    gap, gap_verdicts = _gap_section(records, cells, paper, confidence)
    size, size_verdicts = _size_section(records, cells, paper, confidence, figures)
    overlap, overlap_verdict = _overlap_section(cells, confidence, measure, figures)
    # The summary leads, though it is generated from the sections' findings.
    return [*_intro_blocks(records, cells, confidence),
            *_summary_blocks(gap_verdicts, size_verdicts, overlap_verdict, measure),
            *quality_blocks(records, confidence), *gap, *size, *overlap, *_runs_blocks(records)]


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
    cells = summarise(records, confidence)
    return write_report(
        out_dir, "tinylm report", lambda figures: build_blocks(records, paper_numbers, confidence, measure, figures),
        {SIZE_PLOT: lambda p: plot_gap_vs_size(cells, p, confidence),
         OVERLAP_PLOT: lambda p: plot_gap_vs_overlap(cells, p, measure, confidence)})
