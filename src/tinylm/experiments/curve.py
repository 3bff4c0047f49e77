"""`tinylm reproduce curve`: the pre-training gap as a function of pre-training compute (beyond the paper).

Experiment 1's largest-size pre-training runs save snapshots at T/2, T/4, ... of their T steps
(PretrainConfig.snapshots). Every snapshot, and the finished model, is fine-tuned on every task with the
experiments' recipe; step 0 is the from-scratch twin. The curve shows where pre-training starts to pay, next to
each snapshot's held-out MLM accuracy (tinylm.train.mlm_quality), so a negative gap can be traced to an MLM that had
not yet left the unigram stage. Every run is cached under OUT/runs (or --runs, to share the experiments' cache).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tinylm.analysis.stats import mean_ci, paired_gap
from tinylm.checkpoint import write_json
from tinylm.config import replace
from tinylm.data import load_task
from tinylm.distributed import is_main_process
from tinylm.experiments.paper import FIRST_SEED, machine_info, results_command
from tinylm.experiments.run_cache import cached_finetune, cached_pretrain
from tinylm.experiments.scales import TASK_ORDER, Scale
from tinylm.reports.experiments import (
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    fmt_mean_ci,
    new_figure,
    to_html,
    to_markdown,
)
from tinylm.train.pretrain import snapshots

CURVE_PLOT = "gap_vs_steps.png"


def snapshot_quality(folder: Path) -> dict[str, Any]:
    """The held-out MLM quality stored with a snapshot or a finished model folder."""
    meta = json.loads((folder / "tinylm_meta.json").read_text())
    return meta.get("quality") or meta.get("summary", {}).get("quality") or {}


def curve_records(scale: Scale, runs: Path, seeds: int, tasks: Sequence[str], root: Any, device: str | None,
                  ) -> list[dict[str, Any]]:
    """One record per (task, seed, step): the snapshot's fine-tuned accuracy, its scratch twin's, its MLM quality."""
    size = max(scale.sizes)
    task_data = {t: load_task(t, root, train_per_label=scale.samples[t][0], test_per_label=scale.samples[t][1],
                              seed=scale.finetune.data_seed, source=scale.finetune.data_source) for t in tasks}
    records = []
    for seed in tqdm(range(FIRST_SEED, FIRST_SEED + seeds), desc="reproduce curve", unit="seed",
                     disable=not is_main_process()):
        pre_dir = cached_pretrain(replace(scale.pretrain, articles=size, seed=seed), runs, root, device)
        found = snapshots(pre_dir)
        if len(found) < 2:
            raise ValueError(f"{pre_dir} has no snapshots; the scale's pre-training needs snapshots > 0")
        final_step = max(found)
        for task in tasks:
            ft = replace(scale.finetune, task=task, seed=seed, train_per_label=scale.samples[task][0],
                         test_per_label=scale.samples[task][1])
            scratch = cached_finetune(replace(ft, tokenizer=scale.pretrain.tokenizer), runs, root, device,
                                      task_data[task])
            records.append(_record(task, seed, 0, size, scratch, scratch, {}))
            for step, folder in found.items():
                # The finished model is fine-tuned from its run folder, exactly as experiment 1 does (same cache).
                init = pre_dir if step == final_step else folder
                pretrained = cached_finetune(replace(ft, init=str(init)), runs, root, device, task_data[task])
                records.append(_record(task, seed, step, size, pretrained, scratch, snapshot_quality(folder)))
    return records


def _record(task: str, seed: int, step: int, size: int, pretrained: Mapping[str, Any], scratch: Mapping[str, Any],
            quality: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("mlm_loss", "mlm_accuracy", "unigram_loss", "unigram_accuracy")
    return {"task": task, "seed": seed, "step": step, "articles": size,
            "pretrained_accuracy": pretrained["accuracy"], "scratch_accuracy": scratch["accuracy"],
            "finetune_seconds": pretrained.get("train_seconds"), "runs": {"finetune": pretrained["run"]},
            "quality": {k: quality[k] for k in keep if k in quality},
            "cloze_top5": (quality.get("cloze") or {}).get("top5")}


def reproduce_curve(scale: Scale, out: str | os.PathLike, *, seeds: int | None = None,
                    tasks: tuple[str, ...] = TASK_ORDER, root: str | os.PathLike | None = None,
                    device: str | None = None, runs: str | os.PathLike | None = None) -> dict[str, Any]:
    """Fine-tune every snapshot of the largest-size runs; write results.json, report.md/html and the plot."""
    out, started = Path(out), time.perf_counter()
    n_seeds = seeds or scale.seeds
    records = curve_records(scale, Path(runs) if runs else out / "runs", n_seeds, tasks, root, device)
    results = {"command": results_command(), "experiment": "curve", "scale": scale.name, "seeds": n_seeds,
               "articles": max(scale.sizes), "tasks": list(tasks), "machine": machine_info(),
               "seconds": round(time.perf_counter() - started, 1), "records": records}
    if is_main_process():
        write_json(out / "results.json", results)
        render_curve_report(records, out)
    return results


def summarise_curve(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, step): the gap and accuracies with CIs over seeds, and the mean held-out MLM quality."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["step"])].append(r)
    rows = []
    for (task, step), group in sorted(groups.items(), key=lambda kv: (TASK_ORDER.index(kv[0][0])
                                                                      if kv[0][0] in TASK_ORDER else 99, kv[0])):
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
    fig, _ = new_figure(figsize=(10.5, 4.2))
    fig.clear()
    ax, ax2 = fig.subplots(1, 2)
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        xs = [max(r["step"], 1) for r in mine]  # step 0 (scratch) sits at 1 on the log axis
        ax.errorbar(xs, [100 * r["gap"].mean for r in mine],
                    yerr=[100 * r["gap"].half_width if r["gap"].has_ci else 0 for r in mine],
                    marker="o", capsize=3, label=task)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("pre-training steps (0 = scratch, drawn at 1)")
    ax.set_ylabel("gap: pre-trained − scratch (points)")
    ax.set_title("Gap vs pre-training compute (95% CI)")
    ax.legend()
    first = [r for r in rows if r["task"] == rows[0]["task"] and r["mlm_accuracy"] is not None]
    ax2.errorbar([r["step"] for r in first], [100 * r["mlm_accuracy"].mean for r in first],
                 yerr=[100 * r["mlm_accuracy"].half_width if r["mlm_accuracy"].has_ci else 0 for r in first],
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


def render_curve_report(records: Sequence[Mapping[str, Any]], out: str | os.PathLike) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise_curve(records)
    plot = plot_curve(rows, out / CURVE_PLOT)
    n = max(r["n"] for r in rows)
    blocks = [
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
                f"{100 * r['unigram_accuracy']:.1f}" if r["unigram_accuracy"] is not None else "–",
                f"{r['mlm_loss']:.2f} / {r['unigram_loss']:.2f}" if r["mlm_loss"] is not None else "–",
                fmt_mean_ci(r["pretrained"]), fmt_mean_ci(r["gap"], signed=True)] for r in rows]),
        Image(plot.name, "gap and held-out MLM accuracy against pre-training steps"),
        Bullets([_finding(task, [r for r in rows if r["task"] == task]) for task in dict.fromkeys(r["task"]
                                                                                                 for r in rows)]),
    ]
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, out, title="tinylm: gap vs pre-training compute"), encoding="utf-8")
    return [md, page, plot]


def _finding(task: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """Where the gap first becomes positive with a CI excluding 0, generated from the numbers."""
    trained = [r for r in rows if r["step"] > 0]
    paying = [r for r in trained if r["gap"].excludes(0) and r["gap"].mean > 0]
    last = trained[-1]
    text = f"{task}: at the end ({last['step']:,} steps) the gap is {fmt_mean_ci(last['gap'], signed=True)} points"
    if paying:
        return text + f"; it is first positive with a 95% CI excluding 0 at {paying[0]['step']:,} steps."
    return text + "; no snapshot has a gap whose 95% CI lies above 0."
