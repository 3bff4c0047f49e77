"""Choose the CPU scale's fine-tuning recipe on validation texts carved from each task's training pool.

    TINYLM_THREADS=1 python scripts/tune_finetune.py PRETRAINED OUT ARM [ARM ...]

PRETRAINED is a finished pre-training run (the candidate CPU recipe's largest size). For every arm, task, twin
(fine-tuned from PRETRAINED, and from scratch with the same vocabulary and shape) and seed, a fine-tuning run
trains on the scale's training size per label and is scored on as many validation texts per label. Both come
from a training sample of twice the scale's size (same data seed), split in half by a stratified draw: the
test sample is drawn first from its own pool (AG News, DBpedia) or first from each relation (FewRel), so no
validation text is a test text of any sweep. Only validation accuracy is read; every run's config and metrics
stay in OUT/runs (cached, so a rerun resumes). Writes OUT/ARM.json per arm.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.config import replace
from tinylm.experiments.pairs import finetune_recipe
from tinylm.experiments.run_cache import cached_finetune
from tinylm.experiments.scales import SCALES

SEEDS = (42, 43)
ARMS: dict[str, dict[str, Any]] = {
    "e20-lr5e-4": {},  # the second CPU scale's recipe: no warm-up, no dropout
    "e20-lr5e-4-wu0.1": {"warmup_ratio": 0.1},
    "e20-lr5e-4-wu0.1-do0.1": {"warmup_ratio": 0.1, "dropout": 0.1},
    "e10-lr1e-3-wu0.1-do0.1": {"epochs": 10, "lr": 1e-3, "warmup_ratio": 0.1, "dropout": 0.1},
    "e10-lr5e-4-wu0.1-do0.1": {"epochs": 10, "lr": 5e-4, "warmup_ratio": 0.1, "dropout": 0.1},
    "e20-lr2e-4-wu0.1-do0.1": {"lr": 2e-4, "warmup_ratio": 0.1, "dropout": 0.1},
    "e10-lr1e-3-wu0.1": {"epochs": 10, "lr": 1e-3, "warmup_ratio": 0.1},
    "e40-lr2e-4-wu0.1-do0.1": {"epochs": 40, "lr": 2e-4, "warmup_ratio": 0.1, "dropout": 0.1},
}


def tuning_config(task: str, seed: int, arm: str) -> Any:
    scale = SCALES["cpu"]
    ft = finetune_recipe(scale, task, seed)
    return replace(ft, train_per_label=2 * scale.samples[task][0], validation_fraction=0.5, **ARMS[arm])


def main() -> None:
    pretrained, out, arms = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    scale = SCALES["cpu"]
    for arm in arms:
        started, rows = time.perf_counter(), []
        for task in ("ag_news", "dbpedia", "fewrel"):
            for seed in SEEDS:
                cfg = tuning_config(task, seed, arm)
                for twin, twin_cfg in (("pretrained", replace(cfg, init=str(pretrained))),
                                       ("scratch", replace(cfg, tokenizer=scale.pretrain.tokenizer))):
                    metrics = cached_finetune(twin_cfg, out / "runs", None, None)
                    rows.append({"task": task, "seed": seed, "twin": twin, "run": metrics["run"],
                                 "validation_accuracy": metrics["validation"]["accuracy"],
                                 "validation_examples": metrics["validation"]["examples"],
                                 "train_examples": metrics["train_examples"], "seconds": metrics["train_seconds"]})
        summary = {f"{task}/{twin}": round(float(np.mean([r["validation_accuracy"] for r in rows
                                                           if r["task"] == task and r["twin"] == twin])), 4)
                   for task in ("ag_news", "dbpedia", "fewrel") for twin in ("pretrained", "scratch")}
        record = {"arm": arm, "settings": ARMS[arm], "pretrained": str(pretrained), "seeds": list(SEEDS),
                  "summary": summary, "runs": rows, "seconds": round(time.perf_counter() - started, 1)}
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{arm}.json").write_text(json.dumps(record, indent=1))
        print(arm, json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
