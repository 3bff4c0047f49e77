"""`tinylm distill`: one student trained to match a fine-tuned committee's soft votes (knowledge distillation).

The committee's accuracy at one small model's latency: the student (by default one committee member's shape,
started from a pre-trained member's encoder) learns the teacher's temperature-softened soft vote on the task's
training texts, and optionally on unlabeled in-domain text (the task's unused training pool, or Wikipedia
openings), with Hinton's loss

    alpha * T^2 * KL(p_teacher(T) || p_student(T))  +  (1 - alpha) * cross-entropy(labels)

where p(T) = softmax(logits / T); the cross-entropy counts the labelled rows only. The T^2 keeps the soft term's
gradient scale independent of T. A committee's softened vote is the mean of its members' softened softmaxes (the
soft vote at T = 1). The teacher's targets are computed once, in fp32, before training.

Everything else is fine-tuning's: the task sample (finetune.finetune_task, read from the teacher's own fine-tuning
config, so the student sees the committee's training texts and is tested on its test texts), the length-bucketed
batches (finetune.ClassificationBatches) and the resumable, seeded loop (train.loop.train_loop). The student is an
ordinary model folder (checkpoint.save_model): `tinylm predict/evaluate/serve/export` and transformers load it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinylm.checkpoint import model_folder, save_model
from tinylm.committee import Committee, extract_member, is_committee_folder, load_classifier
from tinylm.config import FinetuneConfig, config_hash, replace, resolve_model_config
from tinylm.data import Example, TaskData, load_articles
from tinylm.folders import classifier_folder
from tinylm.io import write_json
from tinylm.model import IGNORE_INDEX, BertForClassification, ModelOutput
from tinylm.runtime import seed_everything
from tinylm.tokenizer import load_tokenizer
from tinylm.train.distill_config import INIT_MEMBER, INIT_SCRATCH, DistillConfig
from tinylm.train.evaluate import classification_metrics, predict_proba
from tinylm.train.finetune import ClassificationBatches, build_classifier, encode_examples, finetune_task
from tinylm.train.loop import Batch, LoopConfig, train_loop
from tinylm.train.rows import record_rows
from tinylm.train.run import loop_meta, one_writer_per_run, start, write_config

TARGETS_FILE = "teacher_targets.npz"  # the teacher's softened votes on the training texts (reused on resume)


class DistillationLoss(nn.Module):
    """The student wrapped with Hinton's loss, so that train.loop.train_loop trains it as it trains any model.

    Batches carry `teacher_probs` (the teacher's softened vote per row) and `labels` (IGNORE_INDEX on the
    unlabeled rows). The loss is computed in fp32 whatever the autocast precision of the student's forward pass."""

    def __init__(self, student: BertForClassification, temperature: float, alpha: float):
        super().__init__()
        self.student, self.temperature, self.alpha = student, temperature, alpha

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, teacher_probs: Tensor) -> ModelOutput:
        logits = self.student(input_ids, attention_mask).logits.float()
        t = self.temperature
        soft = F.kl_div(F.log_softmax(logits / t, dim=-1), teacher_probs, reduction="batchmean") * t * t
        labelled = labels != IGNORE_INDEX
        # A batch of unlabeled texts only has no cross-entropy term (F.cross_entropy would give NaN).
        hard = F.cross_entropy(logits[labelled], labels[labelled]) if bool(labelled.any()) else logits.new_zeros(())
        return ModelOutput(logits=logits, loss=self.alpha * soft + (1 - self.alpha) * hard)


class DistillBatches(ClassificationBatches):
    """Fine-tuning's batches (same order, buckets and padding) with each row's teacher targets added."""

    def __init__(self, ids: list[list[int]], labels: list[int], targets: np.ndarray, batch_size: int, pad_id: int,
                 seed: int, epoch: int):
        super().__init__(ids, labels, batch_size, pad_id, seed, epoch)
        self.targets = targets

    def __getitem__(self, i: int) -> Batch:  # type: ignore[override]
        batch = super().__getitem__(i)
        batch["teacher_probs"] = torch.from_numpy(self.targets[self.batches[i]])
        return batch


def soft_targets(teacher: Committee, tokenizer: Any, texts: Sequence[str], temperature: float, max_length: int,
                 device: torch.device | None = None, batch_size: int = 64) -> np.ndarray:
    """The teacher's softened vote, float32 [len(texts), C]: the mean over members of softmax(logits / T), in
    fp32 (at T = 1, the committee's soft vote)."""
    return predict_proba(teacher, tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device,
                         temperature=temperature)


