"""The deploy report (`tinylm reproduce deploy`) from its results.json: markdown, self-contained HTML and the
frontier plot (test accuracy against batch-1 latency, one panel per task).

Every finding is generated from the numbers: the distilled student against the full committee (accuracy within
1 point, at most 1/10 of the committee's batch-1 latency) and int8 against fp32 ONNX (at least 1.5x the batch-1
throughput, at most the stated accuracy loss), each as measured on this machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.ticker import FuncFormatter, NullFormatter

from tinylm.analysis.stats import mean_ci
from tinylm.reports.render import Block, Bullets, Heading, Image, Para, Table, by_task, new_canvas, pct, write_report

PLOT = "frontier.png"
STUDENT_POINTS = 1.0  # the targets: within 1 point of the committee ...
STUDENT_LATENCY = 0.1  # ... at <= 1/10 of its batch-1 latency
INT8_SPEEDUP = 1.5  # int8 ONNX >= 1.5x the fp32 ONNX batch-1 throughput
MARKERS = {"torch": "o", "onnx": "s", "onnx-int8": "^"}
COLORS = {"deep": "black", "committee": "tab:blue", "student": "tab:red"}

Row = Mapping[str, Any]


def _get(rows: Sequence[Row], system: str, seed: int) -> Row:
    return next(r for r in rows if r["system"] == system and r["seed"] == seed)


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto frontier of (latency, accuracy) points: those no faster point matches or beats in accuracy,
    from the fastest."""
    best, out = -1.0, []
    for latency, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            out.append((latency, accuracy))
            best = accuracy
    return out


