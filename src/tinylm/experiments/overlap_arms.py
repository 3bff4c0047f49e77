"""`tinylm reproduce arms`: the gap against topic similarity at a fixed pre-training size.

Experiment 3 relates the gap to overlap across pre-training sizes, so size and overlap move together (and at
the CPU scale's 4k vocabulary the paper's token overlap is saturated). Here the size is fixed (ARMS_SIZE, or
the scale's smallest) and only the articles differ in topic similarity to the task (mass overlap; their token
overlap stays near 100 %, so this is not the paper's token overlap: experiments.overlap_control sets that by
design): per
task, a `low` arm of the pool's articles least typical of the task's tokens, the experiments' `random` subset,
and a `high` arm of the most typical ones (selection.rank_by_task_likeness, chosen by the task's *train* texts;
the held-out openings of tinylm.train.mlm_quality are never chosen). The low and high arms match the random
arm's lengths: as many openings of each token length as it has, so that no arm trains on fewer tokens (the
least typical openings are shorter on average). Each arm is pre-trained with the
experiments' recipe and seed and fine-tuned next to the same scratch twin. The report fits the gap on mass
overlap within each task, at that one size.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tinylm.analysis.overlap import OVERLAP_MEASURES, count_tokens
from tinylm.analysis.selection import Selection, objective, rank_by_task_likeness
from tinylm.config import replace
from tinylm.experiments.pairs import finetune_pair, sweep_seeds
from tinylm.experiments.results import results_document, write_results
from tinylm.experiments.run_cache import Pretraining, cached_pretrain, work_through
from tinylm.experiments.scales import TASK_ORDER, Scale
from tinylm.experiments.selection import Pool, SubsetChoice, scale_task, subset_id, task_texts, write_subset
from tinylm.reports.arms import ARMS, render_arms_report
from tinylm.tokenizer import load_tokenizer
from tinylm.train.mlm_quality import heldout_count

# The size the arms are compared at: the smallest at which the sweep's MLM has left the unigram stage (cpu:
# 23.4 % held-out accuracy at 12,000 articles against 6.2 % at 6,000; docs/results/cpu/report.md).
ARMS_SIZE = {"cpu": 12_000}


def arm_overlaps(pool: Pool, rows: np.ndarray, eval_counts: np.ndarray) -> dict[str, float]:
    """Every overlap measure of the pool rows `rows` with a task's token counts (train + test, as experiment 3)."""
    counts = pool.subset_counts(rows)
    values = {name: fn(counts, eval_counts) for name, fn in OVERLAP_MEASURES.items()}
    values["mass"] = objective("mass", eval_counts, budget_tokens=float(counts.sum())).coverage(counts)
    return values


def choose_arms(pool: Pool, tokenizer: Any, data: Any, size: int, seq_len: int, data_seed: int,
                ) -> dict[str, tuple[np.ndarray, SubsetChoice | None]]:
    """The rows of each arm: the experiments' random subset (the permutation's first `size`), and the low and
    high rankings among every article but the held-out tail of that permutation, length-matched to it."""
    order = np.random.default_rng(data_seed).permutation(len(pool.articles))
    candidates = np.sort(order[:len(order) - heldout_count(len(order))])
    select_counts = count_tokens(tokenizer, task_texts(data, "train"), seq_len)
    arms: dict[str, tuple[np.ndarray, SubsetChoice | None]] = {"random": (order[:size], None)}
    for arm in ("low", "high"):
        sel = rank_length_matched(pool, select_counts, order[:size], candidates, lowest=arm == "low")
        chosen = [pool.articles[i] for i in sel.indices]
        summary = {"id": subset_id(chosen), "task": data.name, "articles": size, "arm": arm,
                   "lengths": "matched to the random arm", "first": [a.title for a in chosen[:10]]}
        arms[arm] = (sel.indices, SubsetChoice(sel, chosen, summary))
    return arms