def load_teacher(folder: Path) -> Committee:
    """A classification committee, or a single fine-tuned model as a committee of one (on the CPU)."""
    model = load_classifier(folder, "cpu")
    return model if isinstance(model, Committee) else Committee.sharing(model)


def folder_meta(folder: Path) -> dict[str, Any]:
    meta = folder / "tinylm_meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


def stored_finetune_config(folder: Path) -> FinetuneConfig | None:
    """The fine-tuning config a model folder stores in tinylm_meta.json (fine-tuned models and committees store
    theirs; a student stores the one whose task sample it was distilled on), or None."""
    stored = folder_meta(folder).get("finetune")
    if stored is None:
        return None
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    return FinetuneConfig(**{k: v for k, v in stored.items() if k in known})


def task_config(cfg: DistillConfig, teacher: Path) -> FinetuneConfig:
    """The fine-tuning config whose data the student uses: the teacher's own (stored in its folder), with the
    distillation config's task-sample fields where they are set."""
    base = stored_finetune_config(teacher)
    if base is None and cfg.task is None:
        raise ValueError(f"{teacher}: no stored fine-tuning config, so the task is unknown; give --task")
    return replace(base or FinetuneConfig(), task=cfg.task, train_per_label=cfg.train_per_label,
                   test_per_label=cfg.test_per_label, data_seed=cfg.data_seed, max_length=cfg.max_length)


def unlabeled_texts(cfg: DistillConfig, data_cfg: FinetuneConfig, task: TaskData,
                    root: str | os.PathLike | None) -> list[str]:
    """cfg.unlabeled_texts extra texts, none of them a training or test text of the task sample.

    pool: another balanced draw (seed data_seed + 1) from the task's training pool, labels dropped: the in-domain
    text a user has without labels. wikipedia: openings of Wikipedia articles in a seeded order."""
    if cfg.unlabeled == "none":
        return []
    seen = {e.text for e in (*task.train, *task.validation, *task.test)}
    if cfg.unlabeled == "pool":
        # Ask for enough rows that, after dropping the sample's own texts, cfg.unlabeled_texts remain.
        per_label = -(-cfg.unlabeled_texts // task.num_labels) + (data_cfg.train_per_label or 0)
        draw = dataclasses.replace(data_cfg, train_per_label=per_label, data_seed=data_cfg.data_seed + 1,
                                   validation_fraction=0.0)
        texts = [e.text for e in finetune_task(draw, root).train]
    else:
        need = cfg.unlabeled_texts + len(seen)
        texts = [a.text for a in load_articles(need, seed=data_cfg.data_seed + 1, root=root,
                                               source=data_cfg.data_source)]
    fresh = [t for t in dict.fromkeys(texts) if t not in seen]
    if len(fresh) < cfg.unlabeled_texts:
        raise ValueError(f"only {len(fresh)} unused {cfg.unlabeled} texts for {task.name}; "
                         f"{cfg.unlabeled_texts} asked for")
    return fresh[:cfg.unlabeled_texts]


def build_student(cfg: DistillConfig, teacher: Path, data_cfg: FinetuneConfig, num_labels: int,
                  out: Path) -> tuple[BertForClassification, Any]:
    """The student and its tokenizer: a pre-trained member's encoder (extracted into out/init), a given model
    folder's, or fresh weights (the teacher's member shape and vocabulary, or cfg.model's shape)."""
    if cfg.init == INIT_SCRATCH:
        if cfg.model is None:  # a model folder as tokenizer: build_classifier copies its architecture
            return build_classifier(dataclasses.replace(data_cfg, init=None, tokenizer=str(teacher)), num_labels)
        tokenizer = load_tokenizer(teacher)
        model_cfg = replace(resolve_model_config(cfg.model), vocab_size=len(tokenizer))
        return BertForClassification(model_cfg, num_labels), tokenizer
    init = Path(cfg.init)
    if cfg.init == INIT_MEMBER:
        source = cfg.pretrained or data_cfg.init
        if not source:
            raise ValueError(f"{teacher} names no pre-trained model it was fine-tuned from; give --pretrained "
                             "or --init scratch")
        init = model_folder(source)
        if is_committee_folder(init):
            if not (out / "init" / "config.json").is_file():
                extract_member(init, cfg.member, out / "init")
            init = out / "init"
    return build_classifier(dataclasses.replace(data_cfg, init=str(init), tokenizer=None), num_labels)


def _targets(cfg: DistillConfig, teacher: Committee, tokenizer: Any, texts: list[str], max_length: int,
             device: torch.device, out: Path) -> np.ndarray:
    """The teacher's targets on the training texts, stored in out/ so that a resumed run trains on the very same
    numbers (recomputing them with another thread count could differ in the last bits)."""
    path = out / TARGETS_FILE
    key = config_hash(cfg, texts)
    if path.is_file():
        stored = np.load(path)
        if str(stored["key"]) == key:
            return stored["targets"]
    targets = soft_targets(teacher, tokenizer, texts, cfg.temperature, max_length, device)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, targets=targets, key=np.array(key))
    os.replace(tmp, path)
    return targets


