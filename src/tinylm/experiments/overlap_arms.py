"""`tinylm reproduce arms`: claim 3 at a fixed pre-training size, with overlap pushed apart.

Experiment 3 relates the gap to overlap across pre-training sizes, so size and overlap move together (and at
the CPU scale's 4k vocabulary the paper's token overlap is saturated). Here the size is fixed (the scale's
smallest) and only the articles differ: per task, a `low` arm of the pool's articles least typical of the task's
tokens, the experiments' `random` subset, and a `high` arm of the most typical ones (selection.
rank_by_task_likeness, chosen by the task's *train* texts; the held-out openings of tinylm.train.mlm_quality are never
chosen). Each arm is pre-trained with the experiments' recipe and seed and fine-tuned next to the same scratch
twin. The report fits the gap on overlap within each task, at that one size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tinylm.analysis.overlap import OVERLAP_MEASURES, count_tokens, fit_line
from tinylm.analysis.selection import objective, rank_by_task_likeness
from tinylm.analysis.stats import paired_gap
from tinylm.checkpoint import write_json
from tinylm.config import replace
from tinylm.experiments.paper import FIRST_SEED, finetune_pair, machine_info, results_command
from tinylm.experiments.run_cache import cached_pretrain
from tinylm.experiments.scales import TASK_ORDER, Scale
from tinylm.experiments.selection import Pool, SubsetChoice, scale_task, subset_id, task_texts, write_subset
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
from tinylm.tokenizer import load_tokenizer
from tinylm.train.mlm_quality import heldout_count

ARMS = ("low", "random", "high")
MEASURES = (*OVERLAP_MEASURES, "mass")
ARMS_PLOT = "gap_vs_overlap_fixed_size.png"


def arm_overlaps(pool: Pool, rows: np.ndarray, eval_counts: np.ndarray) -> dict[str, float]:
    """Every overlap measure of the pool rows `rows` with a task's token counts (train + test, as experiment 3)."""
    counts = pool.subset_counts(rows)
    values = {name: fn(counts, eval_counts) for name, fn in OVERLAP_MEASURES.items()}
    values["mass"] = objective("mass", eval_counts, budget_tokens=float(counts.sum())).coverage(counts)
    return values


def choose_arms(pool: Pool, tokenizer: Any, data: Any, size: int, seq_len: int, data_seed: int,
                ) -> dict[str, tuple[np.ndarray, SubsetChoice | None]]:
    """The rows of each arm: the experiments' random subset (the permutation's first `size`), and the low and
    high rankings among every article but the held-out tail of that permutation."""
    order = np.random.default_rng(data_seed).permutation(len(pool.articles))
    candidates = np.sort(order[:len(order) - heldout_count(len(order))])
    select_counts = count_tokens(tokenizer, task_texts(data, "train"), seq_len)
    arms: dict[str, tuple[np.ndarray, SubsetChoice | None]] = {"random": (order[:size], None)}
    for arm in ("low", "high"):
        sel = rank_by_task_likeness(pool.counts, select_counts, size, lowest=arm == "low", candidates=candidates)
        chosen = [pool.articles[i] for i in sel.indices]
        summary = {"id": subset_id(chosen), "task": data.name, "articles": size, "arm": arm,
                   "first": [a.title for a in chosen[:10]]}
        arms[arm] = (sel.indices, SubsetChoice(sel, chosen, summary))
    return arms


def reproduce_arms(scale: Scale, out: str | os.PathLike, *, seeds: int | None = None,
                   tasks: tuple[str, ...] = TASK_ORDER, runs: str | os.PathLike | None = None,
                   root: str | os.PathLike | None = None, device: str | None = None,
                   size: int | None = None) -> dict[str, Any]:
    """Pre-train the low and high arms of every task (the random arm and scratch twins come from the run cache
    when `runs` is the experiments' OUT/runs); write results.json, report.md/html and the plot into `out`."""
    out, started = Path(out), time.perf_counter()
    runs_dir = Path(runs) if runs else out / "runs"
    size = size or min(scale.sizes)
    n_seeds = seeds or scale.seeds
    task_data = {t: scale_task(scale, t, root) for t in tasks}
    tokenizer = load_tokenizer(scale.pretrain.tokenizer, root)
    pool = Pool.load(tokenizer, scale.pretrain.seq_len, None, root)
    arms, overlaps = {}, {}
    for task in tasks:
        eval_counts = count_tokens(tokenizer, task_texts(task_data[task], "all"), scale.pretrain.seq_len)
        for arm, (rows, choice) in choose_arms(pool, tokenizer, task_data[task], size, scale.pretrain.seq_len,
                                               scale.pretrain.data_seed).items():
            folder = None
            if choice is not None:
                folder = runs_dir / "subsets" / f"{task}-{arm}-{size}-{choice.id}"
                if not (folder / "selection.json").is_file():
                    write_subset(folder, choice, root)
            arms[(task, arm)] = (folder, choice)
            overlaps[(task, arm)] = arm_overlaps(pool, rows, eval_counts)

    records = []
    for seed in tqdm(range(FIRST_SEED, FIRST_SEED + n_seeds), desc="reproduce arms", unit="seed"):
        pre_cfg = replace(scale.pretrain, articles=size, seed=seed)
        for task in tasks:
            for arm in ARMS:
                folder, choice = arms[(task, arm)]
                pre_dir = (cached_pretrain(pre_cfg, runs_dir, root, device) if folder is None else
                           cached_pretrain(pre_cfg, runs_dir, folder, device, kind=f"pretrain-{arm}-{choice.id}"))
                pretrained, scratch, ft = finetune_pair(scale, task, seed, pre_dir, runs_dir, root, device,
                                                        task_data[task])
                records.append({"task": task, "arm": arm, "seed": seed, "articles": size,
                                "subset": choice.id if choice else None, "overlap": overlaps[(task, arm)],
                                "pretrained_accuracy": pretrained["accuracy"],
                                "scratch_accuracy": scratch["accuracy"],
                                "runs": {"pretrain": pre_dir.name, "finetune": pretrained["run"],
                                         "scratch": scratch["run"]},
                                "pretrain_config": pre_cfg.to_dict(), "finetune_config": ft.to_dict()})
    results = {"command": results_command(), "experiment": "arms", "scale": scale.name, "articles": size,
               "seeds": n_seeds, "tasks": list(tasks), "machine": machine_info(),
               "subsets": [c.summary for _, c in arms.values() if c is not None],
               "seconds": round(time.perf_counter() - started, 1), "records": records}
    write_json(out / "results.json", results)
    render_arms_report(results, out)
    return results


