"""A committee trained as blocks of members: under torchrun each rank trains one block in its own run folder
(shard_dir), and rank 0 combines the blocks' weights and training numbers; a single process is one block."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from tinylm.committee.model import Committee, build_member
from tinylm.config import ModelConfig
from tinylm.distributed import World, member_shard
from tinylm.train.loop import CHECKPOINT, LoopState


def shard_dir(out: Path, part: range) -> Path:
    """Where the block of members `part` trains under torchrun (its checkpoint, log and test probabilities)."""
    return out / "shards" / f"members-{part.start}-{part.stop}"


def member_blocks(members: int, world: World) -> list[range]:
    """The non-empty blocks of members, one per rank, in rank order."""
    return [b for b in (member_shard(members, World(r, world.size)) for r in range(world.size)) if b]


def gather_committee(shard_dirs: Sequence[Path], cfg: ModelConfig, head: str, num_labels: int | None = None,
                     label_names: list[str] | None = None) -> Committee:
    """One committee from the final checkpoints of consecutive member blocks (stacked tensors concatenated on
    the member axis, in block order)."""
    states = [load_file(str(d / CHECKPOINT / "model.safetensors")) for d in shard_dirs]
    with torch.device("meta"):
        param_names = {name for name, _ in build_member(cfg, head, num_labels).named_parameters()}
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


def shard_summaries(out: Path, members: int, world: World) -> list[dict[str, Any]]:
    """Every block's summary.json, in block order."""
    return [json.loads((shard_dir(out, b) / "summary.json").read_text()) for b in member_blocks(members, world)]


def combined_training(shards: Sequence[dict[str, Any]], seconds_key: str) -> dict[str, Any]:
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


def block_summary(part: range, state: LoopState, seconds_key: str) -> dict[str, Any]:
    """One block's training numbers, as combined_training reads them."""
    return {"members": len(part), "first_member": part.start, "steps": state.step, "epochs_done": state.epoch,
            "final_member_loss": float(np.mean(state.losses[-20:])) if state.losses else None,
            "tokens": state.tokens, seconds_key: round(state.seconds, 2)}
