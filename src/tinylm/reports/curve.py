"""The report of `tinylm reproduce curve`: the pre-training gap against pre-training compute.

Input is the records that tinylm.experiments.curve writes to results.json: one per (task, seed, step), step 0
being the from-scratch twin, each with the snapshot's held-out MLM quality; so the report re-renders from that
file alone.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.analysis.stats import mean_ci, paired_gap
from tinylm.data.tasks import TASK_ORDER
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
    pct,
    task_key,
    write_report,
)

CURVE_PLOT = "gap_vs_steps.png"


def summarise_curve(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, step): the gap and accuracies with CIs over seeds, and the mean held-out MLM quality."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["step"])].append(r)
    rows = []
    for (task, step), group in sorted(groups.items(), key=lambda kv: (task_key(kv[0][0], TASK_ORDER), kv[0][1])):
        qualities = [g["quality"] for g in group if g.get("quality")]
        rows.append({
            "task": task, "step": step, "n": len(group),
            "pretrained": mean_ci([g["pretrained_accuracy"] for g in group]),
            "gap": paired_gap([g["pretrained_accuracy"] for g in group], [g["scratch_accuracy"] for g in group]),
            "mlm_accuracy": mean_ci([q["mlm_accuracy"] for q in qualities]) if qualities else None,
            "unigram_accuracy": float(np.mean([q["unigram_accuracy"] for q in qualities])) if qualities else None,
            "mlm_loss": float(np.mean([q["mlm_loss"] for q in qualities])) if qualities else None,
            "unigram_loss": float(np.mean([q["unigram_loss"] for q in qualities])) if qualities else None,
        })
    return rows


def plot_curve(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Two panels against pre-training steps: the gap per task, and held-out MLM accuracy vs the unigram level."""
    fig = new_canvas((10.5, 4.2))
    ax, ax2 = fig.subplots(1, 2)
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        xs = [max(r["step"], 1) for r in mine]  # step 0 (scratch) sits at 1 on the log axis
        ax.errorbar(xs, [100 * r["gap"].mean for r in mine], yerr=[err_points(r["gap"]) for r in mine],
                    marker="o", capsize=3, label=task)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("pre-training steps (0 = scratch, drawn at 1)")
    ax.set_ylabel("gap: pre-trained − scratch (points)")
    ax.set_title("Gap vs pre-training compute (95% CI)")
    ax.legend()
    first = [r for r in rows if r["task"] == rows[0]["task"] and r["mlm_accuracy"] is not None]
    ax2.errorbar([r["step"] for r in first], [100 * r["mlm_accuracy"].mean for r in first],
                 yerr=[err_points(r["mlm_accuracy"]) for r in first],
                 marker="o", capsize=3, label="held-out masked-token accuracy")
    ax2.plot([r["step"] for r in first], [100 * r["unigram_accuracy"] for r in first], ls="--", color="grey",
             label="unigram baseline")
    ax2.set_xscale("log")
    ax2.set_xlabel("pre-training steps")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_title("Held-out MLM accuracy")
    ax2.legend()
    fig.savefig(path, format="png")
    return path


def curve_finding(task: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """Where the gap first becomes positive with a CI excluding 0, generated from the numbers."""
    trained = [r for r in rows if r["step"] > 0]
    paying = [r for r in trained if r["gap"].excludes(0) and r["gap"].mean > 0]
    last = trained[-1]
    text = f"{task}: at the end ({last['step']:,} steps) the gap is {fmt_mean_ci(last['gap'], signed=True)} points"
    if paying:
        return text + f"; it is first positive with a 95% CI excluding 0 at {paying[0]['step']:,} steps."
    return text + "; no snapshot has a gap whose 95% CI lies above 0."


def build_curve_blocks(records: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                       figure: str | None) -> list[Block]:
    n = max(r["n"] for r in rows)
    blocks: list[Block] = [
        Heading("tinylm: the gap against pre-training compute", 1),
        Para(f"Each pre-training run of experiment 1's largest size ({records[0]['articles']:,} articles) saved "
             f"snapshots at halvings of its steps; each snapshot was fine-tuned on every task with the experiments' "
             f"recipe and compared with the same from-scratch twin (step 0). {n} seeds; '±' is the 95% Student-t "
             "half-width over seeds (the gap's is paired by seed). Snapshots before the end are taken mid-schedule "
             "(learning rate not yet decayed). Held-out MLM accuracy is on Wikipedia openings that no subset trains "
             "on; the unigram baseline predicts the training subset's most frequent token."),
        Table(["Task", "Step", "Held-out MLM acc. (%)", "Unigram acc. (%)", "MLM loss / unigram loss",
               "Pre-trained acc. (%)", "Gap (points)"],
              [[r["task"], f"{r['step']:,}",
                fmt_mean_ci(r["mlm_accuracy"]) if r["mlm_accuracy"] else "–",
                pct(r["unigram_accuracy"]) if r["unigram_accuracy"] is not None else "–",
                f"{r['mlm_loss']:.2f} / {r['unigram_loss']:.2f}" if r["mlm_loss"] is not None else "–",
                fmt_mean_ci(r["pretrained"]), fmt_mean_ci(r["gap"], signed=True)] for r in rows]),
    ]
    if figure:
        blocks.append(Image(figure, "gap and held-out MLM accuracy against pre-training steps"))
    tasks = dict.fromkeys(r["task"] for r in rows)
    blocks.append(Bullets([curve_finding(task, [r for r in rows if r["task"] == task]) for task in tasks]))
    return blocks


def render_curve_report(records: Sequence[Mapping[str, Any]], out: str | os.PathLike) -> list[Path]:
    """Write report.md, report.html and the plot for the records of a curve results.json."""
    rows = summarise_curve(records)
    return write_report(out, "tinylm: gap vs pre-training compute",
                        lambda figures: build_curve_blocks(records, rows, figures.get(CURVE_PLOT)),
                        {CURVE_PLOT: lambda p: plot_curve(rows, p)})
