"""The report of `tinylm reproduce arms`: the gap against topic similarity at one fixed pre-training size.

The arms differ in how typical their articles are of the task (topic similarity, measured by mass overlap: the
coverage of the task's token distribution at the subset's size); their token overlap stays near 100 % at a 4k
vocabulary, so this is not the paper's token overlap (for that, set by design, see reports.overlap_control).
Input is the results dict that tinylm.experiments.overlap_arms writes to results.json: one record per (task, arm,
seed), each with its subset's overlap measures, so the report re-renders from that file alone. The gap is fitted
on overlap within each task: with one seed every run is a point; with several, one slope per seed (a seed's arms
share a scratch twin) and an interval over seeds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.analysis.overlap import OVERLAP_MEASURES, LineFit, fit_line
from tinylm.analysis.stats import paired_gap, slopes_by_seed
from tinylm.data.tasks import TASK_ORDER
from tinylm.reports.overlap_control import slope_finding, slope_row
from tinylm.reports.render import (
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    fmt_mean_ci,
    new_figure,
    pct,
    task_key,
    write_report,
)

ARMS = ("low", "random", "high")  # the pre-training subsets of one task, from least to most typical of it
MEASURES = (*OVERLAP_MEASURES, "mass")
ARMS_PLOT = "gap_vs_overlap_fixed_size.png"

Groups = Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]  # (task, arm) -> its runs, seeds ascending


def group_arms(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """The runs of each (task, arm): tasks in the experiments' order, then arms low to high, then seeds."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (task_key(r["task"], TASK_ORDER), ARMS.index(r["arm"]), r["seed"])):
        groups.setdefault((r["task"], r["arm"]), []).append(r)
    return groups


def _task_runs(groups: Groups, task: str) -> list[Mapping[str, Any]]:
    return [r for (t, _), g in groups.items() if t == task for r in g]


def _task_fit(records: Sequence[Mapping[str, Any]], measure: str) -> LineFit | None:
    """Gap (points) on overlap (%) over every run of one task: each seed of each arm is a point."""
    x = [100 * r["overlap"][measure] for r in records]
    y = [100 * (r["pretrained_accuracy"] - r["scratch_accuracy"]) for r in records]
    return fit_line(x, y) if len(set(x)) > 1 else None


def _seed_slopes(records: Sequence[Mapping[str, Any]], measure: str) -> dict[int, float]:
    """Per pre-training seed: the slope of gap (points) on overlap (points) over that seed's arms."""
    points: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        points.setdefault(r["seed"], []).append(
            (100 * r["overlap"][measure], 100 * (r["pretrained_accuracy"] - r["scratch_accuracy"])))
    return slopes_by_seed(points)


def arms_finding(task: str, fit: LineFit | None, measure: str) -> str:
    """Does the gap move with topic similarity within one task, at the fixed size? Significance at p < 0.05."""
    if fit is None:
        return f"{task}: the arms do not differ in {measure} overlap; nothing to fit."
    verdict = ("the gap rises with topic similarity at this fixed size" if fit.p_value < 0.05 and fit.slope > 0 else
               "the gap falls with topic similarity at this fixed size" if fit.p_value < 0.05 else
               "no significant relation with topic similarity at this fixed size")
    return (f"{task}: {verdict} (slope {fit.slope:+.2f} gap points per {measure} overlap point, "
            f"r = {fit.r:.2f}, p = {fit.p_value:.2g}, {fit.n} runs).")


def plot_arms_gap_vs_overlap(groups: Groups, path: Path, measure: str) -> Path:
    """Every run's gap against its subset's overlap, one colour per task."""
    fig, ax = new_figure()
    for task in dict.fromkeys(t for t, _ in groups):
        points = [(100 * r["overlap"][measure], 100 * (r["pretrained_accuracy"] - r["scratch_accuracy"]))
                  for r in _task_runs(groups, task)]
        ax.plot(*zip(*points, strict=True), marker="o", ls="none", label=task)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"topic similarity: {measure} overlap with the task (%)")
    ax.set_ylabel("gap: pre-trained − scratch (points)")
    ax.set_title("Gap vs topic similarity at a fixed pre-training size (one point per run)")
    ax.legend()
    fig.savefig(path, format="png")
    return path


