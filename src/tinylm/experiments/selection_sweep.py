"""`tinylm reproduce selection`: pre-training data chosen by overlap, against the experiments' random subsets.

For every task, size and selection measure, the articles that cover the task's training texts best are selected
from the pool (tinylm.experiments.selection) and written as a data folder; per seed, a model is pre-trained on
each selection and on the experiments' random subset of the same size, and both are fine-tuned next to the
scratch twin. The report compares the measured gaps with the ones the stored gap-vs-overlap fit predicts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tinylm.analysis.gap_fit import fit_gap_on_overlap, load_results
from tinylm.analysis.overlap import OVERLAP_MEASURES
from tinylm.config import replace
from tinylm.data import TaskData
from tinylm.experiments.pairs import finetune_pair, pretrain_seconds, sweep_seeds, token_overlaps
from tinylm.experiments.results import results_document, write_results
from tinylm.experiments.run_cache import cached_pretrain
from tinylm.experiments.scales import TASK_ORDER, Scale
from tinylm.experiments.selection import Pool, SubsetChoice, choose_subset, fit_summary, scale_task, write_subset
from tinylm.tokenizer import load_tokenizer

# One size per scale keeps the CPU sweep within about half an hour; the paper's 20k is its smallest size
# (the local pool holds 51,959 articles, so a 40k "selection" would be most of it).
SELECTION_SIZES: dict[str, tuple[int, ...]] = {"cpu": (2000,), "paper": (20_000,)}
REPRO_MEASURES: tuple[str, ...] = ("weighted", "mass")


def reproduce_selection(
    scale: Scale,
    out: str | os.PathLike,
    fit_path: str | os.PathLike,
    *,
    sizes: tuple[int, ...] | None = None,
    measures: tuple[str, ...] = REPRO_MEASURES,
    seeds: int | None = None,
    tasks: tuple[str, ...] = TASK_ORDER,
    runs: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    selection_seed: int = 42,
    split: str = "train",
    confidence: float = 0.95,
    pool_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Selected vs random subsets of equal size, per task and seed; writes results.json and the report into out.

    runs: the run cache (default OUT/runs). Point it at the experiments' OUT/runs to re-use their random-subset
    and scratch runs: those configs are the experiments' own, so they hash to the same folders.
    pool_path: the articles to select from (default: the data folder's Wikipedia file, the random subsets' pool).
    """
    from tinylm.reports.selection import render_selection_report  # matplotlib: only when a report is written

    out, started = Path(out), time.perf_counter()
    runs_dir = Path(runs) if runs else out / "runs"
    n_seeds = seeds or scale.seeds
    sizes = sizes or SELECTION_SIZES.get(scale.name, (min(scale.sizes),))
    fits = stored_fits(fit_path, confidence)
    # Load and check every task sample first, so bad data fails before any training.
    task_data = {t: scale_task(scale, t, root) for t in tasks}
    tokenizer = load_tokenizer(scale.pretrain.tokenizer, root)
    pool = Pool.load(tokenizer, scale.pretrain.seq_len, pool_path, root)
    choices = write_selections(scale, pool, tokenizer, task_data, sizes, measures, runs_dir, root,
                               seed=selection_seed, split=split)
    sweep = SelectionSweep(scale, runs_dir, root, device, task_data, measures, choices,
                           token_overlaps(scale, sizes, task_data, root))
    records: list[dict[str, Any]] = []
    plan = [(seed, size) for seed in sweep_seeds(n_seeds) for size in sizes]
    for seed, size in tqdm(plan, desc=f"reproduce selection ({scale.name})", unit="seed"):
        records += sweep.records(seed, size)

    summary = results_document({
        "scale": scale.name, "sizes": list(sizes), "seeds": n_seeds, "tasks": list(tasks),
        "measures": list(measures), "split": split, "selection_seed": selection_seed,
        "samples_per_label": {t: scale.samples[t] for t in tasks},
        "pool": {"path": str(pool.path), "articles": len(pool.articles)},
        "fit_source": _shown(fit_path), "fit": fits, "confidence": confidence,
        "selections": [{**c.summary, "first": [a.title for a in c.articles[:10]]} for c, _ in choices.values()],
    }, {"records": records}, started=started)
    write_results(out, summary, lambda: render_selection_report(summary, out))
    return summary