@one_writer_per_run
def distill(
    cfg: DistillConfig,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    task_data: TaskData | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Distil the teacher into one student: writes out/model (an ordinary model folder) and out/metrics.json
    (the student's test metrics, the teacher's test accuracy and how often the two agree). Resumable."""
    dev, world = start(cfg, device, distributed=False)
    teacher_dir = classifier_folder(cfg.teacher)  # a missing or pre-trained (MLM) teacher: one line, nothing written
    data_cfg = task_config(cfg, teacher_dir)
    task = task_data or finetune_task(data_cfg, root)
    extra = unlabeled_texts(cfg, data_cfg, task, root)
    out = Path(out)
    write_config(world, out, "distill_config.json", cfg.to_dict())
    teacher = load_teacher(teacher_dir).to(dev)
    teacher_tokenizer = load_tokenizer(teacher_dir)
    if teacher.num_labels != task.num_labels:
        raise ValueError(f"{teacher_dir} has {teacher.num_labels} labels, {task.name} {task.num_labels}")
    seed_everything(cfg.seed)
    student, tokenizer = build_student(cfg, teacher_dir, data_cfg, task.num_labels, out)
    max_length = min(data_cfg.max_length, student.cfg.max_position_embeddings, teacher.cfg.max_position_embeddings)
    examples = [*task.train, *(Example(t, IGNORE_INDEX) for t in extra)]  # extra texts: soft targets only
    texts = [e.text for e in examples]
    targets = _targets(cfg, teacher, teacher_tokenizer, texts, max_length, dev, out)
    ids = encode_examples(tokenizer, examples, max_length)
    labels = [e.label for e in examples]
    objective = DistillationLoss(student, cfg.temperature, cfg.alpha)
    state = train_loop(
        objective,
        lambda e: DistillBatches(ids, labels, targets, cfg.batch_size, tokenizer.pad_token_id, cfg.seed, e),
        LoopConfig.of(cfg, f"distill {task.name} ({cfg.init})"), out, dev,
        loop_meta("distill", cfg), stop_after=stop_after, compile=cfg.compile,
    )
    result: dict[str, Any] = {
        "task": task.name, "teacher": str(teacher_dir), "teacher_members": teacher.n, "init": cfg.init,
        "steps": state.step, "train_examples": len(task.train), "unlabeled_examples": len(extra),
        "test_examples": len(task.test), "train_seconds": round(state.seconds, 2),
        "final_loss": float(np.mean(state.losses[-20:])) if state.losses else None,
    }
    if state.epoch < cfg.epochs:
        return result  # interrupted on purpose (stop_after): the checkpoint holds the state
    result.update(_test_scores(student, tokenizer, teacher, teacher_tokenizer, task, max_length, dev))
    record_rows(out, texts, [e.text for e in task.test])  # the student learnt from the extra texts too
    save_model(student.cpu(), out / "model", tokenizer, label_names=task.label_names,
               extra={"distill": cfg.to_dict(), "finetune": data_cfg.to_dict(),
                      "metrics": {k: result[k] for k in ("accuracy", "macro_f1", "teacher_accuracy", "agreement")}})
    write_json(out / "metrics.json", result)
    return result


def _test_scores(student: BertForClassification, tokenizer: Any, teacher: Committee, teacher_tokenizer: Any,
                 task: TaskData, max_length: int, device: torch.device) -> dict[str, Any]:
    """Student and teacher (soft vote, T = 1) on the test sample, both in fp32, and their agreement."""
    texts = [e.text for e in task.test]
    y = [e.label for e in task.test]
    student_pred = predict_proba(student, tokenizer, texts, max_length=max_length, device=device).argmax(1)
    teacher_pred = soft_targets(teacher, teacher_tokenizer, texts, 1.0, max_length, device).argmax(1)
    metrics = classification_metrics(y, student_pred.tolist(), task.label_names)
    return {**metrics, "teacher_accuracy": float(np.mean(teacher_pred == np.array(y))),
            "agreement": float(np.mean(student_pred == teacher_pred))}


__all__ = ["DistillBatches", "DistillConfig", "DistillationLoss", "distill", "soft_targets", "task_config",
           "unlabeled_texts"]
