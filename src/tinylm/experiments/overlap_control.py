"""`tinylm reproduce overlap-control`: claim 3 with token overlap set by design, everything else held.

At one pre-training size (the scale's largest subset: the first N articles of the data seed's permutation, the
paper sweep's model) and one set of seeds, each task gets one pre-training variant per target level of token
overlap (default 100 / 90 / 75 / 50 %). A variant keeps the task types that analysis.withholding chooses out of
pre-training: in the tokenised openings every occurrence of a withheld type becomes [UNK] (data.withhold), which
MLM never takes as a target, and which the random 10 % of masking never draws. Each sequence keeps its length
and every other token, so the variants share their sequences, tokens per sequence, optimizer steps, seeds and
the rest of the text; the report shows these counts per level. Level 100 % withholds nothing: it is the plain
pre-training run (kind `pretrain`), the very run the paper sweep caches for that size and seed.

Token overlap is measured with analysis.overlap on the variant's token stream (the [UNK]s count as no type),
so the x axis shows the intervention. Each pre-trained variant is fine-tuned next to its scratch twin with the
scale's recipe and fine-tuning seeds (pairs.finetune_seeds); the scratch twins do not depend on the level, so
every level of a seed is compared with the same twins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tinylm.analysis.overlap import OVERLAP_MEASURES, count_ids, count_tokens
from tinylm.analysis.withholding import PROTECT_TOP, Withheld, withheld_levels
from tinylm.config import replace, resolve_model_config
from tinylm.data import TaskData
from tinylm.data.encoding import encode_cached
from tinylm.data.withhold import REPLACEMENT, WITHHELD_KEY, withhold_tokens
from tinylm.distributed import is_main_process
from tinylm.experiments import run_cache
from tinylm.experiments.pairs import (
    finetune_pair,
    finetune_seeds,
    load_task_samples,
    pretrain_quality,
    pretrain_summary,
    sweep_seeds,
)
from tinylm.experiments.results import results_document, write_results
from tinylm.experiments.run_cache import Pretraining, cached_pretrain
from tinylm.experiments.scales import SCALES, TASK_ORDER, Scale
from tinylm.io import write_json
from tinylm.reports.overlap_control import render_overlap_control_report
from tinylm.train.pretrain import pretraining_texts, pretraining_tokenizer
from tinylm.validation import TEXT, Allowed, each, instance_of, integer, number, validate

LEVELS = (1.0, 0.9, 0.75, 0.5)


@dataclass
class OverlapControlScale:
    """What overlap-control runs: the base scale's recipes and task samples at one pre-training size."""

    name: str
    base: Scale  # pre-training and fine-tuning recipes, task samples, fine-tuning seeds per model
    articles: int  # the one pre-training size
    levels: tuple[float, ...] = LEVELS  # target token overlaps (fractions); 1.0 = the plain run
    seeds: int = 3  # pre-training seeds
    protect: int = PROTECT_TOP  # the subset's most frequent types, never withheld

    def __post_init__(self) -> None:
        validate(self)

    def rules(self) -> dict[str, Allowed]:
        return {"name": TEXT, "base": instance_of(Scale), "articles": integer(1),
                "levels": each(number(0, 1, open_low=True, open_high=False)), "seeds": integer(1),
                "protect": integer(0)}


OVERLAP_CONTROL_SCALES: dict[str, OverlapControlScale] = {
    name: OverlapControlScale(name=name, base=scale, articles=max(scale.sizes)) for name, scale in SCALES.items()
}


def level_tag(level: float) -> str:
    """'0.75' -> '075': a level as it appears in file and run names."""
    return f"{round(100 * level):03d}"


