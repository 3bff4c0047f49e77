"""`tinylm reproduce gap|size|overlap|all`: the paper's claims 1-3 as one sweep with a report.

For every seed and pre-training size a model is pre-trained (nested subsets: the first N articles of one
seeded permutation, as in the paper), and for every task it is fine-tuned, next to a from-scratch twin that
shares the tokenizer, architecture, task sample, seed and recipe. Experiment 1 (gap) uses the largest size,
experiment 2 (size) every size, experiment 3 (overlap) relates each (task, size) gap to the token overlap
between that pre-training subset and the task's texts. All runs are cached by config hash under OUT/runs.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tinylm.analysis.overlap import overlap_report
from tinylm.checkpoint import write_json
from tinylm.config import FinetuneConfig, replace
from tinylm.data import load_articles, load_task
from tinylm.distributed import env_world, is_main_process
from tinylm.experiments.run_cache import cached_finetune, cached_pretrain
from tinylm.experiments.scales import TASK_ORDER, Scale
from tinylm.reports.experiments import render_report
from tinylm.tokenizer import load_tokenizer

EXPERIMENTS = ("gap", "size", "overlap")
FIRST_SEED = 42  # seed i of a sweep is 42 + i, so a one-seed sweep uses the paper's seed
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
) -> dict[str, Any]:
    """Run (or re-use) every run the experiments need, then write results.json and the report into `out`."""
    for e in experiments:
        if e not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {e!r}; choose from {', '.join(EXPERIMENTS)} or all")
    out, started = Path(out), time.perf_counter()
    runs = out / "runs"
    n_seeds = seeds or scale.seeds
    sizes = sizes_for(experiments, scale)
    # Load and check every task sample before any training, so bad data fails fast and leaves nothing behind.
    task_data = {t: load_task(t, root, train_per_label=scale.samples[t][0], test_per_label=scale.samples[t][1],
                              seed=scale.finetune.data_seed, source=scale.finetune.data_source) for t in tasks}

    pairs: dict[tuple[str, int, int], dict[str, Any]] = {}
    plan = [(seed, size) for seed in range(FIRST_SEED, FIRST_SEED + n_seeds) for size in sizes]
    for seed, size in tqdm(plan, desc=f"reproduce {'+'.join(experiments)} ({scale.name})", unit="model",
                           disable=not is_main_process()):
        pre_cfg = replace(scale.pretrain, articles=size, seed=seed)
        pre_dir = cached_pretrain(pre_cfg, runs, root, device)
        for task in tasks:
            pretrained, scratch, ft = finetune_pair(scale, task, seed, pre_dir, runs, root, device, task_data[task])
            pairs[(task, size, seed)] = {
                "pretrained": pretrained, "scratch": scratch, "pretrain_run": pre_dir.name,
                "pretrain_seconds": _summary_seconds(pre_dir), "pretrain_quality": pretrain_quality(pre_dir),
                "pretrain_config": pre_cfg.to_dict(), "finetune_config": ft.to_dict(),
            }

    overlaps = token_overlaps(scale, sizes, task_data, root) if "overlap" in experiments else {}
    records = []
    for experiment in experiments:
        exp_sizes = (max(scale.sizes),) if experiment == "gap" else scale.sizes
        for (task, size, seed), pair in sorted(pairs.items()):
            if size not in exp_sizes:
                continue
            record = {
                "experiment": experiment, "task": task, "articles": size, "seed": seed,
                "pretrained_accuracy": pair["pretrained"]["accuracy"],
                "scratch_accuracy": pair["scratch"]["accuracy"],
                "pretrained_macro_f1": pair["pretrained"]["macro_f1"],
                "scratch_macro_f1": pair["scratch"]["macro_f1"],
                "seconds": round(pair["pretrain_seconds"] + pair["pretrained"]["train_seconds"]
                                 + pair["scratch"]["train_seconds"], 1),
                "timings": {"pretrain": pair["pretrain_seconds"], "finetune": pair["pretrained"]["train_seconds"],
                            "scratch": pair["scratch"]["train_seconds"]},
                "runs": {"pretrain": pair["pretrain_run"], "finetune": pair["pretrained"]["run"],
                         "scratch": pair["scratch"]["run"]},
                "pretrain_config": pair["pretrain_config"], "finetune_config": pair["finetune_config"],
            }
            if pair["pretrain_quality"]:
                record["pretrain_quality"] = pair["pretrain_quality"]
            if experiment == "overlap":
                record["overlap"] = overlaps[(task, size)]
            records.append(record)

    results = {
        "command": results_command(),
        "experiments": list(experiments), "scale": scale.name, "seeds": n_seeds, "sizes": list(sizes),
        "tasks": list(tasks), "samples_per_label": {t: scale.samples[t] for t in tasks},
        "machine": machine_info(), "seconds": round(time.perf_counter() - started, 1),
        "records": records,
    }
    if is_main_process():  # under torchrun every rank runs the sweep (the runs are shared); one writes the report
        write_json(out / "results.json", results)
        render_report(records, out, PAPER_NUMBERS)
    return results


def finetune_pair(scale: Scale, task: str, seed: int, pre_dir: Path, runs: Path, root: str | os.PathLike | None,
                  device: str | None, data: Any) -> tuple[dict[str, Any], dict[str, Any], FinetuneConfig]:
    """The fine-tuning of the model in pre_dir on `task` and of its from-scratch twin (both cached by config).

    Returns (pre-trained metrics, scratch metrics, the shared fine-tuning config without init).
    """
    ft = replace(scale.finetune, task=task, seed=seed, train_per_label=scale.samples[task][0],
                 test_per_label=scale.samples[task][1])
    pretrained = cached_finetune(replace(ft, init=str(pre_dir)), runs, root, device, data)
    # The twin: same everything, but fresh weights (init=None) and the pre-training run's tokenizer.
    scratch = cached_finetune(replace(ft, tokenizer=scale.pretrain.tokenizer), runs, root, device, data)
    return pretrained, scratch, ft


def token_overlaps(scale: Scale, sizes: tuple[int, ...], task_data: dict[str, Any],
                   root: str | os.PathLike | None) -> dict[tuple[str, int], dict[str, float]]:
    """Overlap measures of each (task, pre-training subset), in the pre-training tokenizer's tokens."""
    tokenizer = load_tokenizer(scale.pretrain.tokenizer, root)
    articles = load_articles(max(sizes), seed=scale.pretrain.data_seed, root=root,
                             source=scale.pretrain.data_source)
    texts = [a.text for a in articles]
    result = {}
    for task, data in task_data.items():
        task_texts = [e.text for e in (*data.train, *data.test)]
        for size in sizes:  # the subsets are nested: the first `size` articles of one seeded permutation
            result[(task, size)] = overlap_report(texts[:size], task_texts, tokenizer,
                                                  max_length=scale.pretrain.seq_len)
    return result


def pretrain_quality(pre_dir: Path) -> dict[str, Any]:
    """The held-out MLM quality of a finished pre-training run (tinylm.train.mlm_quality), flattened for a record."""
    quality = json.loads((pre_dir / "summary.json").read_text()).get("quality") or {}
    if "mlm_accuracy" not in quality:
        return {}
    keep = ("mlm_loss", "mlm_accuracy", "unigram_loss", "unigram_accuracy")
    return {**{k: quality[k] for k in keep}, "cloze_top1": quality["cloze"]["top1"],
            "cloze_top5": quality["cloze"]["top5"]}


def _summary_seconds(pre_dir: Path) -> float:
    return float(json.loads((pre_dir / "summary.json").read_text())["seconds"])


def results_command() -> str | None:
    """The tinylm command line that produced a results.json (None when called from Python)."""
    return "tinylm " + " ".join(sys.argv[1:]) if sys.argv and "tinylm" in sys.argv[0] else None


def source_commit() -> str | None:
    """The git commit of the tinylm source that ran (None outside a git checkout), kept with every result."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "processes": env_world().size, "tinylm_commit": source_commit()}