def stored_fits(fit_path: str | os.PathLike, confidence: float) -> dict[str, dict[str, Any]]:
    """The stored gap-vs-overlap fit of every overlap measure its records carry."""
    records = load_results(fit_path)["records"]
    return {m: fit_summary(fit_gap_on_overlap(records, m, confidence)) for m in OVERLAP_MEASURES
            if any(m in (r.get("overlap") or {}) for r in records)}


Choices = dict[tuple[str, int, str], tuple[SubsetChoice, Path]]  # (task, size, measure) -> selection, data folder


def write_selections(scale: Scale, pool: Pool, tokenizer: Any, task_data: dict[str, TaskData],
                     sizes: tuple[int, ...], measures: tuple[str, ...], runs: Path, root: str | os.PathLike | None,
                     *, seed: int, split: str) -> Choices:
    """One selection per (task, size, measure), written once as a data folder under RUNS/subsets."""
    choices: Choices = {}
    for task, data in task_data.items():
        for size in sizes:
            for measure in measures:
                choice = choose_subset(pool, tokenizer, data, size, measure=measure, seed=seed, split=split,
                                       seq_len=scale.pretrain.seq_len, random_seed=scale.pretrain.data_seed)
                folder = runs / "subsets" / f"{task}-{measure}-{size}-{choice.id}"
                if not (folder / "selection.json").is_file():
                    write_subset(folder, choice, root)
                choices[(task, size, measure)] = (choice, folder)
    return choices


@dataclass(frozen=True)
class SelectionSweep:
    """What a selection sweep pre-trains on: the experiments' random subsets and the selections beside them."""

    scale: Scale
    runs: Path
    root: str | os.PathLike | None
    device: str | None
    task_data: dict[str, TaskData]
    measures: tuple[str, ...]
    choices: Choices
    random_overlap: dict[tuple[str, int], dict[str, float]]

    def records(self, seed: int, size: int) -> list[dict[str, Any]]:
        """Per task: the random subset's pair, then each selection's (same recipe and seed; only the articles
        differ, since a selection's data folder holds just the selected ones)."""
        scale, runs, root, device = self.scale, self.runs, self.root, self.device
        pre_cfg = replace(scale.pretrain, articles=size, seed=seed)
        random_dir = cached_pretrain(pre_cfg, runs, root, device)
        records = []
        for task, data in self.task_data.items():
            pretrained, scratch, ft = finetune_pair(scale, task, seed, random_dir, runs, root, device, data)
            records.append(_record("random", None, task, size, seed, random_dir, pretrained, scratch, pre_cfg, ft,
                                   self.random_overlap[(task, size)], None))
            for measure in self.measures:
                choice, folder = self.choices[(task, size, measure)]
                sel_dir = cached_pretrain(pre_cfg, runs, folder, device, kind=f"pretrain-selected-{choice.id}")
                pretrained, scratch, ft = finetune_pair(scale, task, seed, sel_dir, runs, root, device, data)
                records.append(_record("selected", measure, task, size, seed, sel_dir, pretrained, scratch, pre_cfg,
                                       ft, choice.summary["overlap"], choice.id))
        return records


def _shown(path: str | os.PathLike) -> str:
    """A path relative to the working folder where it lies below it (reports stay readable on other machines)."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _record(arm: str, measure: str | None, task: str, size: int, seed: int, pre_dir: Path, pretrained: dict[str, Any],
            scratch: dict[str, Any], pre_cfg: Any, ft: Any, overlap: dict[str, float],
            selection: str | None) -> dict[str, Any]:
    pre_seconds = pretrain_seconds(pre_dir)
    return {
        "arm": arm, "measure": measure, "selection": selection, "task": task, "articles": size, "seed": seed,
        "pretrained_accuracy": pretrained["accuracy"], "scratch_accuracy": scratch["accuracy"],
        "pretrained_macro_f1": pretrained["macro_f1"], "scratch_macro_f1": scratch["macro_f1"],
        "overlap": overlap,
        "seconds": round(pre_seconds + pretrained["train_seconds"] + scratch["train_seconds"], 1),
        "timings": {"pretrain": pre_seconds, "finetune": pretrained["train_seconds"],
                    "scratch": scratch["train_seconds"]},
        "runs": {"pretrain": pre_dir.name, "finetune": pretrained["run"], "scratch": scratch["run"]},
        "pretrain_config": pre_cfg.to_dict(), "finetune_config": ft.to_dict(),
    }
