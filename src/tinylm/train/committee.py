"""Pre-training and fine-tuning a committee: N members trained together as one stacked module.

Each member is an independent model: its own seed gives it its own initialisation, its own data order, its own
MLM masks (pre-training) and its own classifier head (fine-tuning); one optimizer step trains all N (the loss is
the sum of the member losses, the parameters are disjoint). The members share the data (the same pre-training
subset and task sample) and the tokenizer, as the paper's committee members do. Runs resume like single-model
runs (train.loop.train_loop); the result is one committee folder (committee.save_committee).

Under torchrun the members are split over the ranks (distributed.member_shard): each rank trains its block of
members alone (no gradient traffic: members share nothing), with each member's own seed, so every member gets
the data order, masks and initialisation it has in a single-process committee. Each block checkpoints to
OUT/shards/members-A-B (resumable with the same process count); rank 0 then gathers the blocks' final weights
(and, after fine-tuning, their test probabilities) into the one committee folder. Dropout is drawn per block,
so with dropout on, a split committee matches a single-process one in distribution; without dropout its
weights are the same up to float rounding (tests/train/test_distributed.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.checkpoint import model_folder
from tinylm.committee.io import load_committee, save_committee
from tinylm.committee.model import Committee
from tinylm.committee.votes import hard_vote, soft_vote
from tinylm.config import FinetuneConfig, ModelConfig, PretrainConfig, replace, resolve_model_config
from tinylm.data import TaskData
from tinylm.distributed import World, barrier, member_shard
from tinylm.io import write_json
from tinylm.tokenizer import load_tokenizer
from tinylm.train.committee_blocks import (
    block_summary,
    combined_training,
    gather_committee,
    member_blocks,
    shard_dir,
    shard_summaries,
)
from tinylm.train.committee_step import clip_grad_norm_per_member_, make_committee_optimizer, stack_member_batches
from tinylm.train.evaluate import classification_metrics, predict_proba
from tinylm.train.finetune import ClassificationBatches, encode_examples, finetune_task
from tinylm.train.loop import Batch, LoopConfig, LoopState, train_loop
from tinylm.train.mlm_quality import quality_or_reason
from tinylm.train.pretrain import MLMBatches, prepare_pretraining
from tinylm.train.rows import record_rows
from tinylm.train.run import finish, loop_meta, one_writer_per_run, start, write_config
from tinylm.validation import check, integer

MEMBER_SEED_STRIDE = 1000  # member j of a committee with seed s trains with seed s + 1000 j


def _check_members(members: int) -> None:
    """The one committee setting outside its recipe config, checked as the configs check theirs."""
    check("committee", "members", members, integer(1))


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
    return LoopConfig.of(cfg, desc, tune_allocator=False)


def _committee_optimizer(model: Any, cfg: LoopConfig, device: torch.device) -> torch.optim.Optimizer:
    return make_committee_optimizer(model, cfg.lr, cfg.weight_decay, device)


def _train(committee: Committee, epoch_batches: Any, loop: LoopConfig, out: Path, device: torch.device,
           meta: dict[str, Any], stop_after: int | None, progress: bool | None = None) -> LoopState:
    return train_loop(committee, epoch_batches, loop, out, device, meta, stop_after=stop_after,
                      optimizer=_committee_optimizer, clip=clip_grad_norm_per_member_, progress=progress)


def _train_members(
    world: World, members: int, out: Path, meta: dict[str, Any], build: Callable[[range], tuple[Committee, Any]],
    loop_cfg: Callable[[range], LoopConfig], device: torch.device, stop_after: int | None,
) -> tuple[range, Path, Committee | None, LoopState | None]:
    """Train this rank's block of members (all of them in one process) in its own run folder.

    `build(part)` returns (the block's committee, its epoch_batches); returns (part, run folder, committee,
    state), the last two None for a rank without members."""
    part = member_shard(members, world) if world.distributed else range(members)
    run_out = shard_dir(out, part) if world.distributed else out
    if not part:
        return part, run_out, None, None
    run_out.mkdir(parents=True, exist_ok=True)
    committee, epoch_batches = build(part)
    block_meta = {**meta, "shard": [part.start, part.stop]} if world.distributed else meta
    state = _train(committee, epoch_batches, loop_cfg(part), run_out, device, block_meta, stop_after,
                   progress=world.is_main)
    return part, run_out, committee, state


@one_writer_per_run
def pretrain_committee(
    cfg: PretrainConfig,
    members: int,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """MLM pre-training of `members` models of cfg.model on the same articles; the committee lands in out/model.

    Under torchrun the members are split over the ranks (see the module docstring); every rank returns the
    whole committee's summary once out/model is written."""
    _check_members(members)
    if cfg.init:
        raise ValueError("PretrainConfig.init: a committee pre-trains new members; continue one model with pretrain")
    dev, world = start(cfg, device)
    out = Path(out)
    # One vocabulary and one token cache for every member.
    articles, tokenizer, ids, model_cfg = prepare_pretraining(cfg, out, root, world,
                                                              {**cfg.to_dict(), "members": members})
    seeds = member_seeds(cfg.seed, members)
    build, loop_cfg = _pretrainmember_blocks(cfg, members, seeds, model_cfg, tokenizer, ids)
    meta = loop_meta("pretrain_committee", cfg, members=members)
    part, run_out, committee, state = _train_members(world, members, out, meta, build, loop_cfg, dev, stop_after)
    info = {"articles": len(articles), "vocab_size": len(tokenizer), "device": str(dev)}

    def save(done: Committee, summary: dict[str, Any]) -> None:
        summary["member_quality"] = member_quality(done, cfg, tokenizer, ids, len(articles), root)
        save_committee(done.cpu(), out / "model", tokenizer,
                       extra={"pretrain": cfg.to_dict(), "member_seeds": seeds, "summary": summary})
        write_json(out / "summary.json", summary)

    if not world.distributed:
        assert committee is not None and state is not None
        summary = {"members": members, **combined_training([block_summary(part, state, "seconds")], "seconds"),
                   **info}
        if state.epoch >= cfg.epochs:
            save(committee, summary)
        return summary

    if state is not None:
        write_json(run_out / "summary.json", block_summary(part, state, "seconds"))
    barrier(world)
    summary = {"members": members, **combined_training(shard_summaries(out, members, world), "seconds"), **info,
               "processes": world.size}
    if world.is_main and summary["epochs_done"] >= cfg.epochs:
        save(gather_committee([shard_dir(out, b) for b in member_blocks(members, world)], model_cfg, "mlm"), summary)
    return finish(world, summary)


