"""The report of `tinylm reproduce selection`: selected vs random pre-training subsets, measured vs predicted.

Input is the results dict that the sweep writes to results.json, so a report can be re-rendered from that
file alone. The cells and verdicts are tinylm.reports.selection_findings's; this module
lays them out with the plots.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.analysis.gap_fit import GapFit, GapPrediction
from tinylm.analysis.overlap import DEFAULT_MEASURE, OVERLAP_MEASURES
from tinylm.reports.render import (
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    err_points,
    fmt_mean_ci,
    new_canvas,
    new_figure,
    pct,
    write_report,
)
from tinylm.reports.selection_findings import (
    HELPS,
    HURTS,
    UNCLEAR,
    ArmCell,
    arm_name,
    predict_gap,
    prediction_finding,
    selection_finding,
    summarise_arms,
)

OVERLAP_PLOT, ACCURACY_PLOT = "selection_gap_vs_overlap.png", "selection_accuracy.png"


# ---------------------------------------------------------------- plots


_COLORS = {"fewrel": "tab:blue", "ag_news": "tab:orange", "dbpedia": "tab:green"}
_MARKERS = ["*", "D", "P", "X", "v"]


def _color(task: str) -> str:
    return _COLORS.get(task, "tab:purple")


def plot_selection_against_fit(cells: Sequence[ArmCell], fits: Mapping[str, GapFit], path: Path,
                               confidence: float = 0.95) -> Path | None:
    """One panel per overlap measure: the stored experiment-3 fit (its points, line and prediction band) and
    each arm's mean gap on top of it."""
    measures = [m for m in OVERLAP_MEASURES if m in fits]
    if not measures or not cells:
        return None
    fig = new_canvas((5.2 * len(measures), 4.6))
    selected_arms = sorted({c.arm for c in cells if c.arm != "random"})
    for k, measure in enumerate(measures):
        ax, fit = fig.add_subplot(1, len(measures), k + 1), fits[measure]
        xs = [100 * c.overlap[measure] for c in cells if measure in c.overlap]
        lo, hi = min([*fit.x, *xs]), max([*fit.x, *xs])
        grid = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), 100)
        band = [fit.predict(x, confidence) for x in grid]
        ax.fill_between(grid, [b.low for b in band], [b.high for b in band], color="grey", alpha=0.2,
                        label=f"fit {confidence:.0%} prediction interval")
        ax.plot(grid, [b.gap for b in band], color="black", lw=1, label=f"fit: r = {fit.r:.2f}, n = {fit.n}")
        for x, y, label in zip(fit.x, fit.y, fit.labels, strict=True):
            ax.plot(x, y, "o", color=_color(label.split("@")[0]), alpha=0.35, ms=5)
        for c in cells:
            if measure not in c.overlap:
                continue
            marker = "s" if c.arm == "random" else _MARKERS[selected_arms.index(c.arm) % len(_MARKERS)]
            ax.errorbar(100 * c.overlap[measure], 100 * c.gap.mean, yerr=err_points(c.gap),
                        marker=marker, ms=9 if c.arm != "random" else 7, color=_color(c.task), capsize=3,
                        mfc="white" if c.arm == "random" else _color(c.task), ls="none")
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"{measure} overlap with the task (%)")
        ax.set_ylabel("gap: pre-trained − scratch (points)")
        ax.set_title(f"{measure} overlap")
        if k == 0:  # one legend: the fit, then what each marker and colour means
            handles = [*ax.get_legend_handles_labels()[0]]
            names = [*ax.get_legend_handles_labels()[1]]
            for arm, marker in [("random", "s"), *((a, _MARKERS[i % len(_MARKERS)])
                                                   for i, a in enumerate(selected_arms))]:
                handles.append(ax.plot([], [], marker, color="black", mfc="white" if arm == "random" else "black")[0])
                names.append(f"{arm} subset" if arm == "random" else f"{arm.split(':')[1]}-selected subset")
            for task in dict.fromkeys(c.task for c in cells):
                handles.append(ax.plot([], [], "o", color=_color(task))[0])
                names.append(task)
            handles.append(ax.plot([], [], "o", color="grey", alpha=0.35)[0])
            names.append("experiment 3 points (fitted)")
            ax.legend(handles, names, fontsize=7, loc="best")
    fig.suptitle(f"Gap vs overlap: stored fit and the selection runs (bars: {confidence:.0%} CI over seeds)")
    fig.savefig(path, format="png")
    return path


