"""Pre-training and fine-tuning a committee: N members trained together as one stacked module.

Each member is an independent model: its own seed gives it its own initialisation, its own data order, its own
MLM masks (pre-training) and its own classifier head (fine-tuning); one optimizer step trains all N (the loss is
the sum of the member losses, the parameters are disjoint). The members share the data (the same pre-training
subset and task sample) and the tokenizer, as the paper's committee members do. Runs resume like single-model
runs (training.train_loop); the result is one committee folder (committee.save_committee).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.checkpoint import write_json
from tinylm.committee import (
    Committee,
    clip_grad_norm_per_member_,
    hard_vote,
    load_committee,
    make_committee_optimizer,
    predict_member_proba,
    save_committee,
    soft_vote,
    stack_member_batches,
)
from tinylm.config import FinetuneConfig, PretrainConfig, config_hash, replace, resolve_model_config
from tinylm.data import TaskData, load_articles, load_task
from tinylm.evaluate import classification_metrics
from tinylm.finetune import ClassificationBatches, encode_examples
from tinylm.pretrain import MLMBatches, build_tokenizer, encode_cached, model_folder
from tinylm.runtime import configure_threads, pick_device
from tinylm.tokenizer import load_tokenizer
from tinylm.training import Batch, LoopConfig, train_loop

MEMBER_SEED_STRIDE = 1000  # member j of a committee with seed s trains with seed s + 1000 j


def member_seeds(seed: int, n: int) -> list[int]:
    """The members' seeds; member 0 shares the committee's seed, so it matches a single run with that seed."""
    return [seed + MEMBER_SEED_STRIDE * j for j in range(n)]


class StackedBatches(Sequence[Batch]):
    """Batch i of every member's own epoch, stacked to one committee batch [N, B, L]."""

    def __init__(self, member_batches: Sequence[Sequence[Batch]], pad_id: int):
        lengths = {len(b) for b in member_batches}
        if len(lengths) != 1:
            raise ValueError(f"members have different batch counts {sorted(lengths)}")
        self.member_batches, self.pad_id = member_batches, pad_id

    def __len__(self) -> int:
        return len(self.member_batches[0])

    def __getitem__(self, i: int) -> Batch:  # type: ignore[override]
        return stack_member_batches([b[i] for b in self.member_batches], self.pad_id)


def _loop_config(cfg: PretrainConfig | FinetuneConfig, desc: str) -> LoopConfig:
    return LoopConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
                      schedule=cfg.schedule, precision=cfg.precision, seed=cfg.seed, save_every=cfg.save_every,
                      grad_clip=cfg.grad_clip or None, desc=desc)


def _committee_optimizer(model: Any, cfg: LoopConfig, device: torch.device) -> torch.optim.Optimizer:
    return make_committee_optimizer(model, cfg.lr, cfg.weight_decay, device)


def _train(committee: Committee, epoch_batches: Any, loop: LoopConfig, out: Path, device: torch.device,
           meta: dict[str, Any], stop_after: int | None) -> Any:
    return train_loop(committee, epoch_batches, loop, out, device, meta, stop_after=stop_after,
                      optimizer=_committee_optimizer, clip=clip_grad_norm_per_member_)