def _pretrainmember_blocks(cfg: PretrainConfig, members: int, seeds: list[int], model_cfg: ModelConfig, tokenizer: Any,
                     ids: np.ndarray) -> tuple[Callable[[range], tuple[Committee, Any]], Callable[[range], LoopConfig]]:
    """How a block of members is pre-trained: (its fresh committee and epoch batches, its loop config)."""
    def build(part: range) -> tuple[Committee, Any]:
        block_seeds = seeds[part.start:part.stop]
        member_cfgs = [replace(cfg, seed=s) for s in block_seeds]

        def epoch_batches(e: int) -> StackedBatches:
            return StackedBatches([MLMBatches(ids, tokenizer, c, e) for c in member_cfgs], tokenizer.pad_token_id)

        return Committee.init(model_cfg, len(part), block_seeds, head="mlm"), epoch_batches

    def loop_cfg(part: range) -> LoopConfig:  # the block's dropout stream follows its first member's seed
        label = f"{members}" if len(part) == members else f"members {part.start}-{part.stop - 1} of {members}"
        return _loop_config(replace(cfg, seed=seeds[part.start]), f"pretrain {label} x {cfg.model}")

    return build, loop_cfg


def member_quality(committee: Committee, cfg: PretrainConfig, tokenizer: Any, ids: np.ndarray, articles: int,
                   root: str | os.PathLike | None) -> list[dict[str, Any]]:
    """Each member's held-out MLM quality (mlm_quality), scored as the single model it is."""
    return [quality_or_reason(committee.member(i), tokenizer, ids, articles, cfg.seq_len, root=root,
                              data_seed=cfg.data_seed, source=cfg.data_source)
            for i in range(committee.n)]


