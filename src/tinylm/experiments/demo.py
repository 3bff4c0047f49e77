"""`tinylm demo`: the paper's first claim in a few minutes, on data the package ships.

Pre-trains a tiny BERT with MLM on Wikipedia openings, fine-tunes it on AG News, fine-tunes a from-scratch
twin (same architecture, tokenizer, data, seed and recipe) and reports both accuracies and the gap. With
`--shipped` it skips pre-training and starts from the shipped pre-trained model instead (about a minute).
The demo sample (src/tinylm/demo_data) is built from the real data by scripts/build_demo_data.py and uses the
same layout, so the same loaders read it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from tinylm.checkpoint import shipped_model
from tinylm.config import FINETUNE_PRESETS, PRETRAIN_PRESETS, SHIPPED_MODELS, replace
from tinylm.data.paths import DEMO_DATA
from tinylm.io import write_json
from tinylm.train.finetune import finetune
from tinylm.train.pretrain import pretrain


def run_demo(out: str | os.PathLike, *, seed: int = 42, device: str | None = None,
             root: str | os.PathLike = DEMO_DATA, shipped_start: bool = False) -> dict[str, Any]:
    """The demo; shipped_start skips pre-training and fine-tunes the shipped model (and its twin) instead."""
    out = Path(out)
    started = time.perf_counter()
    ft_cfg = replace(FINETUNE_PRESETS["demo"], task="ag_news", seed=seed)
    if shipped_start:
        name = next(iter(SHIPPED_MODELS))
        folder = shipped_model(name)
        assert folder is not None
        meta = json.loads((folder / "tinylm_meta.json").read_text())
        pre = {**meta["summary"], "model": name}
        pre_cfg_dict, start = meta["pretrain"], name
    else:
        # The shipped vocabulary makes the demo bit-reproducible (a freshly trained one can differ by a few tokens).
        shipped_data = Path(root).resolve() == DEMO_DATA.resolve()
        pre_cfg = replace(PRETRAIN_PRESETS["demo"], seed=seed, tokenizer="tinylm-wiki-4k" if shipped_data else "train")
        pre = pretrain(pre_cfg, out / "pretrain", root=root, device=device)
        pre_cfg_dict, start = pre_cfg.to_dict(), str(out / "pretrain")

    pretrained = finetune(replace(ft_cfg, init=start), out / "finetune-pretrained", root=root, device=device)
    # The twin reads the pre-trained folder only for its tokenizer and architecture; its weights are fresh.
    scratch = finetune(replace(ft_cfg, tokenizer=start), out / "finetune-scratch", root=root, device=device)

    def brief(r: dict[str, Any]) -> dict[str, Any]:
        return {k: r[k] for k in ("accuracy", "macro_f1", "train_seconds", "final_loss", "test_examples")}

    results = {
        "pretrained": brief(pretrained),
        "scratch": brief(scratch),
        "gap": round(pretrained["accuracy"] - scratch["accuracy"], 4),
        "pretrain": {k: pre[k] for k in ("articles", "steps", "final_loss", "tokens_per_s", "seconds", "model")
                     if k in pre},
        "config": {"pretrain": pre_cfg_dict, "finetune": ft_cfg.to_dict()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "results.json", results)
    return results