def build_arms_blocks(results: Mapping[str, Any], groups: Groups, measure: str, figure: str | None) -> list[Block]:
    # Results written before the arms were length-matched carry no lengths and render as they were written.
    lengths = all("tokens_per_article" in g[0] for g in groups.values())
    rows = []
    for (task, arm), group in groups.items():
        gap = paired_gap([g["pretrained_accuracy"] for g in group], [g["scratch_accuracy"] for g in group])
        length = [f"{group[0]['tokens_per_article']:.1f}"] if lengths else []
        rows.append([task, arm, *[pct(group[0]["overlap"][m], 2) for m in MEASURES], *length,
                     pct(np.mean([g["pretrained_accuracy"] for g in group])), fmt_mean_ci(gap, signed=True)])
    tasks = list(dict.fromkeys(t for t, _ in groups))
    slopes = {task: _seed_slopes(_task_runs(groups, task), measure) for task in tasks}
    several = any(len({r["seed"] for r in _task_runs(groups, t)}) > 1 for t in tasks)
    # One seed: every run is a point of one fit. Several: one slope per seed, since a seed's arms share their
    # scratch twin and are not independent runs; the interval is over seeds.
    findings = ([slope_finding(task, slopes[task], f"{measure} overlap") for task in tasks] if several else
                [arms_finding(task, _task_fit(_task_runs(groups, task), measure), measure) for task in tasks])
    blocks: list[Block] = [
        Heading(f"tinylm: the gap against topic similarity at a fixed pre-training size "
                f"({results['articles']:,} articles)", 1),
        Para(f"Scale {results['scale']}, {results['seeds']} seed(s). Per task, three pre-training subsets of the "
             "same size that differ in topic similarity to the task: the articles least (low) and most (high) "
             "typical of the task's training texts, and the experiments' random subset; each pre-trained with the "
             "same recipe and fine-tuned next to the same scratch twin. The arms vary topic similarity, measured "
             "by mass overlap, not the paper's token overlap, which stays near 100 % in every arm (token overlap "
             "set by design: `tinylm reproduce overlap-control`). "
             "Overlap with the task's train + test texts, in percent: token (the paper's), type, "
             "weighted (a token seen c times counts min(1, c/10)), mass (coverage of the task's token "
             "distribution at the subset's size). Gap: pre-trained minus scratch accuracy in points, paired by "
             "seed, with its 95% Student-t half-width."),
        *([Para("The low and high arms hold as many openings of each token length as the random arm: the "
                "same tokens per opening (column Tokens) and so the same tokens and steps of pre-training.")]
          if lengths else []),
        Table(["Task", "Arm", *[f"{m} overlap (%)" for m in MEASURES], *(["Tokens"] if lengths else []),
               "Pre-trained acc. (%)", "Gap (points)"], rows),
    ]
    if several:
        blocks += [Heading(f"Gap on {measure} overlap, one slope per pre-training seed", 2),
                   Para("Each seed's three arms share that seed's scratch twin, so the slope is fitted within each "
                        "seed and the mean slope gets a 95 % Student-t interval over seeds."),
                   Table(["Task", "Seeds", "Slope per seed", "Mean slope [95 % interval over seeds]"],
                         [slope_row(task, slopes[task]) for task in tasks])]
    if figure:
        blocks.append(Image(figure, f"gap vs topic similarity ({measure} overlap) at a fixed size"))
    blocks.append(Bullets(findings))
    return blocks


def render_arms_report(results: Mapping[str, Any], out: str | os.PathLike, measure: str = "mass") -> list[Path]:
    """Write report.md, report.html and the plot for an arms results dict."""
    groups = group_arms(results["records"])
    return write_report(out, "tinylm: topic similarity at a fixed size",
                        lambda figures: build_arms_blocks(results, groups, measure, figures.get(ARMS_PLOT)),
                        {ARMS_PLOT: lambda p: plot_arms_gap_vs_overlap(groups, p, measure)})
