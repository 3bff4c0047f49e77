"""The training loop shared by pre-training and fine-tuning, readable top to bottom.

Resumability is by construction: batch i of epoch e is a pure function of (seed, e, i), and dropout is
re-seeded from (seed, step) before every step, so a run resumed from its last checkpoint replays exactly the
steps an unbroken run would have taken.

Under torchrun (`world` with several ranks) the loop is data-parallel (distributed.py): every rank takes its
rows of each global batch and DDP averages the gradients, so the ranks together take the steps one process
would; only rank 0 writes checkpoints, logs and the progress bar, and every rank resumes from them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinylm.config import Precision
from tinylm.distributed import SINGLE, World, data_parallel, global_mean_loss, shard_batch, weighted_loss
from tinylm.io import atomic_dir, write_json
from tinylm.runtime import autocast, effective_precision, step_seed, tune_cpu_allocator

Batch = dict[str, Tensor]
CHECKPOINT = "checkpoint"


@dataclass
class LoopConfig:
    epochs: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    schedule: str  # "step" or "epoch"
    precision: Precision
    seed: int
    save_every: int
    grad_clip: float | None = 1.0
    desc: str = "train"
    tune_allocator: bool = True  # CPU: tune_cpu_allocator (off for committees, see there)

    @classmethod
    def of(cls, cfg: Any, desc: str, tune_allocator: bool = True) -> LoopConfig:
        """The loop settings of a recipe config (config.TrainArgs, which the three recipe configs share)."""
        return cls(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
                   schedule=cfg.schedule, precision=cfg.precision, seed=cfg.seed, save_every=cfg.save_every,
                   grad_clip=cfg.grad_clip or None, desc=desc, tune_allocator=tune_allocator)


@dataclass
class LoopState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch
    batch: int = 0  # next batch index within the epoch
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0


def lr_at(cfg: LoopConfig, step: int, epoch: int, steps_per_epoch: int) -> float:
    """Linear warm-up then linear decay to zero, stepped per optimizer step or (as in the paper's code) per epoch."""
    if cfg.schedule == "epoch":
        t, total = epoch, cfg.epochs
    else:
        t, total = step, cfg.epochs * steps_per_epoch
    warmup = math.ceil(cfg.warmup_ratio * total)
    if t < warmup:
        return cfg.lr * (t + 1) / warmup
    return cfg.lr * max(0.0, (total - t) / max(1, total - warmup))


def make_optimizer(model: nn.Module, cfg: LoopConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights (BERT's convention)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type in ("cuda", "cpu"))


def train_step(
    model: nn.Module,
    batch: Batch,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    device: torch.device,
    grad_clip: float | None,
    clip: Callable[[Any, float], Any] | None = None,
    loss_weight: float | None = None,
) -> Any:
    """One optimizer step on one batch (already on `device`); returns the model's output (loss not synced).

    The loss is computed under autocast for `precision` (bf16 on CPU), gradients are clipped to `grad_clip`
    when it is set (by `clip(model, grad_clip)`; default: one global norm over all parameters), and the scaler
    is a no-op unless precision is fp16. `loss_weight` scales a data-parallel rank's loss to its share of the
    global batch (distributed.weighted_loss). train_loop calls exactly this, the committee calls it with
    per-member clipping, and benchmarks/train_speed.py times exactly this.
    """
    with autocast(device, precision):
        out = model(**batch)
    opt.zero_grad(set_to_none=True)
    loss = out.loss if loss_weight is None else weighted_loss(out, loss_weight)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(opt)
        if clip is None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        else:
            clip(model, grad_clip)
    scaler.step(opt)
    scaler.update()
    return out


def save_checkpoint(out: Path, model: nn.Module, opt: torch.optim.Optimizer, state: LoopState, meta: dict) -> None:
    with atomic_dir(out / CHECKPOINT) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        write_json(tmp / "state.json", {**state.__dict__, "meta": meta})


def load_checkpoint(
    out: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict
) -> LoopState | None:
    ckpt = out / CHECKPOINT
    if not (ckpt / "state.json").is_file():
        return None
    saved = json.loads((ckpt / "state.json").read_text())
    if saved.pop("meta") != meta:
        raise RuntimeError(
            f"{ckpt} was written by a run with a different configuration; use another --out or delete it"
        )
    # Checkpoints hold the bare model's names; older ones of compiled runs carry torch.compile's prefix.
    weights = {k.removeprefix("_orig_mod."): v for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    model.load_state_dict(weights)
    opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    return LoopState(**saved)


def train_loop(
    model: nn.Module,
    epoch_batches: Callable[[int], Sequence[Batch]],
    cfg: LoopConfig,
    out: Path,
    device: torch.device,
    meta: dict[str, Any],
    stop_after: int | None = None,
    *,
    optimizer: Callable[[nn.Module, LoopConfig, torch.device], torch.optim.Optimizer] = make_optimizer,
    clip: Callable[[Any, float], Any] | None = None,
    world: World = SINGLE,
    compile: bool = False,
    progress: bool | None = None,
    after_step: Callable[[LoopState], None] | None = None,
) -> LoopState:
    """Train `model` for cfg.epochs, checkpointing to out/checkpoint and resuming from it if present.

    `epoch_batches(e)` returns the (lazily built) global batches of epoch e. `meta` identifies the run: a
    checkpoint written under different meta is refused. `stop_after` ends the run after that many steps (tests
    use it to simulate a killed run). `optimizer` and `clip` replace the optimizer factory and the gradient
    clipping (a committee decays and clips each member on its own). `world`: data-parallel ranks (torchrun);
    `compile`: run the (DDP-wrapped) model through torch.compile; `progress`: show the bar (default: rank 0).
    `after_step(state)` runs after every optimizer step (pre-training saves its snapshots there).
    `model` itself stays the bare module: its weights are the trained ones on return.
    """
    precision = effective_precision(cfg.precision, device)
    if device.type == "cpu":
        tune_cpu_allocator(cfg.tune_allocator)
    model.to(device).train()
    opt = optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    state = load_checkpoint(out, model, opt, meta) or LoopState()
    step_model = _step_model(model, world, device, compile)
    steps_per_epoch = len(epoch_batches(0))
    total = _total_steps(cfg, steps_per_epoch)
    writes = world.is_main  # checkpoints and logs: one writer, every rank reads them on resume
    bar = tqdm(total=total, initial=state.step, desc=cfg.desc, unit="step", dynamic_ncols=True,
               disable=not (writes if progress is None else progress))
    log = (out / "log.jsonl").open("a") if writes else None

    def step(global_batch: Batch) -> tuple[float, float]:
        """One optimizer step on this rank's rows of a global batch: (loss averaged over ranks, lr)."""
        local, weight = shard_batch(global_batch, world) if world.distributed else (global_batch, None)
        batch = {k: v.to(device, non_blocking=True) for k, v in local.items()}
        torch.manual_seed(step_seed(cfg.seed, state.step, world.rank))  # dropout replays on resume
        lr = lr_at(cfg, state.step, state.epoch, steps_per_epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        out_ = train_step(step_model, batch, opt, scaler, precision, device, cfg.grad_clip, clip, loss_weight=weight)
        loss = out_.logged_loss().detach()
        if weight is not None:
            loss = global_mean_loss(loss, weight, world)
        return loss.item(), lr

    t0 = time.perf_counter()
    while state.epoch < cfg.epochs and not _stopped(state, stop_after):
        epoch, batches = state.epoch, epoch_batches(state.epoch)
        while state.epoch == epoch and state.batch < len(batches) and not _stopped(state, stop_after):
            global_batch = batches[state.batch]
            loss, lr = step(global_batch)
            state.step += 1
            state.batch += 1
            state.losses.append(round(loss, 6))
            state.tokens += int(global_batch["attention_mask"].sum())
            bar.update(1)
            bar.set_postfix(loss=f"{state.losses[-1]:.3f}", epoch=state.epoch + 1)
            if log is not None:
                _log_step(log, state, lr, state.seconds + time.perf_counter() - t0)
            if after_step is not None:
                after_step(state)
            last_of_epoch = state.batch == len(batches)
            if last_of_epoch:
                state.epoch, state.batch = state.epoch + 1, 0
            if last_of_epoch or state.step % cfg.save_every == 0:
                state.seconds, t0 = state.seconds + time.perf_counter() - t0, time.perf_counter()
                if writes:
                    save_checkpoint(out, model, opt, state, meta)
    state.seconds += time.perf_counter() - t0
    bar.close()
    if log is not None:
        log.close()
    return state


def _total_steps(cfg: LoopConfig, steps_per_epoch: int) -> int:
    total = cfg.epochs * steps_per_epoch
    if total < 1:  # the caller would save an untrained model as a trained one
        raise ValueError(f"{cfg.desc}: {cfg.epochs} epochs of {steps_per_epoch} batches is no optimizer step; "
                         "nothing to train on")
    return total


def _step_model(model: nn.Module, world: World, device: torch.device, compile: bool) -> nn.Module:
    """What the steps call: the model, wrapped for data parallelism and compiled when asked."""
    step_model = data_parallel(model, world, device)
    return torch.compile(step_model) if compile else step_model  # type: ignore[return-value]


def _log_step(log: Any, state: LoopState, lr: float, elapsed: float) -> None:
    log.write(json.dumps({"step": state.step, "epoch": state.epoch, "loss": state.losses[-1], "lr": lr,
                          "tokens_per_s": round(state.tokens / max(elapsed, 1e-9), 1)}) + "\n")


def _stopped(state: LoopState, stop_after: int | None) -> bool:
    return stop_after is not None and state.step >= stop_after