def classification_committee(cfg: FinetuneConfig, members: int, num_labels: int, label_names: list[str],
                             member_ids: Sequence[int] | None = None) -> tuple:
    """Fresh classification members (seeded per member) with the encoders of cfg.init's committee, or from
    scratch with cfg.tokenizer's vocabulary and cfg.model's shape. Returns (committee, tokenizer).

    `member_ids` (default: all) builds only those members of the `members`-strong committee, each with the seed
    and encoder it has there (a torchrun rank's block)."""
    ids = list(range(members)) if member_ids is None else list(member_ids)
    all_seeds = member_seeds(cfg.seed, members)
    seeds = [all_seeds[j] for j in ids]
    tokenizer = _committee_tokenizer(cfg)
    if cfg.init:
        source = load_committee(model_folder(cfg.init))
        if source.n < members:
            raise ValueError(f"{cfg.init} has {source.n} members; {members} asked for")
        committee = Committee.init(source.cfg, len(ids), seeds, num_labels=num_labels, label_names=label_names)
        encoders = source.stacked(ids)
        with torch.no_grad():
            for name, t in committee.stacked().items():
                if name.startswith("bert."):
                    t.copy_(encoders[name])
        return committee, tokenizer
    model_cfg = committee_config(cfg, len(tokenizer))
    return Committee.init(model_cfg, len(ids), seeds, num_labels=num_labels, label_names=label_names), tokenizer