def plot_frontier(results: Mapping[str, Any], path: Path) -> Path:
    """Accuracy against p50 batch-1 latency (one thread, log axis), every system and runtime, frontier drawn."""
    tasks = by_task(results["rows"])
    fig = new_canvas((5.0 * len(tasks), 4.2))
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, (task, rows) in zip(axes, tasks.items(), strict=True):
        for r in rows:
            x, y = r["p50_ms_batch1"], 100 * r["accuracy"]
            ax.scatter([x], [y], marker=MARKERS[r["runtime"]], color=COLORS[r["family"]], s=36, zorder=3)
            ax.annotate(r["system"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        line = frontier([(r["p50_ms_batch1"], 100 * r["accuracy"]) for r in rows])
        ax.step([p[0] for p in line], [p[1] for p in line], where="post", color="grey", lw=1, ls="--", zorder=2)
        ax.set_xscale("log")
        # Plain numbers on the decades only: labelled minor ticks of a short log axis overlap.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(task)
        ax.set_xlabel(f"p50 latency at batch 1, {results['threads']} thread (ms, log)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    handles = [axes[0].scatter([], [], marker=m, color="grey", label=rt) for rt, m in MARKERS.items()]
    handles += [axes[0].scatter([], [], marker="o", color=c, label=f) for f, c in COLORS.items()]
    axes[0].legend(handles=handles, fontsize=7, loc="lower right")
    fig.savefig(path)
    return path


def student_finding(task: str, rows: Sequence[Row], comparisons: Sequence[Row], members: int) -> str:
    """Does the student reach the full committee's accuracy at a tenth of its latency (torch, one thread)?"""
    committee = f"committee-{members}"
    diffs = [c["student_minus_committee"]["difference"] for c in comparisons]
    ratios = [_get(rows, "student", c["seed"])["p50_ms_batch1"] / _get(rows, committee, c["seed"])["p50_ms_batch1"]
              for c in comparisons]
    d = mean_ci(diffs)
    ci = (f" ± {100 * d.half_width:.1f} (95 % CI over {d.n} seeds)" if d.has_ci else
          " (paired bootstrap 95 % interval over test texts: " + "; ".join(
              f"[{100 * c['student_minus_committee']['low']:+.1f}, {100 * c['student_minus_committee']['high']:+.1f}]"
              for c in comparisons) + ")")
    accurate = d.mean >= -STUDENT_POINTS / 100
    fast = max(ratios) <= STUDENT_LATENCY
    verdict = ("meets both targets" if accurate and fast else
               "is within 1 point but not at 1/10 of the latency" if accurate else
               "is at 1/10 of the latency but more than 1 point behind" if fast else "meets neither target")
    return (f"{task}: the student {verdict}: student minus {committee} {100 * d.mean:+.1f} points{ci}; "
            f"batch-1 latency {sum(ratios) / len(ratios):.2f}x the committee's (PyTorch fp32, one thread).")


def int8_finding(task: str, rows: Sequence[Row], tolerance: float) -> str:
    """int8 against fp32 ONNX for every system: batch-1 throughput ratio (p50 fp32 / p50 int8) and accuracy loss."""
    parts, ok = [], True
    for r in rows:
        if r["runtime"] != "onnx-int8":
            continue
        fp32 = _get(rows, r["model"] + "-onnx", r["seed"])
        speedup = fp32["p50_ms_batch1"] / r["p50_ms_batch1"]
        loss = 100 * (fp32["accuracy"] - r["accuracy"])
        ok = ok and speedup >= INT8_SPEEDUP and loss <= tolerance
        parts.append(f"{r['model']} {speedup:.2f}x, {loss:+.1f} points")
    verdict = "meets the target for every system" if ok else "misses the target for some systems"
    return (f"{task}: int8 {verdict} (>= {INT8_SPEEDUP}x the fp32 ONNX batch-1 throughput, <= {tolerance:g} points "
            "lost); batch-1 speed-up and points lost: " + "; ".join(parts) + ".")


def _ms(r: Row, all_threads: bool = False) -> str:
    tail = "_all_threads" if all_threads else ""
    return f"{r['p50_ms_batch1' + tail]:.2f} / {r['p95_ms_batch1' + tail]:.2f}"


def build_deploy_blocks(results: Mapping[str, Any], figure: str | None) -> list[Block]:
    rows, n = results["rows"], results["members"]
    tasks = by_task(rows)
    machine = results["machine"]
    blocks: list[Block] = [
        Heading(f"tinylm deploy: a committee of {n} x {results['member_model']}, {results['deep_model']}, and a "
                "distilled student on this CPU", 1),
        Para(f"Models from {results['source']} (scale {results['scale']}); measured on {machine.get('cpu')} with "
             f"{results['threads']} thread and with all {results['all_threads']} threads. Accuracy: the committee "
             "run's test sample, every system in fp32 PyTorch and through its ONNX graph (fp32 and dynamic int8). "
             f"Latency: p50 / p95 of {results['latency_texts']} single test texts (batch 1); throughput: texts/s over "
             f"{results['throughput_batches']} batches of {results['batch_size']}; inputs encoded beforehand; the "
             "systems take turns in rounds, so load on a shared machine is spread over all of them."),
        Heading("Summary", 2),
    ]
    findings = []
    for task, task_rows in tasks.items():
        comparisons = [c for c in results["comparisons"] if c["task"] == task]
        findings.append(student_finding(task, task_rows, comparisons, n))
        findings.append(int8_finding(task, task_rows, results["accuracy_tolerance"]))
    blocks.append(Bullets(findings))
    if figure:
        blocks.append(Image(figure, "test accuracy against batch-1 latency; dashed: the frontier"))
    header = ["System", "Runtime", "Acc. (%)", "p50 / p95 ms, 1 thread", "Texts/s at 64, 1 thread",
              f"p50 / p95 ms, {results['all_threads']} threads", f"Texts/s at 64, {results['all_threads']} threads",
              "MB"]
    for task, task_rows in tasks.items():
        blocks.append(Heading(task, 2))
        seeds = len({r["seed"] for r in task_rows}) > 1
        blocks.append(Table(header, [[r["system"] + (f" (seed {r['seed']})" if seeds else ""), r["runtime"],
                                      pct(r["accuracy"]), _ms(r), f"{r['throughput_batch64']:.0f}",
                                      _ms(r, True), f"{r['throughput_batch64_all_threads']:.0f}",
                                      f"{r['bytes'] / 1e6:.1f}"] for r in task_rows]))
        groups = [r for r in task_rows if r.get("accuracy_groups") and len(r["accuracy_groups"]) > 1]
        if groups:
            blocks.append(Para("Smaller committees, every disjoint group of members (fp32): " + "; ".join(
                f"{r['system']}: " + ", ".join(pct(a) for a in r["accuracy_groups"]) for r in groups)
                + " (the table's row is group 0, the one timed)."))
    blocks.append(Heading("Students", 2))
    blocks.append(Table(
        ["Task", "Seed", "Steps", "Labelled", "Unlabeled", "Train s", "Student (%)", "Committee (%)",
         "Agreement (%)"],
        [[s["task"], str(s["seed"]), str(s["steps"]), str(s["train_examples"]), str(s["unlabeled_examples"]),
          f"{s['train_seconds']:.0f}", pct(s["accuracy"]), pct(s["teacher_accuracy"]), pct(s["agreement"])]
         for s in results["students"]]))
    return blocks


def render_deploy_report(results: Mapping[str, Any] | str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write report.md, report.html and frontier.png for a deploy results.json (a dict, or its path)."""
    if not isinstance(results, Mapping):
        results = json.loads(Path(results).read_text())
    if not results.get("rows"):
        raise ValueError("no deploy rows to report")
    return write_report(out_dir, "tinylm deploy report",
                        lambda figures: build_deploy_blocks(results, figures.get(PLOT)),
                        {PLOT: lambda p: plot_frontier(results, p)})


__all__ = ["build_deploy_blocks", "frontier", "plot_frontier", "render_deploy_report"]
