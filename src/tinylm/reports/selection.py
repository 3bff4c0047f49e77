"""The report of `tinylm reproduce selection`: selected vs random pre-training subsets, measured vs predicted.

Input is the results dict that tinylm.experiments.selection writes to results.json, so a report can be
re-rendered from that file alone. One record is one seed of one arm ("random", or "selected" with the
selection measure) for one (task, size); all arms of a seed share the scratch twin. Verdicts are generated
from the numbers by selection_finding and prediction_finding; the blocks and renderers are tinylm.reports.experiments's.
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
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tinylm.analysis.gap_fit import GapFit, GapPrediction
from tinylm.analysis.overlap import DEFAULT_MEASURE, OVERLAP_MEASURES
from tinylm.analysis.stats import MeanCI, mean_ci, paired_gap
from tinylm.reports.experiments import Block, Bullets, Heading, Image, Para, Table, fmt_mean_ci, to_html, to_markdown

OVERLAP_PLOT, ACCURACY_PLOT = "selection_gap_vs_overlap.png", "selection_accuracy.png"
HELPS, HURTS, UNCLEAR = "helps", "hurts", "no clear difference"


@dataclass(frozen=True)
class ArmCell:
    """All seeds of one arm for one (task, size)."""

    arm: str  # "random" or "selected:<measure>"
    task: str
    articles: int
    pretrained: MeanCI
    scratch: MeanCI
    gap: MeanCI  # paired by seed
    vs_random: MeanCI | None  # selected minus random pre-trained accuracy, paired by seed (None for random)
    overlap: dict[str, float]
    seeds: tuple[int, ...]


def arm_name(record: Mapping[str, Any]) -> str:
    return "random" if record["arm"] == "random" else f"selected:{record['measure']}"


def summarise_arms(records: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[ArmCell]:
    """One ArmCell per (task, size, arm); random first, then the selection measures in record order."""
    groups: dict[tuple[str, int, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["articles"], arm_name(r))].append(r)
    arms = list(dict.fromkeys(["random", *(arm_name(r) for r in records)]))
    cells = []
    for (task, size, arm), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], arms.index(kv[0][2]))):
        runs = sorted(runs, key=lambda r: r["seed"])
        pre = [r["pretrained_accuracy"] for r in runs]
        scratch = [r["scratch_accuracy"] for r in runs]
        vs_random = None
        if arm != "random":
            random = {r["seed"]: r["pretrained_accuracy"] for r in groups.get((task, size, "random"), [])}
            paired = [(r["pretrained_accuracy"], random[r["seed"]]) for r in runs if r["seed"] in random]
            if paired:
                vs_random = paired_gap([a for a, _ in paired], [b for _, b in paired], confidence)
        cells.append(ArmCell(arm, task, size, mean_ci(pre, confidence), mean_ci(scratch, confidence),
                             paired_gap(pre, scratch, confidence), vs_random, dict(runs[0].get("overlap") or {}),
                             tuple(r["seed"] for r in runs)))
    return cells


def selection_finding(cell: ArmCell, confidence: float = 0.95) -> tuple[str, str]:
    """(verdict, sentence): does the selected subset beat the random one of the same size, paired by seed?"""
    d = cell.vs_random
    label = f"{cell.task}, {cell.articles:,} articles, {cell.arm.split(':')[1]} selection"
    if d is None:
        return UNCLEAR, f"{label}: no random-subset runs with the same seeds to compare with."
    diff = fmt_mean_ci(d, signed=True, unit=" points")
    pct = f"{confidence:.0%}"
    if d.excludes(0) and d.mean > 0:
        return HELPS, f"{label}: selection helps: pre-trained accuracy {diff} over the random subset ({pct} CI > 0)."
    if d.excludes(0):
        return HURTS, f"{label}: selection hurts: pre-trained accuracy {diff} against the random subset ({pct} CI < 0)."
    why = "its CI includes 0" if d.has_ci else "one seed gives no CI"
    return UNCLEAR, f"{label}: no clear difference: pre-trained accuracy {diff} against the random subset ({why})."


def _predict(fit: GapFit, cell: ArmCell, confidence: float) -> GapPrediction | None:
    return fit.predict(100 * cell.overlap[fit.measure], confidence) if fit.measure in cell.overlap else None


def prediction_finding(cell: ArmCell, pred: GapPrediction) -> str:
    """Whether the measured mean gap of `cell` lies in the fit's prediction interval."""
    inside = pred.covers(100 * cell.gap.mean)
    where = "inside" if inside else ("above" if 100 * cell.gap.mean > pred.high else "below")
    extra = "; the overlap lies outside the fitted range, so this is an extrapolation" if pred.extrapolation else ""
    return (f"{cell.task}, {cell.arm}: predicted {pred.gap:+.1f} points ({pred.confidence:.0%} PI {pred.low:+.1f} to "
            f"{pred.high:+.1f}) at {pred.overlap:.2f} % {DEFAULT_MEASURE} overlap, measured "
            f"{fmt_mean_ci(cell.gap, signed=True)}: {where} the interval{extra}.")