def plot_accuracy(cells: Sequence[ArmCell], path: Path, confidence: float = 0.95) -> Path | None:
    """Grouped bars per (task, size): scratch, random-subset and each selected-subset pre-trained accuracy."""
    if not cells:
        return None
    fig, ax = new_figure((7.5, 4.4))
    groups = list(dict.fromkeys((c.task, c.articles) for c in cells))
    arms = list(dict.fromkeys(c.arm for c in cells))
    bars = ["scratch", *arms]
    width = 0.8 / len(bars)
    for i, (task, size) in enumerate(groups):
        row = {c.arm: c for c in cells if (c.task, c.articles) == (task, size)}
        values = [row[arms[0]].scratch, *(row[a].pretrained if a in row else None for a in arms)]
        for j, (bar, value) in enumerate(zip(bars, values, strict=True)):
            if value is None:
                continue
            ax.bar(i + (j - (len(bars) - 1) / 2) * width, 100 * value.mean, width,
                   yerr=err_points(value), capsize=3, color=f"C{j}",
                   label=bar if i == 0 else None)
    ax.set_xticks(range(len(groups)), [f"{t}\n{s:,} articles" for t, s in groups])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Scratch vs pre-trained on random and selected subsets (bars: {confidence:.0%} CI)")
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")
    return path


# ---------------------------------------------------------------- the report

Random = Mapping[tuple[str, int], ArmCell]  # the random arm of each (task, size)


def _pi(p: GapPrediction) -> str:
    return f"{p.gap:+.1f} [{p.low:+.1f}, {p.high:+.1f}]" + (" (extrapolated)" if p.extrapolation else "")


def _fits(results: Mapping[str, Any]) -> dict[str, GapFit]:
    return {m: GapFit.from_dict(f) for m, f in (results.get("fit") or {}).items()}


def _overlaps(cell: ArmCell) -> list[str]:
    return [pct(cell.overlap[m], 2) if m in cell.overlap else "–" for m in OVERLAP_MEASURES]


def _intro_blocks(results: Mapping[str, Any], confidence: float) -> list[Block]:
    records = results["records"]
    # Each training run once: a random-subset model and a scratch twin serve several records.
    unique = {r["runs"][k]: r["timings"][k] for r in records if "runs" in r and "timings" in r for k in r["runs"]}
    setup = records[0].get("pretrain_config") or {"data_seed": "?", "seq_len": "?"}
    level = f"{confidence:.0%}"
    return [
        Heading("tinylm: pre-training data chosen by token overlap", 1),
        Para(f"Scale {results['scale']}; {', '.join(f'{s:,}' for s in results['sizes'])} pre-training articles; "
             f"{results['seeds']} seeds (42, 43, ...); tasks {', '.join(results['tasks'])}; selection measures "
             f"{', '.join(results['measures'])}, chosen from the task's "
             f"{'train texts' if results.get('split') == 'train' else 'train and test texts'} out of a pool of "
             f"{results['pool']['articles']:,} Wikipedia articles (tie seed {results.get('selection_seed')}). "
             f"The random subset is the experiments' (the first N articles of the data-seed-{setup['data_seed']} "
             "order). "
             f"{len(records)} records from {len(unique)} training runs taking {sum(unique.values()) / 3600:.2f} h "
             f"of compute (a cached run counts the time it took when trained); this launch of the sweep took "
             f"{results.get('seconds', 0) / 60:.1f} min, "
             "re-using every run it found in the run cache."),
        Para(f"Accuracies are test accuracies in percent; the gap is pre-trained minus from-scratch accuracy in "
             f"points, paired by seed; every arm of a seed shares its scratch twin. '±' is the half-width of the "
             f"{level} Student-t interval over seeds. Overlap is measured as in experiment 3 (train + test texts, "
             f"first {setup['seq_len']} tokens). The fit is experiment 3's line of mean gap on overlap from "
             f"{results.get('fit_source')}; predictions carry its {level} prediction interval for one new point."),
    ]


