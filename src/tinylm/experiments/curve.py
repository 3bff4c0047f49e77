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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tinylm.config import replace
from tinylm.distributed import is_main_process
from tinylm.experiments.pairs import finetune_recipe, load_task_samples, sweep_seeds
from tinylm.experiments.results import results_document, write_results
from tinylm.experiments.run_cache import cached_finetune, cached_pretrain
from tinylm.experiments.scales import TASK_ORDER, Scale
from tinylm.reports.curve import render_curve_report
from tinylm.train.pretrain import snapshots


def snapshot_quality(folder: Path) -> dict[str, Any]:
    """The held-out MLM quality stored with a snapshot or a finished model folder."""
    meta = json.loads((folder / "tinylm_meta.json").read_text())
    return meta.get("quality") or meta.get("summary", {}).get("quality") or {}


def curve_records(scale: Scale, runs: Path, seeds: int, tasks: Sequence[str], root: Any, device: str | None,
                  ) -> list[dict[str, Any]]:
    """One record per (task, seed, step): the snapshot's fine-tuned accuracy, its scratch twin's, its MLM quality."""
    size = max(scale.sizes)
    task_data = load_task_samples(scale, tuple(tasks), root)
    records = []
    for seed in tqdm(sweep_seeds(seeds), desc="reproduce curve", unit="seed",
                     disable=not is_main_process()):
        pre_dir = cached_pretrain(replace(scale.pretrain, articles=size, seed=seed), runs, root, device)
        found = snapshots(pre_dir)
        if len(found) < 2:
            raise ValueError(f"{pre_dir} has no snapshots; the scale's pre-training needs snapshots > 0")
        final_step = max(found)
        for task in tasks:
            ft = finetune_recipe(scale, task, seed)
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
    results = results_document({"experiment": "curve", "scale": scale.name, "seeds": n_seeds,
                                "articles": max(scale.sizes), "tasks": list(tasks)},
                               {"records": records}, started=started)
    write_results(out, results, lambda: render_curve_report(records, out))
    return results
