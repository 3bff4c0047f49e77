"""Pre-training and fine-tuning a committee: N members trained together as one stacked module.

Each member is an independent model: its own seed gives it its own initialisation, its own data order, its own
MLM masks (pre-training) and its own classifier head (fine-tuning); one optimizer step trains all N (the loss is
the sum of the member losses, the parameters are disjoint). The members share the data (the same pre-training
subset and task sample) and the tokenizer, as the paper's committee members do. Runs resume like single-model
runs (training.train_loop); the result is one committee folder (committee.save_committee).

Under torchrun the members are split over the ranks (distributed.member_shard): each rank trains its block of
members alone (no gradient traffic: members share nothing), with each member's own seed, so every member gets
the data order, masks and initialisation it has in a single-process committee. Each block checkpoints to
OUT/shards/members-A-B (resumable with the same process count); rank 0 then gathers the blocks' final weights
(and, after fine-tuning, their test probabilities) into the one committee folder. Dropout is drawn per block,
so with dropout on, a split committee matches a single-process one in distribution; without dropout its
weights are the same up to float rounding (tests/test_distributed.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from tinylm.checkpoint import write_json
from tinylm.committee import (
    Committee,
    _build_member,
    clip_grad_norm_per_member_,
    hard_vote,
    load_committee,
    make_committee_optimizer,
    predict_member_proba,
    save_committee,
    soft_vote,
    stack_member_batches,
)
from tinylm.config import FinetuneConfig, ModelConfig, PretrainConfig, config_hash, replace, resolve_model_config
from tinylm.data import TaskData
from tinylm.distributed import World, barrier, init_distributed, member_shard
from tinylm.inference.evaluate import classification_metrics
from tinylm.runtime import configure_threads, pick_device
from tinylm.tokenizer import load_tokenizer
from tinylm.train.finetune import ClassificationBatches, encode_examples, finetune_task
from tinylm.train.loop import CHECKPOINT, Batch, LoopConfig, LoopState, train_loop
from tinylm.train.mlm_quality import quality_or_reason
from tinylm.train.pretrain import MLMBatches, encode_cached, model_folder, prepare_pretraining
from tinylm.validation import check, integer, validate

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


# ----- members split over torchrun ranks -----


def shard_dir(out: Path, part: range) -> Path:
    """Where the block of members `part` trains under torchrun (its checkpoint, log and test probabilities)."""
    return out / "shards" / f"members-{part.start}-{part.stop}"


def _blocks(members: int, world: World) -> list[range]:
    return [b for b in (member_shard(members, World(r, world.size)) for r in range(world.size)) if b]


def gather_committee(shard_dirs: Sequence[Path], cfg: ModelConfig, head: str, num_labels: int | None = None,
                     label_names: list[str] | None = None) -> Committee:
    """One committee from the final checkpoints of consecutive member blocks (stacked tensors concatenated on
    the member axis, in block order)."""
    states = [load_file(str(d / CHECKPOINT / "model.safetensors")) for d in shard_dirs]
    with torch.device("meta"):
        param_names = {name for name, _ in _build_member(cfg, head, num_labels).named_parameters()}
    params: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    for key in states[0]:
        name = key.removeprefix("members.")
        stacked = torch.cat([s[key] for s in states])
        if name in param_names:
            params[name] = stacked.requires_grad_(True)
        else:
            buffers[name] = stacked
    n = next(iter(params.values())).shape[0]
    return Committee(cfg, n, params, buffers, head=head, num_labels=num_labels, label_names=label_names)


def _shard_summaries(out: Path, members: int, world: World) -> list[dict[str, Any]]:
    return [json.loads((shard_dir(out, b) / "summary.json").read_text()) for b in _blocks(members, world)]


def _combined_training(shards: Sequence[dict[str, Any]], seconds_key: str) -> dict[str, Any]:
    """The whole committee's training numbers from its blocks': they ran side by side, so seconds is the
    slowest block's and the member loss the member-weighted mean."""
    n = sum(s["members"] for s in shards)
    seconds = max(s[seconds_key] for s in shards)
    tokens = sum(s["tokens"] for s in shards)
    losses = [s["final_member_loss"] for s in shards]
    loss = None if None in losses else sum(s["members"] * s["final_member_loss"] for s in shards) / n
    return {
        "steps": shards[0]["steps"], "epochs_done": min(s["epochs_done"] for s in shards), "final_member_loss": loss,
        "tokens": tokens, seconds_key: seconds, "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
    }


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