def _subsets_section(results: Mapping[str, Any], cells: Sequence[ArmCell]) -> list[Block]:
    """1. What was chosen: each subset's overlaps, its own objective and when the selection saturated."""
    sel_info = {(s["task"], s["articles"], s["measure"]): s for s in results.get("selections", [])}
    rows = []
    for rc in (c for c in cells if c.arm == "random"):
        rows.append([rc.task, f"{rc.articles:,}", "random", *_overlaps(rc), "–", "–", "–"])
        for c in (c for c in cells if c.arm != "random" and (c.task, c.articles) == (rc.task, rc.articles)):
            info = sel_info.get((c.task, c.articles, c.arm.split(":")[1]), {})
            sat = info.get("saturated_at")
            rows.append([c.task, f"{c.articles:,}", c.arm, *_overlaps(c),
                         (f"{pct(info['coverage'])} vs {pct(info['random_coverage'])}" if "coverage" in info else "–"),
                         f"{sat:,}" if sat is not None else "never", f"{info.get('seconds', float('nan')):.1f}"])
    blocks: list[Block] = [
        Heading("1. The subsets"),
        Table(["Task", "Articles", "Subset", *[f"{m} overlap (%)" for m in OVERLAP_MEASURES],
               "Own objective (%), selected vs random", "Saturated after (articles)", "Selection (s)"], rows),
        Para("Own objective: the coverage the selection maximises (on the train texts), for the selected "
             "and for the random subset. 'Saturated after': the number of picks after which every "
             "remaining article added 0, so the rest of the subset is a seeded random draw."),
    ]
    firsts = [f"{s['task']} ({s['measure']}): " + "; ".join(s.get("first", [])[:6])
              for s in results.get("selections", [])]
    if firsts:
        blocks += [Para("The first articles each selection picked:"), Bullets(firsts)]
    return blocks


def _comparison_section(cells: Sequence[ArmCell], confidence: float, figures: Mapping[str, str]
                        ) -> tuple[list[Block], list[tuple[str, str]]]:
    """2. Does selection help? Returns the blocks and the finding of each selected arm."""
    blocks: list[Block] = [Heading("2. Selected vs random subsets of the same size"), Table(
        ["Task", "Articles", "Subset", "Pre-trained acc. (%)", "Scratch acc. (%)", "Gap (points)",
         "Selected − random (points)"],
        [[c.task, f"{c.articles:,}", c.arm, fmt_mean_ci(c.pretrained), fmt_mean_ci(c.scratch),
          fmt_mean_ci(c.gap, signed=True), fmt_mean_ci(c.vs_random, signed=True) if c.vs_random else "–"]
         for c in cells])]
    if ACCURACY_PLOT in figures:
        blocks.append(Image(figures[ACCURACY_PLOT], "accuracy of scratch, random-subset and selected-subset models"))
    findings = [selection_finding(c, confidence) for c in cells if c.arm != "random"]
    blocks.append(Bullets([s for _, s in findings]))
    return blocks, findings


def _prediction_table(cells: Sequence[ArmCell], fits: Mapping[str, GapFit], confidence: float
                      ) -> tuple[Table, list[bool]]:
    """Each arm's gap as the default measure's fit predicts it, against the measured one; also whether each
    selected arm's measured gap lies inside the prediction interval."""
    fit = fits[DEFAULT_MEASURE]
    others = [m for m in OVERLAP_MEASURES if m != DEFAULT_MEASURE and m in fits]
    covered: list[bool] = []
    rows = []
    for c in cells:
        p = predict_gap(fit, c, confidence)
        if p is None:
            continue
        inside = p.covers(100 * c.gap.mean)
        if c.arm != "random":
            covered.append(inside)
        rows.append([c.task, f"{c.articles:,}", c.arm, pct(c.overlap[DEFAULT_MEASURE], 2), _pi(p),
                     fmt_mean_ci(c.gap, signed=True), "yes" if inside else "no",
                     *[_pi(q) if (q := predict_gap(fits[m], c, confidence)) else "–" for m in others]])
    header = ["Task", "Articles", "Subset", f"{DEFAULT_MEASURE} overlap (%)", f"Predicted gap [{confidence:.0%} PI]",
              "Measured gap", "Inside PI", *[f"Predicted by the {m} fit" for m in others]]
    return Table(header, rows), covered


