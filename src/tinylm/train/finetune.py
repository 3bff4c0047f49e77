"""Fine-tuning for sequence classification, from a pre-trained folder or from scratch with the same config."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from tinylm.checkpoint import load_model, model_folder, read_model_config, save_model
from tinylm.config import FinetuneConfig, replace, resolve_model_config
from tinylm.data import Example, TaskData
from tinylm.data.sample import task_sample
from tinylm.data.user_files import LabelledSource, task_hash
from tinylm.io import write_json
from tinylm.model import BertForClassification
from tinylm.runtime import seed_everything
from tinylm.tokenizer import load_tokenizer
from tinylm.train.evaluate import evaluate_model
from tinylm.train.loop import Batch, LoopConfig, train_loop
from tinylm.train.rows import record_rows
from tinylm.train.run import finish, loop_meta, one_writer_per_run, start, write_config

BUCKET_BATCHES = 50  # batches per length-sorted bucket: little padding, order still random


def encode_examples(
    tokenizer: PreTrainedTokenizerFast, examples: Sequence[Example], max_length: int
) -> list[list[int]]:
    if not examples:  # the fast tokenizer fails on an empty batch; no examples is train_loop's error to give
        return []
    return tokenizer([e.text for e in examples], truncation=True, max_length=max_length)["input_ids"]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence in the batch (dynamic padding)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s)
    return ids, (ids != pad_id).long()


class ClassificationBatches(Sequence[Batch]):
    """One epoch's batches: shuffled, then sorted by length within buckets so batches carry little padding."""

    def __init__(self, ids: list[list[int]], labels: list[int], batch_size: int, pad_id: int, seed: int, epoch: int):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(ids))
        bucket = batch_size * BUCKET_BATCHES
        buckets = [sorted(order[i:i + bucket], key=lambda j: len(ids[j])) for i in range(0, len(order), bucket)]
        order = np.concatenate(buckets) if buckets else order  # no examples: no batches, which train_loop refuses
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        self.batches = [batches[i] for i in rng.permutation(len(batches))]
        self.ids, self.labels, self.pad_id = ids, labels, pad_id

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:  # type: ignore[override]
        rows = self.batches[i]
        input_ids, attention_mask = pad_batch([self.ids[j] for j in rows], self.pad_id)
        labels = torch.tensor([self.labels[j] for j in rows], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def build_classifier(cfg: FinetuneConfig, num_labels: int) -> tuple[BertForClassification, PreTrainedTokenizerFast]:
    """From cfg.init (encoder weights + its tokenizer) or from scratch (cfg.model preset, same shape)."""
    if cfg.init:
        init = model_folder(cfg.init)
        tokenizer = load_tokenizer(cfg.tokenizer or init)
        model = load_model(init, head="classification", num_labels=num_labels, dropout=cfg.dropout)
        assert isinstance(model, BertForClassification)
        return model, tokenizer
    if not cfg.tokenizer:
        raise ValueError("training from scratch needs --tokenizer (a folder, a vocab.txt or 'bert-base-uncased')")
    tok_path = model_folder(cfg.tokenizer)
    tokenizer = load_tokenizer(tok_path)
    if (tok_path / "config.json").is_file():  # a model folder: the twin gets exactly its architecture
        model_cfg, _ = read_model_config(tok_path)
    else:
        model_cfg = replace(resolve_model_config(cfg.model), vocab_size=len(tokenizer))
    return BertForClassification(model_cfg.with_dropout(cfg.dropout), num_labels), tokenizer


def finetune_task(cfg: FinetuneConfig, root: str | os.PathLike | None = None) -> TaskData:
    """The examples a fine-tuning config asks for (data.sample.task_sample): the user's own data (train_file or
    dataset, and a test set) or, when it names none, the built-in `task`, a preset of the same loading path."""
    return task_sample(cfg, root)


def run_record(cfg: FinetuneConfig) -> dict[str, Any]:
    """The config as a run records it (finetune_config.json, the model's tinylm_meta.json): cfg.to_dict(), and for
    the user's own data "source" (the file, or hub:NAME) in place of the built-in `task` the field defaults to. The
    run's config hash stays that of cfg.to_dict()."""
    record, source = cfg.to_dict(), LabelledSource.of(cfg)
    if not source.given:
        return record
    return {"source": source.origin, **{k: v for k, v in record.items() if k != "task"}}


@one_writer_per_run
def finetune(
    cfg: FinetuneConfig,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    task_data: TaskData | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Fine-tune, save out/model, evaluate on the task's test sample and write out/metrics.json.

    Under torchrun every rank calls this with the same arguments: training is data-parallel over the ranks,
    rank 0 evaluates (on its device) and writes the run folder, and every rank returns rank 0's metrics.
    """
    dev, world = start(cfg, device)
    # Read and check all input before anything is written, so bad data leaves no partial run behind.
    task = task_data or finetune_task(cfg, root)
    own = LabelledSource.of(cfg).given
    if own and task.duplicates and world.is_main:
        print(f"tinylm: {LabelledSource.of(cfg).origin}: dropped {task.duplicates} duplicate rows (exact repeats, "
              "and training rows whose text is a test text)", file=sys.stderr)
    seed_everything(cfg.seed)
    model, tokenizer = build_classifier(cfg, task.num_labels)
    out = Path(out)
    write_config(world, out, "finetune_config.json", run_record(cfg))
    max_length = min(cfg.max_length, model.cfg.max_position_embeddings)
    ids = encode_examples(tokenizer, task.train, max_length)
    labels = [e.label for e in task.train]
    loop = LoopConfig.of(cfg, f"finetune {task.name} ({'pretrained' if cfg.init else 'scratch'})")
    meta = loop_meta("finetune", cfg)
    if own:  # the user's file may change under the same name: resume only on the same data
        meta["data"] = task_hash(task)
    state = train_loop(
        model,
        lambda e: ClassificationBatches(ids, labels, cfg.batch_size, tokenizer.pad_token_id, cfg.seed, e),
        loop, out, dev, meta, stop_after=stop_after, world=world, compile=cfg.compile,
    )
    result: dict[str, Any] = {
        "task": task.name,
        **({"source": LabelledSource.of(cfg).origin, "duplicates_dropped": task.duplicates} if own else {}),
        "init": str(cfg.init) if cfg.init else None,
        "steps": state.step,
        "train_examples": len(task.train),
        "test_examples": len(task.test),
        "train_seconds": round(state.seconds, 2),
        "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9), 1),
        "final_loss": float(np.mean(state.losses[-20:])) if state.losses else None,
    }
    if state.epoch < cfg.epochs:
        return finish(world, result)  # interrupted on purpose (stop_after): the checkpoint holds the state
    if world.is_main:
        _evaluate_and_save(model, tokenizer, task, cfg, out, max_length, result)
    return finish(world, result, out / "metrics.json")  # every rank: the run folder complete, rank 0's metrics


def _evaluate_and_save(model: BertForClassification, tokenizer: PreTrainedTokenizerFast, task: TaskData,
                       cfg: FinetuneConfig, out: Path, max_length: int, result: dict[str, Any]) -> None:
    """Score the test (and validation) sample into `result`, then write out/rows.json (train.rows), out/model and
    out/metrics.json."""
    # Evaluated where it trained (a GPU evaluates the test sample in seconds); saved from the CPU.
    metrics = evaluate_model(model, tokenizer, task.test, task.label_names, max_length=max_length,
                             precision=cfg.precision)
    result.update(metrics)
    if task.validation:
        scores = evaluate_model(model, tokenizer, task.validation, task.label_names, max_length=max_length,
                                precision=cfg.precision)
        result["validation"] = {"examples": len(task.validation), "accuracy": scores["accuracy"],
                                "macro_f1": scores["macro_f1"]}
    record_rows(out, [e.text for e in task.train], [e.text for e in task.test])
    save_model(model.cpu(), out / "model", tokenizer, label_names=task.label_names,
               extra={"finetune": run_record(cfg), "metrics": metrics})
    write_json(out / "metrics.json", result)
