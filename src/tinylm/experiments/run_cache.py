"""Runs cached by their config hash: an interrupted or extended sweep re-uses every finished run.

A run lives in RUNS/<kind>-<hash>/; it is finished when its result file exists (written last, atomically),
and an unfinished one resumes from its own checkpoint, since the training loop is resumable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinylm.config import FinetuneConfig, PretrainConfig, config_hash
from tinylm.train.finetune import finetune
from tinylm.train.pretrain import pretrain


def run_dir(runs: Path, kind: str, cfg: PretrainConfig | FinetuneConfig) -> Path:
    """RUNS/<kind>-<hash>; an init folder enters the hash by name, so a moved sweep folder keeps its cache."""
    key = cfg.to_dict()
    if key.get("init"):
        init = Path(key["init"])
        # A snapshot (RUN/snapshots/step-N) is named by its run too: every run has a step-N.
        key["init"] = f"{init.parent.parent.name}/{init.name}" if init.parent.name == "snapshots" else init.name
    return runs / f"{kind}-{config_hash(key)}"


def cached_pretrain(cfg: PretrainConfig, runs: Path, root: Any = None, device: str | None = None,
                    kind: str = "pretrain") -> Path:
    """The finished pre-training run folder for `cfg`, training it first if needed.

    kind prefixes the folder name: a run on other articles than the config names (a data folder holding a
    selected subset, see tinylm.experiments.selection) passes a kind naming that subset, so the caches never mix.
    """
    out = run_dir(runs, kind, cfg)
    if not (out / "summary.json").is_file():
        pretrain(cfg, out, root=root, device=device)
    return out


def cached_finetune(cfg: FinetuneConfig, runs: Path, root: Any = None, device: str | None = None,
                    task_data: Any = None) -> dict[str, Any]:
    """The metrics of the finished fine-tuning run for `cfg`, training it first if needed."""
    out = run_dir(runs, "finetune", cfg)
    if not (out / "metrics.json").is_file():
        finetune(cfg, out, root=root, device=device, task_data=task_data)
    return {**json.loads((out / "metrics.json").read_text()), "run": out.name}