def _gain_table(selected: Sequence[ArmCell], random: Random, fits: Mapping[str, GapFit]) -> Table:
    """The sharper question: does the line predict the *gain* of selection over random?"""
    measures = [m for m in OVERLAP_MEASURES if m in fits]
    rows = []
    for c in selected:
        rc = random.get((c.task, c.articles))
        if rc is None or c.vs_random is None:
            continue
        preds = [f"{fits[m].slope * 100 * (c.overlap[m] - rc.overlap[m]):+.1f}"
                 if m in c.overlap and m in rc.overlap else "–" for m in measures]
        rows.append([c.task, f"{c.articles:,}", c.arm, *preds, fmt_mean_ci(c.vs_random, signed=True)])
    return Table(["Task", "Articles", "Subset", *[f"Predicted by {m} fit" for m in measures],
                  "Measured gain (points)"], rows)


def _prediction_section(cells: Sequence[ArmCell], random: Random, fits: Mapping[str, GapFit], confidence: float,
                        figures: Mapping[str, str]) -> tuple[list[Block], list[bool], bool]:
    """3. Does the stored fit predict the gaps? Returns the blocks, which selected gaps the prediction interval
    holds, and whether any selected arm has a gain to compare."""
    blocks: list[Block] = [Heading("3. Predicted vs measured gap")]
    fit = fits.get(DEFAULT_MEASURE)
    if fit is None:
        blocks.append(Para("The results carry no stored fit for the token measure, so no gap is predicted."))
        return blocks, [], False
    selected = [c for c in cells if c.arm != "random"]
    predictions, covered = _prediction_table(cells, fits, confidence)
    gains = _gain_table(selected, random, fits)
    blocks += [
        Para(f"Stored fit ({DEFAULT_MEASURE} overlap): gap = {fit.slope:+.2f} × overlap {fit.intercept:+.1f} points, "
             f"r = {fit.r:.2f}, n = {fit.n} points, residual SD {fit.residual_sd:.1f} points, fitted on "
             f"{min(fit.x):.2f}–{max(fit.x):.2f} % overlap. The fitted points differ in pre-training size as well as "
             "in overlap, so the line carries the size effect too; a selected subset changes overlap at a fixed "
             "size, which is what tests whether overlap itself moves the gap."),
        predictions,
        Para("Predicted gain of selection over random = fit slope × (selected − random overlap), per "
             "measure's fit, against the measured gain (selected − random, paired by seed):"),
        gains,
    ]
    if OVERLAP_PLOT in figures:
        blocks.append(Image(figures[OVERLAP_PLOT], "gap vs overlap with the stored fit and the selection runs"))
    blocks.append(Bullets([prediction_finding(c, p) for c in selected if (p := predict_gap(fit, c, confidence))]))
    return blocks, covered, bool(gains.rows)


def _summary_blocks(selected: Sequence[ArmCell], findings: Sequence[tuple[str, str]], covered: Sequence[bool],
                    gains: bool, random: Random, fit: GapFit | None, confidence: float) -> list[Block]:
    """The summary, generated from the sections' findings."""
    by: dict[str, list[str]] = defaultdict(list)
    for c, (verdict, _) in zip(selected, findings, strict=True):
        by[verdict].append(f"{c.task} ({c.arm.split(':')[1]})")
    heads = {HELPS: "Selection helps (CI above 0)", HURTS: "Selection hurts (CI below 0)",
             UNCLEAR: "No clear difference between selected and random subsets"}
    lines = [f"{heads[v]}: {', '.join(by[v])}." for v in (HELPS, HURTS, UNCLEAR) if by[v]]
    if covered:
        lines.append(f"The stored {DEFAULT_MEASURE} fit's {confidence:.0%} prediction interval holds the measured gap "
                     f"for {sum(covered)} of {len(covered)} selected subsets.")
    if gains and fit is not None:
        lines.append(_gain_summary(selected, random, fit))
    return [Heading("Summary"), Bullets(lines)]