def _block_summary(part: range, state: LoopState, seconds_key: str) -> dict[str, Any]:
    return {"members": len(part), "first_member": part.start, "steps": state.step, "epochs_done": state.epoch,
            "final_member_loss": float(np.mean(state.losses[-20:])) if state.losses else None,
            "tokens": state.tokens, seconds_key: round(state.seconds, 2)}


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
    configure_threads()
    dev = pick_device(device)
    world = init_distributed(dev)
    out = Path(out)
    # One vocabulary and one token cache for every member.
    articles, tokenizer, ids, model_cfg = prepare_pretraining(cfg, out, root, world,
                                                              {**cfg.to_dict(), "members": members})
    seeds = member_seeds(cfg.seed, members)

    def build(part: range) -> tuple[Committee, Any]:
        block_seeds = seeds[part.start:part.stop]
        member_cfgs = [replace(cfg, seed=s) for s in block_seeds]

        def epoch_batches(e: int) -> StackedBatches:
            return StackedBatches([MLMBatches(ids, tokenizer, c, e) for c in member_cfgs], tokenizer.pad_token_id)

        return Committee.init(model_cfg, len(part), block_seeds, head="mlm"), epoch_batches

    def loop_cfg(part: range) -> LoopConfig:  # the block's dropout stream follows its first member's seed
        label = f"{members}" if len(part) == members else f"members {part.start}-{part.stop - 1} of {members}"
        return _loop_config(replace(cfg, seed=seeds[part.start]), f"pretrain {label} x {cfg.model}")

    meta = {"recipe": "pretrain_committee", "config": config_hash(cfg), "members": members}
    part, run_out, committee, state = _train_members(world, members, out, meta, build, loop_cfg, dev, stop_after)
    info = {"articles": len(articles), "vocab_size": len(tokenizer), "device": str(dev)}
    if not world.distributed:
        assert committee is not None and state is not None
        summary = {"members": members, **_combined_training([_block_summary(part, state, "seconds")], "seconds"),
                   **info}
        if state.epoch >= cfg.epochs:
            summary["member_quality"] = member_quality(committee, cfg, tokenizer, ids, len(articles), root)
            save_committee(committee.cpu(), out / "model", tokenizer,
                           extra={"pretrain": cfg.to_dict(), "member_seeds": seeds, "summary": summary})
            write_json(out / "summary.json", summary)
        return summary

    if state is not None:
        write_json(run_out / "summary.json", _block_summary(part, state, "seconds"))
    barrier(world)
    summary = {"members": members, **_combined_training(_shard_summaries(out, members, world), "seconds"), **info,
               "processes": world.size}
    if world.is_main and summary["epochs_done"] >= cfg.epochs:
        blocks = [shard_dir(out, b) for b in _blocks(members, world)]
        gathered = gather_committee(blocks, model_cfg, "mlm")
        summary["member_quality"] = member_quality(gathered, cfg, tokenizer, ids, len(articles), root)
        save_committee(gathered, out / "model", tokenizer,
                       extra={"pretrain": cfg.to_dict(), "member_seeds": seeds, "summary": summary})
        write_json(out / "summary.json", summary)
    barrier(world)
    return summary