# ---------------------------------------------------------------- plots


_COLORS = {"fewrel": "tab:blue", "ag_news": "tab:orange", "dbpedia": "tab:green"}
_MARKERS = ["*", "D", "P", "X", "v"]


def _color(task: str) -> str:
    return _COLORS.get(task, "tab:purple")


def plot_gap_vs_overlap(cells: Sequence[ArmCell], fits: Mapping[str, GapFit], path: Path,
                        confidence: float = 0.95) -> Path | None:
    """One panel per overlap measure: the fit's points, line and prediction band, and each arm's mean gap."""
    measures = [m for m in OVERLAP_MEASURES if m in fits]
    if not measures or not cells:
        return None
    fig = Figure(figsize=(5.2 * len(measures), 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
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
            ax.errorbar(100 * c.overlap[measure], 100 * c.gap.mean, yerr=100 * c.gap.half_width if c.gap.has_ci else 0,
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
    fig = Figure(figsize=(7.5, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
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
                   yerr=100 * value.half_width if value.has_ci else 0, capsize=3, color=f"C{j}",
                   label=bar if i == 0 else None)
    ax.set_xticks(range(len(groups)), [f"{t}\n{s:,} articles" for t, s in groups])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Scratch vs pre-trained on random and selected subsets (bars: {confidence:.0%} CI)")
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")
    return path


# ---------------------------------------------------------------- the report


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _pi(p: GapPrediction) -> str:
    return f"{p.gap:+.1f} [{p.low:+.1f}, {p.high:+.1f}]" + (" (extrapolated)" if p.extrapolation else "")


def build_blocks(results: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> list[Block]:
    figures = figures or {}
    confidence = float(results.get("confidence", 0.95))
    pct = f"{confidence:.0%}"
    records = results["records"]
    cells = summarise_arms(records, confidence)
    fits = {m: GapFit.from_dict(f) for m, f in (results.get("fit") or {}).items()}
    fit = fits.get(DEFAULT_MEASURE)
    selected = [c for c in cells if c.arm != "random"]
    random = {(c.task, c.articles): c for c in cells if c.arm == "random"}
    # Each training run once: a random-subset model and a scratch twin serve several records.
    unique = {r["runs"][k]: r["timings"][k] for r in records if "runs" in r and "timings" in r for k in r["runs"]}
    sel_info = {(s["task"], s["articles"], s["measure"]): s for s in results.get("selections", [])}
    setup = records[0].get("pretrain_config") or {"data_seed": "?", "seq_len": "?"}

    blocks: list[Block] = [
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
             f"{pct} Student-t interval over seeds. Overlap is measured as in experiment 3 (train + test texts, "
             f"first {setup['seq_len']} tokens). The fit is experiment 3's line of mean gap on overlap from "
             f"{results.get('fit_source')}; predictions carry its {pct} prediction interval for one new point."),
    ]
    summary_at = len(blocks)

    # 1. What was chosen.
    blocks.append(Heading("1. The subsets"))
    rows = []
    for (task, size), rc in random.items():
        rows.append([task, f"{size:,}", "random", *(_pct(rc.overlap[m]) if m in rc.overlap else "–"
                                                    for m in OVERLAP_MEASURES), "–", "–", "–"])
        for c in (c for c in selected if (c.task, c.articles) == (task, size)):
            info = sel_info.get((task, size, c.arm.split(":")[1]), {})
            sat = info.get("saturated_at")
            rows.append([task, f"{size:,}", c.arm, *(_pct(c.overlap[m]) if m in c.overlap else "–"
                                                     for m in OVERLAP_MEASURES),
                         (f"{100 * info['coverage']:.1f} vs {100 * info['random_coverage']:.1f}"
                          if "coverage" in info else "–"),
                         f"{sat:,}" if sat is not None else "never", f"{info.get('seconds', float('nan')):.1f}"])
    blocks.append(Table(["Task", "Articles", "Subset", *[f"{m} overlap (%)" for m in OVERLAP_MEASURES],
                         "Own objective (%), selected vs random", "Saturated after (articles)",
                         "Selection (s)"], rows))
    blocks.append(Para("Own objective: the coverage the selection maximises (on the train texts), for the selected "
                       "and for the random subset. 'Saturated after': the number of picks after which every "
                       "remaining article added 0, so the rest of the subset is a seeded random draw."))
    firsts = [f"{s['task']} ({s['measure']}): " + "; ".join(s.get("first", [])[:6])
              for s in results.get("selections", [])]
    if firsts:
        blocks += [Para("The first articles each selection picked:"), Bullets(firsts)]

    # 2. Does selection help?
    blocks.append(Heading("2. Selected vs random subsets of the same size"))
    blocks.append(Table(
        ["Task", "Articles", "Subset", "Pre-trained acc. (%)", "Scratch acc. (%)", "Gap (points)",
         "Selected − random (points)"],
        [[c.task, f"{c.articles:,}", c.arm, fmt_mean_ci(c.pretrained), fmt_mean_ci(c.scratch),
          fmt_mean_ci(c.gap, signed=True), fmt_mean_ci(c.vs_random, signed=True) if c.vs_random else "–"]
         for c in cells]))
    if ACCURACY_PLOT in figures:
        blocks.append(Image(figures[ACCURACY_PLOT], "accuracy of scratch, random-subset and selected-subset models"))
    findings = [selection_finding(c, confidence) for c in selected]
    blocks.append(Bullets([s for _, s in findings]))

    # 3. Does the stored fit predict the gaps?
    blocks.append(Heading("3. Predicted vs measured gap"))
    covered: list[bool] = []
    gain_rows = []
    if fit is None:
        blocks.append(Para("The results carry no stored fit for the token measure, so no gap is predicted."))
    else:
        blocks.append(Para(
            f"Stored fit ({DEFAULT_MEASURE} overlap): gap = {fit.slope:+.2f} × overlap {fit.intercept:+.1f} points, "
            f"r = {fit.r:.2f}, n = {fit.n} points, residual SD {fit.residual_sd:.1f} points, fitted on "
            f"{min(fit.x):.2f}–{max(fit.x):.2f} % overlap. The fitted points differ in pre-training size as well as "
            "in overlap, so the line carries the size effect too; a selected subset changes overlap at a fixed size, "
            "which is what tests whether overlap itself moves the gap."))
        rows = []
        for c in cells:
            p = _predict(fit, c, confidence)
            if p is None:
                continue
            inside = p.covers(100 * c.gap.mean)
            if c.arm != "random":
                covered.append(inside)
            others = [_pi(q) if (q := _predict(fits[m], c, confidence)) else "–"
                      for m in OVERLAP_MEASURES if m != DEFAULT_MEASURE and m in fits]
            rows.append([c.task, f"{c.articles:,}", c.arm, _pct(c.overlap[DEFAULT_MEASURE]), _pi(p),
                         fmt_mean_ci(c.gap, signed=True), "yes" if inside else "no", *others])
        blocks.append(Table(["Task", "Articles", "Subset", f"{DEFAULT_MEASURE} overlap (%)",
                             f"Predicted gap [{pct} PI]", "Measured gap", "Inside PI",
                             *[f"Predicted by the {m} fit" for m in OVERLAP_MEASURES
                               if m != DEFAULT_MEASURE and m in fits]], rows))
        # The sharper question: does the line predict the *gain* of selection over random?
        for c in selected:
            rc = random.get((c.task, c.articles))
            if rc is None or c.vs_random is None:
                continue
            preds = []
            for m in (m for m in OVERLAP_MEASURES if m in fits):
                if m in c.overlap and m in rc.overlap:
                    preds.append(f"{fits[m].slope * 100 * (c.overlap[m] - rc.overlap[m]):+.1f}")
                else:
                    preds.append("–")
            gain_rows.append([c.task, f"{c.articles:,}", c.arm, *preds, fmt_mean_ci(c.vs_random, signed=True)])
        blocks.append(Para("Predicted gain of selection over random = fit slope × (selected − random overlap), per "
                           "measure's fit, against the measured gain (selected − random, paired by seed):"))
        blocks.append(Table(["Task", "Articles", "Subset", *[f"Predicted by {m} fit" for m in OVERLAP_MEASURES
                                                             if m in fits], "Measured gain (points)"], gain_rows))
        if OVERLAP_PLOT in figures:
            blocks.append(Image(figures[OVERLAP_PLOT], "gap vs overlap with the stored fit and the selection runs"))
        blocks.append(Bullets([prediction_finding(c, p) for c in selected if (p := _predict(fit, c, confidence))]))

    # Summary, generated from the findings above.
    by: dict[str, list[str]] = defaultdict(list)
    for c, (verdict, _) in zip(selected, findings, strict=True):
        by[verdict].append(f"{c.task} ({c.arm.split(':')[1]})")
    heads = {HELPS: "Selection helps (CI above 0)", HURTS: "Selection hurts (CI below 0)",
             UNCLEAR: "No clear difference between selected and random subsets"}
    lines = [f"{heads[v]}: {', '.join(by[v])}." for v in (HELPS, HURTS, UNCLEAR) if by[v]]
    if covered:
        lines.append(f"The stored {DEFAULT_MEASURE} fit's {pct} prediction interval holds the measured gap for "
                     f"{sum(covered)} of {len(covered)} selected subsets.")
    if gain_rows and fit is not None:
        lines.append(_gain_summary(selected, random, fit))
    blocks[summary_at:summary_at] = [Heading("Summary"), Bullets(lines)]

    blocks += [Heading("Runs"), Table(
        ["Task", "Articles", "Subset", "Seed", "Pre-trained acc. (%)", "Scratch acc. (%)", "Gap (points)", "Seconds"],
        [[r["task"], f"{r['articles']:,}", arm_name(r), str(r["seed"]), f"{100 * r['pretrained_accuracy']:.1f}",
          f"{100 * r['scratch_accuracy']:.1f}", f"{100 * (r['pretrained_accuracy'] - r['scratch_accuracy']):+.1f}",
          f"{r['seconds']:.0f}" if r.get("seconds") is not None else "–"]
         for r in sorted(records, key=lambda r: (r["task"], r["articles"], arm_name(r), r["seed"]))])]
    return blocks


def _gain_summary(selected: Sequence[ArmCell], random: Mapping[tuple[str, int], ArmCell], fit: GapFit) -> str:
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    confidence = float(results.get("confidence", 0.95))
    cells = summarise_arms(results["records"], confidence)
    fits = {m: GapFit.from_dict(f) for m, f in (results.get("fit") or {}).items()}
    figures: dict[str, str] = {}
    written: list[Path] = []
    for name, plot in ((OVERLAP_PLOT, lambda p: plot_gap_vs_overlap(cells, fits, p, confidence)),
                       (ACCURACY_PLOT, lambda p: plot_accuracy(cells, p, confidence))):
        path = plot(out / name)
        if path is not None:
            figures[name] = name
            written.append(path)
    blocks = build_blocks(results, figures)
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, out, title="tinylm: overlap-selected pre-training data"), encoding="utf-8")
    return [md, page, *written]