def _runs_blocks(records: Sequence[Mapping[str, Any]]) -> list[Block]:
    return [Heading("Runs"), Table(
        ["Task", "Articles", "Subset", "Seed", "Pre-trained acc. (%)", "Scratch acc. (%)", "Gap (points)", "Seconds"],
        [[r["task"], f"{r['articles']:,}", arm_name(r), str(r["seed"]), pct(r["pretrained_accuracy"]),
          pct(r["scratch_accuracy"]), pct(r["pretrained_accuracy"] - r["scratch_accuracy"], signed=True),
          f"{r['seconds']:.0f}" if r.get("seconds") is not None else "–"]
         for r in sorted(records, key=lambda r: (r["task"], r["articles"], arm_name(r), r["seed"]))])]


def build_blocks(results: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> list[Block]:
    figures = figures or {}
    confidence = float(results.get("confidence", 0.95))
    cells = summarise_arms(results["records"], confidence)
    fits = _fits(results)
    selected = [c for c in cells if c.arm != "random"]
    random = {(c.task, c.articles): c for c in cells if c.arm == "random"}
    comparison, findings = _comparison_section(cells, confidence, figures)
    prediction, covered, gains = _prediction_section(cells, random, fits, confidence, figures)
    summary = _summary_blocks(selected, findings, covered, gains, random, fits.get(DEFAULT_MEASURE), confidence)
    return [*_intro_blocks(results, confidence), *summary, *_subsets_section(results, cells), *comparison,
            *prediction, *_runs_blocks(results["records"])]


def _gain_summary(selected: Sequence[ArmCell], random: Random, fit: GapFit) -> str:
    """One sentence: predicted vs measured selection gains under the default measure's fit, and their correlation."""
    pairs = [(fit.slope * 100 * (c.overlap[fit.measure] - random[(c.task, c.articles)].overlap[fit.measure]),
              100 * c.vs_random.mean)
             for c in selected if c.vs_random is not None and (c.task, c.articles) in random
             and fit.measure in c.overlap]
    if not pairs:
        return "No selected subset has a random counterpart to compare gains with."
    pred, meas = np.array(pairs).T
    text = (f"Predicted gain of selection over random ({fit.measure} fit): {', '.join(f'{p:+.1f}' for p in pred)} "
            f"points; measured: {', '.join(f'{m:+.1f}' for m in meas)} points")
    if len(pairs) >= 3 and np.std(pred) > 0 and np.std(meas) > 0:
        text += f" (correlation {np.corrcoef(pred, meas)[0, 1]:+.2f} over {len(pairs)} subsets)"
    return text + "."


def render_selection_report(results: Mapping[str, Any] | str | os.PathLike[str], out_dir: str | os.PathLike[str]
                            ) -> list[Path]:
    """Write report.md, report.html and the two PNG plots for a selection results dict (or its results.json)."""
    if not isinstance(results, Mapping):
        results = json.loads(Path(results).read_text(encoding="utf-8"))
    if not results.get("records"):
        raise ValueError("no selection runs to report on")
    confidence = float(results.get("confidence", 0.95))
    cells = summarise_arms(results["records"], confidence)
    fits = _fits(results)
    return write_report(out_dir, "tinylm: overlap-selected pre-training data",
                        lambda figures: build_blocks(results, figures),
                        {OVERLAP_PLOT: lambda p: plot_selection_against_fit(cells, fits, p, confidence),
                         ACCURACY_PLOT: lambda p: plot_accuracy(cells, p, confidence)})