def member_quality(committee: Committee, cfg: PretrainConfig, tokenizer: Any, ids: np.ndarray, articles: int,
                   root: str | os.PathLike | None) -> list[dict[str, Any]]:
    """Each member's held-out MLM quality (mlm_quality), scored as the single model it is."""
    return [quality_or_reason(committee.member(i), tokenizer, ids, articles, cfg.seq_len, root=root,
                              data_seed=cfg.data_seed, source=cfg.data_source, encode=encode_cached)
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
    validate(cfg)  # again, as finetune does: fields can be set after the config was built
    configure_threads()
    dev = pick_device(device)
    world = init_distributed(dev)
    task = task_data or finetune_task(cfg, root)
    tokenizer = _committee_tokenizer(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        write_json(out / "finetune_config.json", {**cfg.to_dict(), "members": members})
    seeds = member_seeds(cfg.seed, members)
    texts = [e.text for e in task.test]
    labels = [e.label for e in task.train]
    built: dict[str, Any] = {}

    def build(part: range) -> tuple[Committee, Any]:
        committee, _ = classification_committee(cfg, members, task.num_labels, task.label_names, part)
        max_length = min(cfg.max_length, committee.cfg.max_position_embeddings)
        ids = encode_examples(tokenizer, task.train, max_length)
        built.update(max_length=max_length, cfg=committee.cfg)
        block_seeds = seeds[part.start:part.stop]

        def epoch_batches(e: int) -> StackedBatches:
            return StackedBatches([ClassificationBatches(ids, labels, cfg.batch_size, tokenizer.pad_token_id, s, e)
                                   for s in block_seeds], tokenizer.pad_token_id)

        return committee, epoch_batches

    kind = "pretrained" if cfg.init else "scratch"

    def loop_cfg(part: range) -> LoopConfig:
        label = f"{members} members" if len(part) == members else f"members {part.start}-{part.stop - 1} of {members}"
        return _loop_config(replace(cfg, seed=seeds[part.start]), f"finetune {task.name} ({label}, {kind})")

    meta = {"recipe": "finetune_committee", "config": config_hash(cfg), "members": members}
    part, run_out, committee, state = _train_members(world, members, out, meta, build, loop_cfg, dev, stop_after)
    info = {"task": task.name, "init": str(cfg.init) if cfg.init else None, "members": members}
    sizes = {"train_examples": len(task.train), "test_examples": len(task.test)}
    y = np.array([e.label for e in task.test])

    if not world.distributed:
        assert committee is not None and state is not None
        training = _combined_training([_block_summary(part, state, "train_seconds")], "train_seconds")
        result: dict[str, Any] = {**info, "steps": training["steps"], **sizes,
                                  "train_seconds": training["train_seconds"], "tokens_per_s": training["tokens_per_s"]}
        if state.epoch < cfg.epochs:
            return result
        probs = predict_member_proba(committee, tokenizer, texts, max_length=built["max_length"],
                                     precision=cfg.precision)
        return _finish(result, committee.cpu(), probs, y, task.label_names, tokenizer, cfg, seeds, out)

    if state is not None:
        block = _block_summary(part, state, "train_seconds")
        if state.epoch >= cfg.epochs:  # each rank scores its own members, on its own device
            np.save(run_out / "member_probs.npy", predict_member_proba(
                committee, tokenizer, texts, max_length=built["max_length"], precision=cfg.precision))
        write_json(run_out / "summary.json", block)
    barrier(world)
    training = _combined_training(_shard_summaries(out, members, world), "train_seconds")
    result = {**info, "steps": training["steps"], **sizes, "train_seconds": training["train_seconds"],
              "tokens_per_s": training["tokens_per_s"], "processes": world.size}
    if training["epochs_done"] < cfg.epochs:
        barrier(world)
        return result
    if world.is_main:
        blocks = [shard_dir(out, b) for b in _blocks(members, world)]
        source_cfg = built.get("cfg") or committee_config(cfg, len(tokenizer))
        full = gather_committee(blocks, source_cfg, "classification", task.num_labels, task.label_names)
        probs = np.concatenate([np.load(b / "member_probs.npy") for b in blocks])
        _finish(result, full, probs, y, task.label_names, tokenizer, cfg, seeds, out)
    barrier(world)
    return json.loads((out / "metrics.json").read_text())


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


def _finish(result: dict[str, Any], committee: Committee, probs: np.ndarray, y: np.ndarray, label_names: list[str],
            tokenizer: Any, cfg: FinetuneConfig, seeds: list[int], out: Path) -> dict[str, Any]:
    """Votes and member accuracies on the test sample; writes out/model, the probabilities and metrics.json."""
    np.save(out / "member_probs.npy", probs)
    np.save(out / "test_labels.npy", y)
    soft = classification_metrics(y, soft_vote(probs).argmax(-1).numpy(), label_names)
    result.update({
        "member_accuracies": [float((p.argmax(-1) == y).mean()) for p in probs],
        "soft_vote": {"accuracy": soft["accuracy"], "macro_f1": soft["macro_f1"]},
        "hard_vote_accuracy": float((hard_vote(probs).numpy() == y).mean()),
    })
    save_committee(committee, out / "model", tokenizer, label_names=label_names,
                   extra={"finetune": cfg.to_dict(), "member_seeds": seeds,
                          "metrics": {k: result[k] for k in ("soft_vote", "hard_vote_accuracy")}})
    write_json(out / "metrics.json", result)
    return result