def _groups(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (TASK_ORDER.index(r["task"]) if r["task"] in TASK_ORDER else 99,
                                            ARMS.index(r["arm"]), r["seed"])):
        groups.setdefault((r["task"], r["arm"]), []).append(r)
    return groups


def _task_fit(records: Sequence[Mapping[str, Any]], measure: str) -> Any:
    """Gap (points) on overlap (%) over every run of one task: each seed of each arm is a point."""
    x = [100 * r["overlap"][measure] for r in records]
    y = [100 * (r["pretrained_accuracy"] - r["scratch_accuracy"]) for r in records]
    return fit_line(x, y) if len(set(x)) > 1 else None


def render_arms_report(results: Mapping[str, Any], out: str | os.PathLike, measure: str = "mass") -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = results["records"]
    groups = _groups(records)
    rows = []
    for (task, arm), group in groups.items():
        gap = paired_gap([g["pretrained_accuracy"] for g in group], [g["scratch_accuracy"] for g in group])
        rows.append([task, arm, *[f"{100 * group[0]['overlap'][m]:.2f}" for m in MEASURES],
                     f"{100 * np.mean([g['pretrained_accuracy'] for g in group]):.1f}", fmt_mean_ci(gap, signed=True)])
    findings = []
    for task in dict.fromkeys(t for t, _ in groups):
        task_records = [r for (t, _), g in groups.items() if t == task for r in g]
        fit = _task_fit(task_records, measure)
        if fit is None:
            findings.append(f"{task}: the arms do not differ in {measure} overlap; nothing to fit.")
            continue
        verdict = ("the gap rises with overlap at this fixed size" if fit.p_value < 0.05 and fit.slope > 0 else
                   "the gap falls with overlap at this fixed size" if fit.p_value < 0.05 else
                   "no significant relation at this fixed size")
        findings.append(f"{task}: {verdict} (slope {fit.slope:+.2f} gap points per {measure} overlap point, "
                        f"r = {fit.r:.2f}, p = {fit.p_value:.2g}, {fit.n} runs).")
    plot = _plot(groups, out / ARMS_PLOT, measure)
    blocks = [
        Heading(f"tinylm: the gap against overlap at a fixed pre-training size ({results['articles']:,} articles)", 1),
        Para(f"Scale {results['scale']}, {results['seeds']} seed(s). Per task, three pre-training subsets of the "
             "same size: the articles least (low) and most (high) typical of the task's training texts, and the "
             "experiments' random subset; each pre-trained with the same recipe and fine-tuned next to the same "
             "scratch twin. Overlap with the task's train + test texts, in percent: token (the paper's), type, "
             "weighted (a token seen c times counts min(1, c/10)), mass (coverage of the task's token "
             "distribution at the subset's size). Gap: pre-trained minus scratch accuracy in points, paired by "
             "seed, with its 95% Student-t half-width."),
        Table(["Task", "Arm", *[f"{m} overlap (%)" for m in MEASURES], "Pre-trained acc. (%)", "Gap (points)"],
              rows),
        Image(plot.name, f"gap vs {measure} overlap at a fixed size"),
        Bullets(findings),
    ]
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks, out, title="tinylm: overlap at a fixed size"), encoding="utf-8")
    return [out / "report.md", out / "report.html", plot]


def _plot(groups: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]], path: Path, measure: str) -> Path:
    fig, ax = new_figure()
    for task in dict.fromkeys(t for t, _ in groups):
        points = [(100 * r["overlap"][measure], 100 * (r["pretrained_accuracy"] - r["scratch_accuracy"]))
                  for (t, _), g in groups.items() if t == task for r in g]
        ax.plot(*zip(*points, strict=True), marker="o", ls="none", label=task)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"{measure} overlap with the task (%)")
    ax.set_ylabel("gap: pre-trained − scratch (points)")
    ax.set_title("Gap vs overlap at a fixed pre-training size (one point per run)")
    ax.legend()
    fig.savefig(path, format="png")
    return path
