"""What the sweeps share: their seeds and task samples, a pre-trained model fine-tuned next to its from-scratch
twin (both cached by config, so every recipe that asks for the same pair finds the same runs), the facts of a
finished pre-training run, and the token overlap of pre-training subsets with the tasks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from tinylm.analysis.overlap import overlap_report
from tinylm.config import FinetuneConfig, replace
from tinylm.data import TaskData, load_articles, load_task
from tinylm.experiments.run_cache import cached_finetune
from tinylm.experiments.scales import Scale
from tinylm.tokenizer import load_tokenizer

FIRST_SEED = 42  # seed i of a sweep is 42 + i, so a one-seed sweep uses the paper's seed


class TaskRecipe(Protocol):
    """A scale's task samples and fine-tuning recipe (Scale and CommitteeScale both have them)."""

    samples: dict[str, tuple[int, int]]
    finetune: FinetuneConfig


def sweep_seeds(n: int) -> range:
    """The seeds of an n-seed sweep."""
    return range(FIRST_SEED, FIRST_SEED + n)


def finetune_seeds(pretrain_seed: int, n: int) -> list[int]:
    """The fine-tuning seeds of one pre-training seed: the seed itself first (a sweep with one fine-tuning seed
    fine-tunes as before), then seed + 1000 j, so no two pre-training seeds share a fine-tuning seed, and so no
    two share a scratch twin (their gaps stay independent)."""
    return [pretrain_seed + 1000 * j for j in range(n)]


def load_task_samples(scale: TaskRecipe, tasks: tuple[str, ...],
                      root: str | os.PathLike | None) -> dict[str, TaskData]:
    """Every task's sample at this scale, loaded (and checked) before any training, so that bad data fails fast
    and leaves nothing behind."""
    return {t: load_task(t, root, train_per_label=scale.samples[t][0], test_per_label=scale.samples[t][1],
                         seed=scale.finetune.data_seed, source=scale.finetune.data_source) for t in tasks}


def finetune_recipe(scale: TaskRecipe, task: str, seed: int) -> FinetuneConfig:
    """The scale's fine-tuning config for one task and seed, without init (from scratch)."""
    return replace(scale.finetune, task=task, seed=seed, train_per_label=scale.samples[task][0],
                   test_per_label=scale.samples[task][1])


def finetune_pair(scale: Scale, task: str, seed: int, pre_dir: Path, runs: Path, root: str | os.PathLike | None,
                  device: str | None, data: Any) -> tuple[dict[str, Any], dict[str, Any], FinetuneConfig]:
    """The fine-tuning of the model in pre_dir on `task` and of its from-scratch twin (both cached by config),
    with fine-tuning seed `seed`.

    Returns (pre-trained metrics, scratch metrics, the shared fine-tuning config without init).
    """
    ft = finetune_recipe(scale, task, seed)
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


def pretrain_summary(pre_dir: Path) -> dict[str, Any]:
    """The summary.json of a finished pre-training run (a single model's or a committee's)."""
    return json.loads((pre_dir / "summary.json").read_text())


def pretrain_seconds(pre_dir: Path) -> float:
    """The training time of a finished pre-training run."""
    return float(pretrain_summary(pre_dir)["seconds"])


def pretrain_quality(pre_dir: Path) -> dict[str, Any]:
    """The held-out MLM quality of a finished pre-training run (tinylm.train.mlm_quality), flattened for a record."""
    quality = pretrain_summary(pre_dir).get("quality") or {}
    if "mlm_accuracy" not in quality:
        return {}
    keep = ("mlm_loss", "mlm_accuracy", "unigram_loss", "unigram_accuracy")
    return {**{k: quality[k] for k in keep}, "cloze_top1": quality["cloze"]["top1"],
            "cloze_top5": quality["cloze"]["top5"]}