def pretrain_committee(
    cfg: PretrainConfig,
    members: int,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """MLM pre-training of `members` models of cfg.model on the same articles; the committee lands in out/model."""
    if members < 1:
        raise ValueError("a committee needs at least one member")
    configure_threads()
    articles = load_articles(cfg.articles, seed=cfg.data_seed, root=root, source=cfg.data_source)
    texts = [a.text for a in articles]
    base = resolve_model_config(cfg.model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pretrain_config.json", {**cfg.to_dict(), "members": members})
    dev = pick_device(device)
    tokenizer = build_tokenizer(cfg, texts, base.vocab_size, out, root)  # one vocabulary for every member
    model_cfg = replace(base, vocab_size=len(tokenizer))
    ids = encode_cached(tokenizer, texts, cfg.seq_len)
    seeds = member_seeds(cfg.seed, members)
    committee = Committee.init(model_cfg, members, seeds, head="mlm")
    member_cfgs = [replace(cfg, seed=s) for s in seeds]

    def epoch_batches(e: int) -> StackedBatches:
        return StackedBatches([MLMBatches(ids, tokenizer, c, e) for c in member_cfgs], tokenizer.pad_token_id)

    meta = {"recipe": "pretrain_committee", "config": config_hash(cfg), "members": members}
    state = _train(committee, epoch_batches, _loop_config(cfg, f"pretrain {members} x {cfg.model}"), out, dev, meta,
                   stop_after)
    summary = {
        "members": members, "steps": state.step, "epochs_done": state.epoch,
        "final_member_loss": float(np.mean(state.losses[-20:])) if state.losses else None,  # mean member
        "tokens": state.tokens, "seconds": round(state.seconds, 2),
        "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9), 1),
        "articles": len(articles), "vocab_size": len(tokenizer), "device": str(dev),
    }
    if state.epoch >= cfg.epochs:
        save_committee(committee.cpu(), out / "model", tokenizer,
                       extra={"pretrain": cfg.to_dict(), "member_seeds": seeds, "summary": summary})
        write_json(out / "summary.json", summary)
    return summary


def classification_committee(cfg: FinetuneConfig, members: int, num_labels: int, label_names: list[str]) -> tuple:
    """Fresh classification members (seeded per member) with the encoders of cfg.init's committee, or from
    scratch with cfg.tokenizer's vocabulary and cfg.model's shape. Returns (committee, tokenizer)."""
    seeds = member_seeds(cfg.seed, members)
    if cfg.init:
        source = load_committee(model_folder(cfg.init))
        if source.n < members:
            raise ValueError(f"{cfg.init} has {source.n} members; {members} asked for")
        tokenizer = load_tokenizer(cfg.tokenizer or model_folder(cfg.init))
        committee = Committee.init(source.cfg, members, seeds, num_labels=num_labels, label_names=label_names)
        encoders = source.stacked(range(members))
        with torch.no_grad():
            for name, t in committee.stacked().items():
                if name.startswith("bert."):
                    t.copy_(encoders[name])
        return committee, tokenizer
    if not cfg.tokenizer:
        raise ValueError("a committee from scratch needs --tokenizer (a folder, a vocab.txt or 'bert-base-uncased')")
    tokenizer = load_tokenizer(model_folder(cfg.tokenizer))
    model_cfg = replace(resolve_model_config(cfg.model), vocab_size=len(tokenizer))
    return Committee.init(model_cfg, members, seeds, num_labels=num_labels, label_names=label_names), tokenizer


def finetune_committee(
    cfg: FinetuneConfig,
    members: int,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    task_data: TaskData | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Fine-tune every member on the task sample (own order and head per member), then evaluate each member
    and the soft and hard votes on the test sample. Writes out/model, out/member_probs.npy and out/metrics.json."""
    configure_threads()
    task = task_data or load_task(
        cfg.task, root, train_per_label=cfg.train_per_label, test_per_label=cfg.test_per_label,
        seed=cfg.data_seed, fewrel_markers=cfg.fewrel_markers, source=cfg.data_source,
    )
    committee, tokenizer = classification_committee(cfg, members, task.num_labels, task.label_names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "finetune_config.json", {**cfg.to_dict(), "members": members})
    dev = pick_device(device)
    max_length = min(cfg.max_length, committee.cfg.max_position_embeddings)
    ids = encode_examples(tokenizer, task.train, max_length)
    labels = [e.label for e in task.train]
    seeds = member_seeds(cfg.seed, members)

    def epoch_batches(e: int) -> StackedBatches:
        return StackedBatches([ClassificationBatches(ids, labels, cfg.batch_size, tokenizer.pad_token_id, s, e)
                               for s in seeds], tokenizer.pad_token_id)

    meta = {"recipe": "finetune_committee", "config": config_hash(cfg), "members": members}
    kind = "pretrained" if cfg.init else "scratch"
    state = _train(committee, epoch_batches, _loop_config(cfg, f"finetune {cfg.task} ({members} members, {kind})"),
                   out, dev, meta, stop_after)
    result: dict[str, Any] = {
        "task": cfg.task, "init": str(cfg.init) if cfg.init else None, "members": members, "steps": state.step,
        "train_examples": len(task.train), "test_examples": len(task.test),
        "train_seconds": round(state.seconds, 2),
        "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9), 1),
    }
    if state.epoch < cfg.epochs:
        return result
    committee.cpu()
    probs = predict_member_proba(committee, tokenizer, [e.text for e in task.test], max_length=max_length,
                                 precision=cfg.precision)
    y = np.array([e.label for e in task.test])
    np.save(out / "member_probs.npy", probs)
    np.save(out / "test_labels.npy", y)
    soft = classification_metrics(y, soft_vote(probs).argmax(-1).numpy(), task.label_names)
    result.update({
        "member_accuracies": [float((p.argmax(-1) == y).mean()) for p in probs],
        "soft_vote": {"accuracy": soft["accuracy"], "macro_f1": soft["macro_f1"]},
        "hard_vote_accuracy": float((hard_vote(probs).numpy() == y).mean()),
    })
    save_committee(committee, out / "model", tokenizer, label_names=task.label_names,
                   extra={"finetune": cfg.to_dict(), "member_seeds": seeds,
                          "metrics": {k: result[k] for k in ("soft_vote", "hard_vote_accuracy")}})
    write_json(out / "metrics.json", result)
    return result
