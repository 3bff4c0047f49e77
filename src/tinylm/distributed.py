"""torchrun support: joining the process group, each rank's share of a global batch, rank-0-only side effects.

Data parallelism keeps training the function of (seed, epoch, batch) that one process computes:

- every rank builds the same global batch i of epoch e (a pure function of (seed, e, i): rows, MLM masks) and
  takes rows rank, rank + world, ... of it (`shard_batch`);
- a rank's loss is its own mean loss times world x (its loss terms / the global batch's), where a loss term is
  a masked token (MLM) or a row (classification). DDP averages the gradients over ranks, so the gradient every
  rank applies is the gradient of the global batch's mean loss, as in one process: the count of loss terms is
  known on every rank from the global batch, so no extra communication is needed for it.
- dropout is the one thing that differs from one process: each rank draws its own masks (runtime.step_seed).

Committees are split by member instead (`member_shard`): members never exchange gradients, so each rank trains
its members alone and rank 0 gathers them (train/committee.py).

Outside torchrun (no RANK / WORLD_SIZE in the environment) everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tinylm.model import IGNORE_INDEX

Batch = dict[str, Tensor]
# How long a rank waits for the others at a barrier or collective: rank 0 alone tokenises, evaluates and writes
# reports while the others wait, which can take minutes at paper scale.
DEFAULT_TIMEOUT_S = 3600


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun processes (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def env_world() -> World:
    """The world torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (one process without them)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return SINGLE
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def current_world() -> World:
    """The initialised process group's world, else one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return SINGLE


def is_main_process() -> bool:
    """Whether this process writes shared files: rank 0, or any process outside torchrun."""
    return current_world().is_main and env_world().is_main


def init_distributed(device: torch.device) -> World:
    """Join torchrun's process group once per process: NCCL when training on CUDA, gloo on a CPU.

    A no-op outside torchrun and with one process (`torchrun --nproc-per-node 1` trains like plain `tinylm`).
    """
    if dist.is_available() and dist.is_initialized():
        return current_world()
    env = env_world()
    if not env.distributed:
        return SINGLE
    timeout = timedelta(seconds=float(os.environ.get("TINYLM_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return current_world()


def shutdown_distributed() -> None:
    """Leave the process group (torchrun workers should, before they exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (it builds and writes a tokenizer or a cache), then the others (they read it)."""
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)


# ----- data parallelism -----


def loss_terms(labels: Tensor) -> int:
    """Loss terms in a batch's labels: masked tokens ([B, L] MLM labels) or labelled rows ([B] class ids)."""
    return int((labels != IGNORE_INDEX).sum())


def shard_batch(batch: Batch, world: World) -> tuple[Batch, float]:
    """This rank's rows (rank::world) of a global batch, and its loss weight world x (its terms / all terms).

    Columns are not trimmed to the shard's longest row: the rows see the same padding as in one process, which
    keeps the conv variants' batch statistics (they include padding) the same. A rank left without rows (a last
    batch with fewer rows than ranks) runs row 0 with weight 0: DDP needs every rank in every step.
    """
    rows = torch.arange(world.rank, batch["input_ids"].shape[0], world.size)
    if len(rows) == 0:
        return {k: v[:1] for k, v in batch.items()}, 0.0
    local = {k: v[rows] for k, v in batch.items()}
    total = loss_terms(batch["labels"])
    return local, world.size * loss_terms(local["labels"]) / total if total else 0.0


def weighted_loss(out: object, weight: float) -> Tensor:
    """The loss a rank back-propagates: its mean loss x weight; with weight 0 (no loss terms, where the mean is
    NaN) a zero that still reaches every parameter, so DDP gets every gradient."""
    if weight == 0.0:
        return out.logits.float().sum() * 0.0  # type: ignore[attr-defined]
    return out.loss * weight  # type: ignore[attr-defined]


def global_mean_loss(local_loss: Tensor, weight: float, world: World) -> Tensor:
    """The global batch's mean loss from each rank's mean over its own terms (for logs, not for gradients)."""
    part = local_loss.detach().float() * (weight / world.size) if weight else torch.zeros((), device=local_loss.device)
    dist.all_reduce(part)
    return part


def data_parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when there are several ranks (itself otherwise).

    On CUDA the conv variants' BatchNorms become SyncBatchNorms, so their batch statistics are the global
    batch's as in one process (SyncBatchNorm has no CPU kernel: on gloo each rank normalises over its rows).
    The same Parameter objects stay in `model`, so an optimizer built on it and its state_dict are unchanged.
    """
    if not world.distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


# ----- committees: members split over ranks -----


def member_shard(members: int, world: World) -> range:
    """The members this rank trains: a contiguous block, sizes differing by at most one (empty if members <
    ranks). Member j keeps its index, so its seed is the one it has in a single-process committee."""
    return range(world.rank * members // world.size, (world.rank + 1) * members // world.size)