def write_withhold_file(folder: Path, task: str, choice: Withheld, tokenizer: Any, protect: int) -> Path:
    """FOLDER/<task>-<level>-<digest>.json: the withheld ids (and, for the reader, their tokens and the rule).
    The name carries a digest of the ids, so the run cache (which keys a withhold file by its name) never mixes
    two choices."""
    digest = hashlib.sha256(json.dumps(choice.token_ids).encode()).hexdigest()[:12]
    path = folder / f"{task}-{level_tag(choice.level)}-{digest}.json"
    if not path.is_file():
        write_json(path, {"task": task, "level": choice.level, "protect": protect,
                          "rule": "tinylm.analysis.withholding", "replacement": REPLACEMENT,
                          WITHHELD_KEY: list(choice.token_ids),
                          "tokens": tokenizer.convert_ids_to_tokens(list(choice.token_ids))})
    return path


def prepare_variants(scale: OverlapControlScale, task_data: dict[str, TaskData], runs: Path,
                     root: str | os.PathLike | None) -> dict[tuple[str, float], dict[str, Any]]:
    """Per (task, level): the withhold file (None at a level that withholds nothing) and the variant's facts
    (withheld types and masses, every overlap measure on its token stream, and the invariance counts)."""
    cfg = replace(scale.base.pretrain, articles=scale.articles)
    texts = pretraining_texts(cfg, root)
    tokenizer = pretraining_tokenizer(cfg, texts, resolve_model_config(cfg.model).vocab_size, root)
    ids = encode_cached(tokenizer, texts, cfg.seq_len)
    vocab, special = len(tokenizer), tokenizer.all_special_ids
    pre_counts = count_ids(ids, vocab, exclude=special)
    variants = {}
    for task, data in task_data.items():
        task_counts = count_tokens(tokenizer, [e.text for e in (*data.train, *data.test)], cfg.seq_len)
        for level, choice in withheld_levels(task_counts, pre_counts, scale.levels, scale.protect).items():
            path = (write_withhold_file(runs / "withhold", task, choice, tokenizer, scale.protect)
                    if choice.token_ids else None)
            new, kept = withhold_tokens(ids, choice.token_ids, tokenizer.unk_token_id)
            counts = count_ids(new, vocab, exclude=special)
            variants[(task, level)] = {
                "task": task, "level": level, "file": path.name if path else None, "path": path,
                "withheld_types": len(choice.token_ids), "task_mass_withheld": choice.task_mass,
                "pretrain_mass_replaced": choice.pretrain_mass, "reached": choice.reached,
                "token_overlap": OVERLAP_MEASURES["token"](counts, task_counts),
                "overlap": {name: fn(counts, task_counts) for name, fn in OVERLAP_MEASURES.items()},
                "sequences": len(new), "tokens": int((new != tokenizer.pad_token_id).sum()),
                "replaced_positions": int((~kept).sum()),
                "rest_unchanged": bool(np.array_equal(new[kept], ids[kept]) and new.shape == ids.shape),
                "first_withheld": tokenizer.convert_ids_to_tokens(list(choice.token_ids[:20])),
            }
    return variants


