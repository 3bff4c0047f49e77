"""The start and finish every trainer shares (pretrain, finetune, distill, pretrain_committee,
finetune_committee): one writer per run folder (`one_writer_per_run`); the config checked, threads, device and
process group; the config written by rank 0; the loop's meta; and the end where every rank waits for the run
folder and returns rank 0's numbers."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from tinylm.config import config_hash
from tinylm.distributed import SINGLE, World, barrier, env_world, init_distributed
from tinylm.folders import one_writer
from tinylm.io import write_json
from tinylm.runtime import configure_threads, pick_device
from tinylm.validation import validate

Trainer = TypeVar("Trainer", bound=Callable[..., Any])


def one_writer_per_run(trainer: Trainer) -> Trainer:
    """A trainer whose run folder (its `out` argument) has one writer: folders.one_writer held for the whole call,
    so a second process training into the same folder is refused at once, before it writes anything. Under
    torchrun rank 0 holds it for the ranks, which write the folder together."""
    signature = inspect.signature(trainer)

    @functools.wraps(trainer)
    def locked(*args: Any, **kwargs: Any) -> Any:
        if env_world().rank != 0:
            return trainer(*args, **kwargs)
        with one_writer(signature.bind(*args, **kwargs).arguments["out"]):
            return trainer(*args, **kwargs)

    return locked  # type: ignore[return-value]


def start(cfg: Any, device: str | None, *, distributed: bool = True) -> tuple[torch.device, World]:
    """Check `cfg` again (a config's fields can be set after it was built), set the CPU threads, pick the device
    and, under torchrun, join the process group (`distributed=False`: a one-process recipe)."""
    validate(cfg)
    configure_threads()
    dev = pick_device(device)
    return dev, init_distributed(dev) if distributed else SINGLE


def write_config(world: World, out: Path, name: str, record: dict[str, Any]) -> None:
    """The run's config as out/NAME, written by rank 0 (the folder made on every rank)."""
    out.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        write_json(out / name, record)


def loop_meta(recipe: str, cfg: Any, **extra: Any) -> dict[str, Any]:
    """What a run's checkpoint must match to be resumed: the recipe and its config's hash (and `extra`)."""
    return {"recipe": recipe, "config": config_hash(cfg), **extra}


def finish(world: World, result: dict[str, Any], written: Path | None = None) -> dict[str, Any]:
    """Every rank waits until the run folder is complete; ranks other than 0 return what rank 0 wrote to
    `written` (its metrics), or their own `result` without one."""
    barrier(world)
    if written is None or world.is_main:
        return result
    return json.loads(written.read_text())


__all__ = ["finish", "loop_meta", "one_writer_per_run", "start", "write_config"]
