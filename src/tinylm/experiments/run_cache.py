"""Runs cached by their content: an interrupted or extended sweep re-uses every finished run.

A run lives in RUNS/<kind>-<hash>/; it is finished when its result file exists (written last, atomically),
and an unfinished one resumes from its own checkpoint, since the training loop is resumable. The hash covers
the config, what its model preset contains and what its tokenizer's vocabulary contains: a preset or a
vocabulary edited under the same name makes new runs instead of returning runs trained under other settings.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tinylm.config import MODEL_PRESETS, FinetuneConfig, PretrainConfig, config_hash
from tinylm.data.errors import DataError
from tinylm.distributed import env_world
from tinylm.tokenizer import vocabulary_file
from tinylm.train.finetune import finetune
from tinylm.train.pretrain import pretrain

Item = TypeVar("Item")
# (config, run kind, data root) of one plan item's pre-training: a selected subset's folder is its data root.
Pretraining = tuple[PretrainConfig, str, Any]


def run_dir(runs: Path, kind: str, cfg: PretrainConfig | FinetuneConfig, root: Any = None) -> Path:
    """RUNS/<kind>-<hash> of the config, its model preset's fields and its vocabulary's content.

    An init folder enters the hash by name (a cached run's name is its own content hash), so a moved sweep
    folder keeps its cache; so does a withhold file (tinylm.experiments.overlap_control names it by its content).
    """
    key = cfg.to_dict()
    if key.get("withhold"):
        key["withhold"] = Path(key["withhold"]).name
    if key.get("init"):
        init = Path(key["init"])
        # A snapshot (RUN/snapshots/step-N) is named by its run too: every run has a step-N.
        key["init"] = f"{init.parent.parent.name}/{init.name}" if init.parent.name == "snapshots" else init.name
    else:  # the weights come from the preset and the tokenizer, so their content is part of the run
        key["model_preset"] = MODEL_PRESETS[cfg.model].to_dict()
        if cfg.tokenizer:
            key["vocabulary"] = vocabulary_digest(cfg.tokenizer, root)
    return runs / f"{kind}-{config_hash(key)}"


@contextmanager
def claimed(out: Path, wait: bool = True) -> Iterator[bool]:
    """Hold RUN/.lock while a run is checked and trained, so sweeps sharing a cache (`--shard`) never train the
    same run at once: the second process waits, then finds it finished. wait=False never waits: it yields False
    (holding nothing) when another process holds the lock, so a worker moves on to a run nobody trains yet. Under
    torchrun every rank trains the run together, so no lock is taken there."""
    if env_world().distributed:
        yield True
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def vocabulary_digest(spec: str, root: Any = None) -> str:
    """sha256 of the vocabulary file a tokenizer spec names (tokenizer.vocabulary_file), or the spec itself where no
    file is known yet ('train': a vocabulary trained on the config's own articles; the hub's bert-base-uncased; a
    folder an earlier step writes)."""
    if spec == "train":
        return spec
    try:
        path = vocabulary_file(spec, root)
    except (DataError, FileNotFoundError):
        return spec
    return spec if path is None else hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cached_pretrain(cfg: PretrainConfig, runs: Path, root: Any = None, device: str | None = None,
                    kind: str = "pretrain") -> Path:
    """The finished pre-training run folder for `cfg`, training it first if needed.

    kind prefixes the folder name: a run on other articles than the config names (a data folder holding a
    selected subset, see tinylm.experiments.selection) passes a kind naming that subset, so the caches never mix.
    """
    out = run_dir(runs, kind, cfg, root)
    with claimed(out):
        if not (out / "summary.json").is_file():
            pretrain(cfg, out, root=root, device=device)
    return out


def cached_finetune(cfg: FinetuneConfig, runs: Path, root: Any = None, device: str | None = None,
                    task_data: Any = None) -> dict[str, Any]:
    """The metrics of the finished fine-tuning run for `cfg`, training it first if needed."""
    out = run_dir(runs, "finetune", cfg, root)
    with claimed(out):
        if not (out / "metrics.json").is_file():
            finetune(cfg, out, root=root, device=device, task_data=task_data)
    return {**json.loads((out / "metrics.json").read_text()), "run": out.name}


def work_through(plan: Sequence[Item], shard: tuple[int, int], runs: Path, device: str | None,
                 pretraining: Callable[[Item], Pretraining], finetunes: Callable[[Item, Path], None]) -> None:
    """One of n workers over a sweep's cache (`reproduce ... --shard I/N`): its own share of the plan first (every
    n-th item from i), then the others', skipping any pre-training another worker holds; each pre-trained model's
    fine-tunings (`finetunes(item, run)`) follow it in the same worker. Workers balance themselves, since one that
    finishes early takes the models nobody has started."""
    i, n = shard
    order = [*plan[i::n], *(item for j, item in enumerate(plan) if j % n != i)]
    left = []
    for item in order:
        cfg, kind, root = pretraining(item)
        pre_dir = run_dir(runs, kind, cfg, root)
        if not (pre_dir / "summary.json").is_file():
            with claimed(pre_dir, wait=False) as mine:
                if not mine:  # another worker trains it: its fine-tunings wait for the second pass
                    left.append(item)
                    continue
                if not (pre_dir / "summary.json").is_file():
                    pretrain(cfg, pre_dir, root=root, device=device)
        finetunes(item, pre_dir)
    # The second pass waits for those models (items may share one, e.g. a random subset), then helps fine-tune
    # them; the cache's locks keep two workers off the same fine-tuning.
    for item in left:
        cfg, kind, root = pretraining(item)
        finetunes(item, cached_pretrain(cfg, runs, root, device, kind=kind))