def reproduce_overlap_control(scale: OverlapControlScale, out: str | os.PathLike, *, seeds: int | None = None,
                              tasks: tuple[str, ...] = TASK_ORDER, runs: str | os.PathLike | None = None,
                              root: str | os.PathLike | None = None, device: str | None = None,
                              levels: tuple[float, ...] | None = None,
                              shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Pre-train every (task, level, seed) variant, fine-tune each next to its scratch twins (all cached under
    `runs`, default OUT/runs: pass the paper sweep's OUT/runs to re-use its level-100 % runs), then write
    results.json, report.md/html and the plot into `out`.

    shard=(i, n) makes this process one of n workers sharing the cache (work_through) and writes no report; a
    call without shard then reports from the cache."""
    out, started = Path(out), time.perf_counter()
    runs_dir = Path(runs) if runs else out / "runs"
    scale = dataclasses.replace(scale, levels=tuple(levels or scale.levels), seeds=seeds or scale.seeds)
    base = scale.base
    task_data = load_task_samples(base, tasks, root)
    variants = prepare_variants(scale, task_data, runs_dir, root)
    records, pretraining = [], []
    plan = [(seed, task, level) for seed in sweep_seeds(scale.seeds) for task in tasks for level in scale.levels]
    if shard is not None:
        work_through(plan, shard, scale, variants, task_data, runs_dir, root, device)
        return {"shard": list(shard), "models": len(plan)}
    for seed, task, level in tqdm(plan, desc=f"reproduce overlap-control ({scale.name})", unit="model",
                                  disable=not is_main_process()):
        variant = variants[(task, level)]
        pre_cfg, kind = variant_pretrain(scale, variant, seed)
        pre_dir = cached_pretrain(pre_cfg, runs_dir, root, device, kind=kind)
        summary, quality = pretrain_summary(pre_dir), pretrain_quality(pre_dir)
        pretraining.append({"task": task, "level": level, "seed": seed, "run": pre_dir.name,
                            "steps": summary["steps"], "tokens": summary["tokens"], "seconds": summary["seconds"],
                            **({"quality": quality} if quality else {})})
        for ft_seed in finetune_seeds(seed, base.finetune_seeds):
            pretrained, scratch, ft = finetune_pair(base, task, ft_seed, pre_dir, runs_dir, root, device,
                                                    task_data[task])
            records.append({
                "task": task, "level": level, "seed": seed, "finetune_seed": ft_seed,
                "token_overlap": variant["token_overlap"], "overlap": variant["overlap"],
                "pretrained_accuracy": pretrained["accuracy"], "scratch_accuracy": scratch["accuracy"],
                "runs": {"pretrain": pre_dir.name, "finetune": pretrained["run"], "scratch": scratch["run"]},
                **({"pretrain_quality": quality} if quality else {}),
                "pretrain_config": pre_cfg.to_dict(), "finetune_config": ft.to_dict(),
            })
    results = results_document(
        {"experiment": "overlap-control", "scale": scale.name, "articles": scale.articles,
         "levels": list(scale.levels), "seeds": scale.seeds, "finetune_seeds": base.finetune_seeds,
         "tasks": list(tasks), "protect": scale.protect, "replacement": REPLACEMENT,
         "variants": [{k: v for k, v in variant.items() if k != "path"} for variant in variants.values()],
         "pretraining": pretraining},
        {"records": records}, started=started)
    write_results(out, results, lambda: render_overlap_control_report(results, out))
    return results


def variant_pretrain(scale: OverlapControlScale, variant: dict[str, Any], seed: int) -> tuple[Any, str]:
    """The pre-training config of one (task, level) variant and seed, and its run kind in the cache."""
    cfg = replace(scale.base.pretrain, articles=scale.articles, seed=seed)
    if variant["path"] is None:
        return cfg, "pretrain"
    return (replace(cfg, withhold=str(variant["path"].resolve())),
            f"pretrain-withhold-{variant['task']}-{level_tag(variant['level'])}")


def work_through(plan: list[tuple[int, str, float]], shard: tuple[int, int], scale: OverlapControlScale,
                 variants: dict[tuple[str, float], dict[str, Any]], task_data: dict[str, TaskData], runs: Path,
                 root: str | os.PathLike | None, device: str | None) -> None:
    """One of n workers over the (seed, task, level) plan (run_cache.work_through)."""

    def pretraining(item: tuple[int, str, float]) -> Pretraining:
        seed, task, level = item
        return (*variant_pretrain(scale, variants[(task, level)], seed), root)

    def finetunes(item: tuple[int, str, float], pre_dir: Path) -> None:
        seed, task, _ = item
        for ft_seed in finetune_seeds(seed, scale.base.finetune_seeds):
            finetune_pair(scale.base, task, ft_seed, pre_dir, runs, root, device, task_data[task])

    run_cache.work_through(plan, shard, runs, device, pretraining, finetunes)