@one_writer_per_run
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
    and the soft and hard votes on the test sample. Writes out/model, out/member_probs.npy and out/metrics.json.

    Under torchrun the members are split over the ranks, each rank evaluates its own members on its device, and
    rank 0 gathers weights and probabilities; every rank returns the same metrics."""
    _check_members(members)
    dev, world = start(cfg, device)
    task = task_data or finetune_task(cfg, root)
    run = _FinetuneRun(cfg, members, task, _committee_tokenizer(cfg), member_seeds(cfg.seed, members), Path(out))
    write_config(world, run.out, "finetune_config.json", {**cfg.to_dict(), "members": members})
    meta = loop_meta("finetune_committee", cfg, members=members)
    part, run_out, committee, state = _train_members(world, members, run.out, meta, run.build, run.loop_cfg, dev,
                                                     stop_after)
    if not world.distributed:
        assert committee is not None and state is not None
        result = run.result(combined_training([block_summary(part, state, "train_seconds")], "train_seconds"))
        if state.epoch < cfg.epochs:
            return result
        probs = run.test_probs(committee)  # on the training device, before the committee moves to the CPU
        return run.finish(result, committee.cpu(), probs)

    if state is not None:
        block = block_summary(part, state, "train_seconds")
        if state.epoch >= cfg.epochs:  # each rank scores its own members, on its own device
            np.save(run_out / "member_probs.npy", run.test_probs(committee))
        write_json(run_out / "summary.json", block)
    barrier(world)
    training = combined_training(shard_summaries(run.out, members, world), "train_seconds")
    result = {**run.result(training), "processes": world.size}
    if training["epochs_done"] < cfg.epochs:
        return finish(world, result)
    if world.is_main:
        run.gather(result, [shard_dir(run.out, b) for b in member_blocks(members, world)])
    finish(world, result)
    return json.loads((run.out / "metrics.json").read_text())  # every rank: what rank 0 wrote


@dataclass
class _FinetuneRun:
    """What one committee fine-tuning run's member blocks, test scoring and results share."""

    cfg: FinetuneConfig
    members: int
    task: TaskData
    tokenizer: Any
    seeds: list[int]
    out: Path
    max_length: int = 0  # set by build: cfg.max_length capped by the members' positions
    model_cfg: ModelConfig | None = None  # set by build

    def build(self, part: range) -> tuple[Committee, Any]:
        """The block `part` of fresh members, and its epoch batches (each member its own order)."""
        cfg, task, pad_id = self.cfg, self.task, self.tokenizer.pad_token_id
        committee, _ = classification_committee(cfg, self.members, task.num_labels, task.label_names, part)
        self.max_length = min(cfg.max_length, committee.cfg.max_position_embeddings)
        self.model_cfg = committee.cfg
        ids = encode_examples(self.tokenizer, task.train, self.max_length)
        labels = [e.label for e in task.train]
        block_seeds = self.seeds[part.start:part.stop]

        def epoch_batches(e: int) -> StackedBatches:
            return StackedBatches([ClassificationBatches(ids, labels, cfg.batch_size, pad_id, s, e)
                                   for s in block_seeds], pad_id)

        return committee, epoch_batches

    def loop_cfg(self, part: range) -> LoopConfig:
        n, kind = self.members, "pretrained" if self.cfg.init else "scratch"
        label = f"{n} members" if len(part) == n else f"members {part.start}-{part.stop - 1} of {n}"
        return _loop_config(replace(self.cfg, seed=self.seeds[part.start]),
                            f"finetune {self.task.name} ({label}, {kind})")

    def test_probs(self, committee: Committee) -> np.ndarray:
        """Each member's probabilities on the test texts, [members, texts, C], on the committee's device."""
        return predict_proba(committee, self.tokenizer, [e.text for e in self.task.test], max_length=self.max_length,
                             precision=self.cfg.precision, per_member=True)

    def result(self, training: dict[str, Any]) -> dict[str, Any]:
        task = self.task
        return {"task": task.name, "init": str(self.cfg.init) if self.cfg.init else None, "members": self.members,
                "steps": training["steps"], "train_examples": len(task.train), "test_examples": len(task.test),
                "train_seconds": training["train_seconds"], "tokens_per_s": training["tokens_per_s"]}

    def gather(self, result: dict[str, Any], blocks: Sequence[Path]) -> dict[str, Any]:
        """Rank 0 after a split run: the whole committee and its test probabilities from the blocks' folders."""
        source_cfg = self.model_cfg or committee_config(self.cfg, len(self.tokenizer))
        full = gather_committee(blocks, source_cfg, "classification", self.task.num_labels, self.task.label_names)
        return self.finish(result, full, np.concatenate([np.load(b / "member_probs.npy") for b in blocks]))

    def finish(self, result: dict[str, Any], committee: Committee, probs: np.ndarray) -> dict[str, Any]:
        """Votes and member accuracies on the test sample; writes out/model, the probabilities and metrics.json."""
        out, label_names = self.out, self.task.label_names
        y = np.array([e.label for e in self.task.test])
        np.save(out / "member_probs.npy", probs)
        np.save(out / "test_labels.npy", y)
        record_rows(out, [e.text for e in self.task.train], [e.text for e in self.task.test])
        soft = classification_metrics(y, soft_vote(probs).argmax(-1).numpy(), label_names)
        result.update({
            "member_accuracies": [float((p.argmax(-1) == y).mean()) for p in probs],
            "soft_vote": {"accuracy": soft["accuracy"], "macro_f1": soft["macro_f1"]},
            "hard_vote_accuracy": float((hard_vote(probs).numpy() == y).mean()),
        })
        save_committee(committee, out / "model", self.tokenizer, label_names=label_names,
                       extra={"finetune": self.cfg.to_dict(), "member_seeds": self.seeds,
                              "metrics": {k: result[k] for k in ("soft_vote", "hard_vote_accuracy")}})
        write_json(out / "metrics.json", result)
        return result


def _committee_tokenizer(cfg: FinetuneConfig) -> Any:
    if cfg.init:
        return load_tokenizer(cfg.tokenizer or model_folder(cfg.init))
    if not cfg.tokenizer:
        raise ValueError("a committee from scratch needs --tokenizer (a folder, a vocab.txt or 'bert-base-uncased')")
    return load_tokenizer(model_folder(cfg.tokenizer))


def committee_config(cfg: FinetuneConfig, vocab_size: int) -> ModelConfig:
    """The member ModelConfig of a fine-tuning committee: its source committee's, or cfg.model's from scratch."""
    if cfg.init:
        return load_committee(model_folder(cfg.init)).cfg
    return replace(resolve_model_config(cfg.model), vocab_size=vocab_size)
