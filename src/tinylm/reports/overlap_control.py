"""The report of `tinylm reproduce overlap-control`: the gap against token overlap set by design.

Input is the results dict that tinylm.experiments.overlap_control writes to results.json: `variants` (per task
and level: what was withheld, the token overlap measured on the variant's token stream, the invariance counts),
`pretraining` (per pre-training run: steps, tokens, held-out MLM quality) and `records` (one per task, level,
pre-training seed and fine-tuning seed). The gap is fitted on token overlap with one slope per pre-training
seed (each seed's per-level gap is the mean over its fine-tuning seeds); the mean slope gets a 95 % Student-t
interval over those seeds, so the seeds, not the test texts, carry the uncertainty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.analysis.stats import MeanCI, mean_ci, slopes_by_seed
from tinylm.data.withhold import REPLACEMENT
from tinylm.reports.render import (
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    by_task,
    fmt_mean_ci,
    new_figure,
    pct,
    seeds_text,
    write_report,
)

CONTROL_PLOT = "gap_vs_token_overlap_controlled.png"

Records = Sequence[Mapping[str, Any]]


def seed_level_gaps(records: Records) -> dict[int, dict[float, tuple[float, float]]]:
    """One task's records -> {seed: {level: (token overlap, mean gap over the fine-tuning seeds)}}."""
    grouped: dict[int, dict[float, list[Mapping[str, Any]]]] = {}
    for r in records:
        grouped.setdefault(r["seed"], {}).setdefault(r["level"], []).append(r)
    return {seed: {level: (rs[0]["token_overlap"],
                           float(np.mean([x["pretrained_accuracy"] - x["scratch_accuracy"] for x in rs])))
                   for level, rs in sorted(levels.items(), reverse=True)}
            for seed, levels in sorted(grouped.items())}


def seed_slopes(records: Records) -> dict[int, float]:
    """Per pre-training seed: the least-squares slope of gap (points) on token overlap (points); seeds with
    fewer than two distinct overlaps have none."""
    return slopes_by_seed({seed: [(100 * o, 100 * g) for o, g in levels.values()]
                           for seed, levels in seed_level_gaps(records).items()})


def slope_row(task: str, slopes: Mapping[int, float]) -> list[str]:
    """A task's row of the per-seed slope table: seeds, each seed's slope, the mean with its interval over seeds."""
    m: MeanCI | None = mean_ci(list(slopes.values())) if slopes else None
    return [task, str(len(slopes)), ", ".join(f"{s:+.2f}" for s in slopes.values()) or "–",
            "–" if m is None else f"{m.mean:+.2f}" + (f" [{m.low:+.2f}, {m.high:+.2f}]" if m.has_ci
                                                      else " (no interval)")]


def slope_finding(task: str, slopes: Mapping[int, float], what: str = "token overlap") -> str:
    """What one task's per-seed slopes of gap on `what` say, a negative or null result stated as such."""
    if not slopes:
        return f"{task}: no slope (the levels do not differ in {what})."
    m, per = mean_ci(list(slopes.values())), f"gap points per {what.replace(' ', '-')} point"
    if not m.has_ci:
        return (f"{task}: slope {m.mean:+.2f} {per} from {seeds_text(m.n)}; "
                "no interval over seeds (one seed): no claim either way.")
    interval = f"{m.mean:+.2f} [{m.low:+.2f}, {m.high:+.2f}] {per}, {seeds_text(m.n)}"
    if m.low > 0:
        verdict = f"the gap grows with {what} (the interval lies above 0)"
    elif m.high < 0:
        verdict = f"negative result: the gap shrinks as {what} grows (the interval lies below 0)"
    else:
        verdict = f"null result: the interval includes 0, so no relation between gap and {what} is shown"
    return f"{task}: {verdict}; slope {interval}."


def _quality(pretraining: Records, task: str, level: float) -> str:
    accs = [p["quality"]["mlm_accuracy"] for p in pretraining
            if p["task"] == task and p["level"] == level and "quality" in p]
    return fmt_mean_ci(mean_ci(accs), count=False) if accs else "–"


def _steps(pretraining: Records, task: str, level: float) -> str:
    steps = sorted({p["steps"] for p in pretraining if p["task"] == task and p["level"] == level})
    return ", ".join(f"{s:,}" for s in steps) or "–"


def invariance_finding(task: str, variants: Records, pretraining: Records) -> str:
    """Whether a task's variants share their sequences, tokens and steps, and keep the rest of the text."""
    same = {
        "sequences": len({v["sequences"] for v in variants}) == 1,
        "non-padding tokens": len({v["tokens"] for v in variants}) == 1,
        "optimizer steps": len({p["steps"] for p in pretraining if p["task"] == task}) <= 1,
    }
    kept = all(v["rest_unchanged"] for v in variants)
    held = [name for name, ok in same.items() if ok]
    differ = [name for name, ok in same.items() if not ok]
    text = f"{task}: the {len(variants)} levels have the same {', '.join(held) or 'nothing'}"
    if differ:
        text += f"; they DIFFER in {', '.join(differ)}"
    text += ("; every position that was not withheld holds its original token" if kept else
             "; some positions that were not withheld CHANGED")
    unreached = [v["level"] for v in variants if not v["reached"]]
    if unreached:
        text += f"; levels {', '.join(pct(u, 0) for u in unreached)} % not reached (too few candidate types)"
    return text + "."


