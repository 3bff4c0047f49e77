"""Choose the deploy recipe's distillation settings on a validation split carved from each task's training pool.

    TINYLM_THREADS=1 python scripts/tune_student.py COMMITTEE_OUT OUT

COMMITTEE_OUT is a finished `tinylm reproduce committee` folder. For each task, students are distilled from its
fine-tuned committee with each setting of GRID (the rest as the CPU deploy scale), and scored on VALIDATION
labelled texts per label (fewer where the pool runs out) drawn from the task's training pool with their own
seed, none of them a training, test or extra (unlabeled) text of any setting. The test sample is not looked
at. Writes OUT/tuning.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.checkpoint import model_folder
from tinylm.committee import load_classifier
from tinylm.experiments.deploy import DEPLOY_SCALES
from tinylm.tokenizer import load_tokenizer
from tinylm.train.distill import distill, task_config, unlabeled_texts
from tinylm.train.distill_config import DistillConfig
from tinylm.train.evaluate import predict_proba
from tinylm.train.finetune import finetune_task

GRID: dict[str, dict[str, Any]] = {
    "pool2000-e10": {"unlabeled_texts": 2000, "epochs": 10},  # the current CPU deploy recipe
    "pool2000-e20": {"unlabeled_texts": 2000, "epochs": 20},
    "pool3500-e10": {"unlabeled_texts": 3500, "epochs": 10},
    "pool3500-e20": {"unlabeled_texts": 3500, "epochs": 20},  # about what FewRel's 16-relation pool can spare
}
VALIDATION = 50  # labelled pool texts per label
VALIDATION_SEED_OFFSET = 7  # the extra texts use data_seed + 1


def validation_split(cfg: DistillConfig, excluded: set[str]) -> tuple[list[str], list[int]]:
    data_cfg = task_config(cfg, model_folder(cfg.teacher))
    # Room for the texts dropped below, within the local DBpedia pool (376 rows per label).
    per_label = VALIDATION + (data_cfg.train_per_label or 0) + 250
    draw = dataclasses.replace(data_cfg, train_per_label=per_label, validation_fraction=0.0,
                               data_seed=data_cfg.data_seed + VALIDATION_SEED_OFFSET)
    kept: dict[int, list[str]] = {}
    for e in finetune_task(draw, None).train:
        if e.text not in excluded and len(kept.setdefault(e.label, [])) < VALIDATION:
            kept[e.label].append(e.text)
    pairs = [(t, label) for label, texts in sorted(kept.items()) for t in texts]
    return [t for t, _ in pairs], [label for _, label in pairs]


def main() -> None:
    committee_out, out = Path(sys.argv[1]), Path(sys.argv[2])
    results = json.loads((committee_out / "results.json").read_text())
    runs = committee_out / "runs"
    base = DEPLOY_SCALES["cpu"].distill
    record: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "grid": GRID, "tasks": {}}
    for rec in results["records"]:
        cfgs = {name: DistillConfig(teacher=str(runs / rec["runs"]["committee_finetune"]),
                                    pretrained=str(runs / rec["runs"]["committee_pretrain"]), seed=rec["seed"],
                                    **{**base, **setting})
                for name, setting in GRID.items()}
        some = next(iter(cfgs.values()))
        task = finetune_task(task_config(some, model_folder(some.teacher)), None)
        excluded = {e.text for e in (*task.train, *task.test)}
        for cfg in cfgs.values():
            excluded |= set(unlabeled_texts(cfg, task_config(cfg, model_folder(cfg.teacher)), task, None))
        texts, label_list = validation_split(some, excluded)
        labels = np.asarray(label_list)
        teacher = load_classifier(some.teacher, "cpu")
        teacher_pred = predict_proba(teacher, load_tokenizer(model_folder(some.teacher)), texts).argmax(1)
        scores: dict[str, Any] = {"validation_texts": len(texts),
                                  "committee_accuracy": float((teacher_pred == labels).mean())}
        for name, cfg in cfgs.items():
            run = out / rec["task"] / name
            metrics = distill(cfg, run, task_data=task)
            student = load_classifier(run, "cpu")
            pred = predict_proba(student, load_tokenizer(run / "model"), texts).argmax(1)
            scores[name] = {"accuracy": float((pred == labels).mean()),
                            "agreement": float((pred == teacher_pred).mean()),
                            "train_seconds": metrics["train_seconds"]}
            print(rec["task"], name, scores[name], flush=True)
        record["tasks"][rec["task"]] = scores
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