def rank_length_matched(pool: Pool, task_counts: np.ndarray, reference: np.ndarray, candidates: np.ndarray, *,
                        lowest: bool) -> Selection:
    """The most (or least) task-like candidates, taking at each opening length (in tokens) as many as
    `reference` has at that length; the reference rows are candidates, so every quota can be met."""
    lengths = pool_lengths(pool)
    quotas = Counter(lengths[reference].tolist())
    parts = [rank_by_task_likeness(pool.counts, task_counts, quota, lowest=lowest,
                                   candidates=candidates[lengths[candidates] == length])
             for length, quota in sorted(quotas.items())]
    indices = np.concatenate([p.indices for p in parts])
    scores = np.concatenate([p.gains for p in parts])
    order = np.argsort(scores if lowest else -scores, kind="stable")  # most extreme first, as one ranking
    return Selection(indices[order], scores[order], float("nan"), None, 0)


def pool_lengths(pool: Pool) -> np.ndarray:
    """Tokens of each pool opening (its first seq_len tokens, no specials)."""
    return np.asarray(pool.counts.sum(axis=1)).ravel().astype(np.int64)


def reproduce_arms(scale: Scale, out: str | os.PathLike, *, seeds: int | None = None,
                   tasks: tuple[str, ...] = TASK_ORDER, runs: str | os.PathLike | None = None,
                   root: str | os.PathLike | None = None, device: str | None = None,
                   size: int | None = None, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Pre-train the low and high arms of every task (the random arm and scratch twins come from the run cache
    when `runs` is the experiments' OUT/runs); write results.json, report.md/html and the plot into `out`.

    shard=(i, n) makes this process one of n workers sharing the cache (run_cache.work_through) and writes no
    report; a call without shard then reports from the cache."""
    out, started = Path(out), time.perf_counter()
    runs_dir = Path(runs) if runs else out / "runs"
    size = size or ARMS_SIZE.get(scale.name, min(scale.sizes))
    n_seeds = seeds or scale.seeds
    task_data = {t: scale_task(scale, t, root) for t in tasks}
    tokenizer = load_tokenizer(scale.pretrain.tokenizer, root)
    pool = Pool.load(tokenizer, scale.pretrain.seq_len, None, root)
    arms, overlaps, tokens = {}, {}, {}
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
            tokens[(task, arm)] = float(pool_lengths(pool)[rows].mean())

    def pretraining(item: tuple[int, str, str]) -> Pretraining:
        """An arm's pre-training: the random arm reads the data folder, the others their subset's folder."""
        seed, task, arm = item
        cfg = replace(scale.pretrain, articles=size, seed=seed)
        folder, choice = arms[(task, arm)]
        return (cfg, "pretrain", root) if folder is None else (cfg, f"pretrain-{arm}-{choice.id}", folder)

    def finetunes(item: tuple[int, str, str], pre_dir: Path) -> Any:
        seed, task, _ = item
        return finetune_pair(scale, task, seed, pre_dir, runs_dir, root, device, task_data[task])

    plan = [(seed, task, arm) for seed in sweep_seeds(n_seeds) for task in tasks for arm in ARMS]
    if shard is not None:
        work_through(plan, shard, runs_dir, device, pretraining, finetunes)
        return {"shard": list(shard), "models": len(plan)}
    records = []
    for seed in tqdm(sweep_seeds(n_seeds), desc="reproduce arms", unit="seed"):
        for task in tasks:
            for arm in ARMS:
                choice = arms[(task, arm)][1]
                pre_cfg, kind, data = pretraining((seed, task, arm))
                pre_dir = cached_pretrain(pre_cfg, runs_dir, data, device, kind=kind)
                pretrained, scratch, ft = finetunes((seed, task, arm), pre_dir)
                records.append({"task": task, "arm": arm, "seed": seed, "articles": size,
                                "subset": choice.id if choice else None, "overlap": overlaps[(task, arm)],
                                "tokens_per_article": tokens[(task, arm)],
                                "pretrained_accuracy": pretrained["accuracy"],
                                "scratch_accuracy": scratch["accuracy"],
                                "runs": {"pretrain": pre_dir.name, "finetune": pretrained["run"],
                                         "scratch": scratch["run"]},
                                "pretrain_config": pre_cfg.to_dict(), "finetune_config": ft.to_dict()})
    results = results_document({"experiment": "arms", "scale": scale.name, "articles": size, "seeds": n_seeds,
                                "tasks": list(tasks),
                                "subsets": [c.summary for _, c in arms.values() if c is not None]},
                               {"records": records}, started=started)
    write_results(out, results, lambda: render_arms_report(results, out))
    return results
