"""`tinylm reproduce gap|size|overlap|all`: the paper's claims 1-3 as one sweep with a report.

For every seed and pre-training size a model is pre-trained (nested subsets: the first N articles of one
seeded permutation, as in the paper), and for every task it is fine-tuned, next to a from-scratch twin that
shares the tokenizer, architecture, task sample, seed and recipe. Experiment 1 (gap) uses the largest size,
experiment 2 (size) every size, experiment 3 (overlap) relates each (task, size) gap to the token overlap
between that pre-training subset and the task's texts. All runs are cached by config hash under OUT/runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tinylm.analysis.records import EXPERIMENTS
from tinylm.config import replace
from tinylm.data import TaskData
from tinylm.distributed import is_main_process
from tinylm.experiments.pairs import (
    finetune_pair,
    finetune_seeds,
    load_task_samples,
    pretrain_quality,
    pretrain_seconds,
    sweep_seeds,
    token_overlaps,
)
from tinylm.experiments.results import results_document, write_results
from tinylm.experiments.run_cache import cached_pretrain
from tinylm.experiments.scales import TASK_ORDER, Scale
from tinylm.reports.experiments import render_report

# What the paper states in its text; figure values are not transcribed (see ../shared/docs/paper.md).
PAPER_NUMBERS = {"ag_news": "> +40 points (paper text, BERT-6)"}


def sizes_for(experiments: tuple[str, ...], scale: Scale) -> tuple[int, ...]:
    if any(e in experiments for e in ("size", "overlap")):
        return scale.sizes
    return (max(scale.sizes),)


def reproduce(
    experiments: tuple[str, ...],
    scale: Scale,
    out: str | os.PathLike,
    *,
    seeds: int | None = None,
    tasks: tuple[str, ...] = TASK_ORDER,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Run (or re-use) every run the experiments need, then write results.json and the report into `out`.

    shard=(i, n) trains only share i of n of the pre-trained models (and their fine-tunings) and writes no
    report: n processes with i = 0 .. n-1 share the cache in OUT/runs, then a call without shard reports.
    """
    for e in experiments:
        if e not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {e!r}; choose from {', '.join(EXPERIMENTS)} or all")
    out, started = Path(out), time.perf_counter()
    n_seeds = seeds or scale.seeds
    sizes = sizes_for(experiments, scale)
    task_data = load_task_samples(scale, tasks, root)
    pairs = train_pairs(scale, sizes, n_seeds, task_data, out / "runs", root, device,
                        desc=f"reproduce {'+'.join(experiments)} ({scale.name})", shard=shard)
    if shard is not None:
        return {"shard": list(shard), "pairs": len(pairs)}
    overlaps = token_overlaps(scale, sizes, task_data, root) if "overlap" in experiments else {}
    records = [record for experiment in experiments
               for record in experiment_records(experiment, scale, pairs, overlaps)]
    results = results_document(
        {"experiments": list(experiments), "scale": scale.name, "seeds": n_seeds,
         **({"finetune_seeds": scale.finetune_seeds} if scale.finetune_seeds > 1 else {}), "sizes": list(sizes),
         "tasks": list(tasks), "samples_per_label": {t: scale.samples[t] for t in tasks}},
        {"records": records}, started=started)
    write_results(out, results, lambda: render_report(records, out, PAPER_NUMBERS))
    return results


def shard_plan(plan: list[tuple[int, int]], shard: tuple[int, int] | None) -> list[tuple[int, int]]:
    """This shard's (seed, size) models: the largest first, each to the shard with the least work so far
    (articles stand for cost), so n processes finish at about the same time."""
    if shard is None:
        return plan
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
    load, mine = [0] * count, []
    for seed, size in sorted(plan, key=lambda p: (-p[1], p[0])):
        least = load.index(min(load))
        load[least] += size
        if least == index:
            mine.append((seed, size))
    return mine


def train_pairs(scale: Scale, sizes: tuple[int, ...], n_seeds: int, task_data: dict[str, TaskData], runs: Path,
                root: str | os.PathLike | None, device: str | None, desc: str,
                shard: tuple[int, int] | None = None) -> dict[tuple[str, int, int, int], dict[str, Any]]:
    """Per (task, size, seed, fine-tuning seed): the pre-trained model fine-tuned next to its scratch twin, with
    the pre-training run's facts (every run cached under `runs`)."""
    pairs: dict[tuple[str, int, int, int], dict[str, Any]] = {}
    plan = shard_plan([(seed, size) for seed in sweep_seeds(n_seeds) for size in sizes], shard)
    for seed, size in tqdm(plan, desc=desc, unit="model", disable=not is_main_process()):
        pre_cfg = replace(scale.pretrain, articles=size, seed=seed)
        pre_dir = cached_pretrain(pre_cfg, runs, root, device)
        for task, data in task_data.items():
            for ft_seed in finetune_seeds(seed, scale.finetune_seeds):
                pretrained, scratch, ft = finetune_pair(scale, task, ft_seed, pre_dir, runs, root, device, data)
                pairs[(task, size, seed, ft_seed)] = {
                    "pretrained": pretrained, "scratch": scratch, "pretrain_run": pre_dir.name,
                    "pretrain_seconds": pretrain_seconds(pre_dir), "pretrain_quality": pretrain_quality(pre_dir),
                    "pretrain_config": pre_cfg.to_dict(), "finetune_config": ft.to_dict(),
                }
    return pairs


def experiment_records(experiment: str, scale: Scale, pairs: dict[tuple[str, int, int, int], dict[str, Any]],
                       overlaps: dict[tuple[str, int], dict[str, float]]) -> list[dict[str, Any]]:
    """One record per pair the experiment reads: gap the largest size only, size and overlap every size."""
    exp_sizes = (max(scale.sizes),) if experiment == "gap" else scale.sizes
    return [pair_record(experiment, task, size, seed, pair, overlaps, ft_seed if scale.finetune_seeds > 1 else None)
            for (task, size, seed, ft_seed), pair in sorted(pairs.items()) if size in exp_sizes]


def pair_record(experiment: str, task: str, size: int, seed: int, pair: dict[str, Any],
                overlaps: dict[tuple[str, int], dict[str, float]], finetune_seed: int | None = None) -> dict[str, Any]:
    """One pair as a run record; finetune_seed only where a sweep fine-tunes each model more than once."""
    pre, scratch = pair["pretrained"], pair["scratch"]
    record = {
        "experiment": experiment, "task": task, "articles": size, "seed": seed,
        **({"finetune_seed": finetune_seed} if finetune_seed is not None else {}),
        "pretrained_accuracy": pre["accuracy"], "scratch_accuracy": scratch["accuracy"],
        "pretrained_macro_f1": pre["macro_f1"], "scratch_macro_f1": scratch["macro_f1"],
        "seconds": round(pair["pretrain_seconds"] + pre["train_seconds"] + scratch["train_seconds"], 1),
        "timings": {"pretrain": pair["pretrain_seconds"], "finetune": pre["train_seconds"],
                    "scratch": scratch["train_seconds"]},
        "runs": {"pretrain": pair["pretrain_run"], "finetune": pre["run"], "scratch": scratch["run"]},
        "pretrain_config": pair["pretrain_config"], "finetune_config": pair["finetune_config"],
    }
    if pair["pretrain_quality"]:
        record["pretrain_quality"] = pair["pretrain_quality"]
    if experiment == "overlap":
        record["overlap"] = overlaps[(task, size)]
    return record