def plot_gap_vs_controlled_overlap(results: Mapping[str, Any], path: Path) -> Path:
    """Each seed's mean gap at each level against the level's token overlap, one colour per task."""
    fig, ax = new_figure()
    for task, records in by_task(results["records"]).items():
        points = [(100 * o, 100 * g) for levels in seed_level_gaps(records).values() for o, g in levels.values()]
        line = ax.plot(*zip(*points, strict=True), marker="o", ls="none", alpha=0.6, label=task)[0]
        means: dict[float, list[float]] = {}
        for x, y in points:
            means.setdefault(x, []).append(y)
        xs = sorted(means)
        ax.plot(xs, [np.mean(means[x]) for x in xs], color=line.get_color())
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("token overlap with the task, set by withholding (%)")
    ax.set_ylabel("gap: pre-trained − scratch (points)")
    ax.set_title("Gap vs token overlap at a fixed size (a point per seed and level)")
    ax.legend()
    fig.savefig(path, format="png")
    return path


def design_text(results: Mapping[str, Any]) -> str:
    return (
        f"Scale {results['scale']}, one pre-training size ({results['articles']:,} articles), "
        f"{seeds_text(results['seeds'])} of pre-training, {results['finetune_seeds']} fine-tuning seed(s) per model. "
        "Only the token overlap varies: for each task and target level, the task token types chosen by "
        "tinylm.analysis.withholding (ranked by task frequency per Wikipedia frequency, the "
        f"{results['protect']} most frequent Wikipedia types never withheld, the shortest prefix that brings the "
        f"token overlap to the level) are replaced by {REPLACEMENT} in the tokenised openings. {REPLACEMENT} is a "
        "special token: MLM never takes it as a target, the random tokens of masking never include a withheld "
        "type, and the overlap measure does not count it. Sequences keep their length and every other token, so "
        "the levels share sequences, tokens, steps and the remaining text (checked below); what differs is the "
        "withheld types and the share of Wikipedia tokens that became [UNK]. Token overlap is measured on the "
        "variant's token stream with the task's train + test texts. Each pre-trained variant is fine-tuned next "
        "to scratch twins with the scale's recipe; the twins do not depend on the level. The gap is fitted on "
        "token overlap with one slope per pre-training seed (its per-level gaps are means over its fine-tuning "
        "seeds); the mean slope gets a 95 % Student-t interval over seeds. Held-out MLM accuracy is measured on "
        "the untouched held-out openings, so withheld types count against a variant there.")


def build_blocks(results: Mapping[str, Any], figure: str | None) -> list[Block]:
    variants, pretraining = results["variants"], results["pretraining"]
    variant_rows = [[v["task"], pct(v["level"], 0), str(v["withheld_types"]), pct(v["task_mass_withheld"], 1),
                     pct(v["token_overlap"], 2), pct(v["pretrain_mass_replaced"], 1), f"{v['sequences']:,}",
                     f"{v['tokens']:,}", _steps(pretraining, v["task"], v["level"]),
                     _quality(pretraining, v["task"], v["level"])] for v in variants]
    gap_rows, slope_rows, findings = [], [], []
    for task, records in by_task(results["records"]).items():
        per_seed = seed_level_gaps(records)
        for level in sorted({r["level"] for r in records}, reverse=True):
            at = [r for r in records if r["level"] == level]
            gaps = mean_ci([levels[level][1] for levels in per_seed.values() if level in levels])
            gap_rows.append([task, pct(level, 0), pct(at[0]["token_overlap"], 2),
                             pct(float(np.mean([r["pretrained_accuracy"] for r in at]))),
                             pct(float(np.mean([r["scratch_accuracy"] for r in at]))),
                             fmt_mean_ci(gaps, signed=True)])
        slopes = seed_slopes(records)
        slope_rows.append(slope_row(task, slopes))
        findings.append(slope_finding(task, slopes))
    blocks: list[Block] = [
        Heading(f"tinylm: the gap against token overlap set by design ({results['articles']:,} articles)", 1),
        Para(design_text(results)),
        Heading("The pre-training variants", 2),
        Table(["Task", "Level (%)", "Withheld types", "Task mass withheld (%)", "Token overlap (%)",
               "Wikipedia tokens replaced (%)", "Sequences", "Tokens", "Steps", "Held-out MLM acc. (%)"],
              variant_rows),
        Bullets([invariance_finding(task, vs, pretraining) for task, vs in by_task(variants).items()]),
        Heading("The gap per level", 2),
        Para("Gap: pre-trained minus scratch accuracy in points; the mean over pre-training seeds of each seed's "
             "mean over its fine-tuning seeds, with its 95 % Student-t half-width over seeds."),
        Table(["Task", "Level (%)", "Token overlap (%)", "Pre-trained acc. (%)", "Scratch acc. (%)",
               "Gap (points)"], gap_rows),
    ]
    if figure:
        blocks.append(Image(figure, "gap vs token overlap set by design"))
    blocks += [
        Heading("Gap on token overlap, one slope per pre-training seed", 2),
        Table(["Task", "Seeds", "Slope per seed", "Mean slope [95 % interval over seeds]"], slope_rows),
        Bullets(findings),
    ]
    return blocks


def render_overlap_control_report(results: Mapping[str, Any], out: str | os.PathLike) -> list[Path]:
    """Write report.md, report.html and the plot for an overlap-control results dict."""
    return write_report(out, "tinylm: token overlap set by design",
                        lambda figures: build_blocks(results, figures.get(CONTROL_PLOT)),
                        {CONTROL_PLOT: lambda p: plot_gap_vs_controlled_overlap(results, p)})
