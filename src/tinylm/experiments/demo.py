"""`tinylm demo`: the paper's first claim in a few minutes, on data the package ships.

Pre-trains a tiny BERT with MLM on Wikipedia openings, fine-tunes it on AG News, fine-tunes a from-scratch
twin (same architecture, tokenizer, data, seed and recipe) and reports both accuracies and the gap.
The demo sample (src/tinylm/demo_data) is built from the real data by scripts/build_demo_data.py and uses the
same layout, so the same loaders read it.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from tinylm.config import FINETUNE_PRESETS, PRETRAIN_PRESETS, replace
from tinylm.data.paths import DEMO_DATA
from tinylm.io import write_json
from tinylm.train.finetune import finetune
from tinylm.train.pretrain import pretrain


def run_demo(out: str | os.PathLike, *, seed: int = 42, device: str | None = None,
             root: str | os.PathLike = DEMO_DATA) -> dict[str, Any]:
    out = Path(out)
    started = time.perf_counter()
    # The shipped vocabulary makes the demo bit-reproducible (a freshly trained one can differ by a few tokens).
    shipped = Path(root).resolve() == DEMO_DATA.resolve()
    pre_cfg = replace(PRETRAIN_PRESETS["demo"], seed=seed, tokenizer="tinylm-wiki-4k" if shipped else "train")
    pre = pretrain(pre_cfg, out / "pretrain", root=root, device=device)

    ft_cfg = replace(FINETUNE_PRESETS["demo"], task="ag_news", seed=seed)
    pretrained = finetune(replace(ft_cfg, init=str(out / "pretrain")), out / "finetune-pretrained",
                          root=root, device=device)
    # The twin reads the pre-trained folder only for its tokenizer and architecture; its weights are fresh.
    scratch = finetune(replace(ft_cfg, tokenizer=str(out / "pretrain")), out / "finetune-scratch",
                       root=root, device=device)

    def brief(r: dict[str, Any]) -> dict[str, Any]:
        return {k: r[k] for k in ("accuracy", "macro_f1", "train_seconds", "final_loss", "test_examples")}

    results = {
        "pretrained": brief(pretrained),
        "scratch": brief(scratch),
        "gap": round(pretrained["accuracy"] - scratch["accuracy"], 4),
        "pretrain": {k: pre[k] for k in ("articles", "steps", "final_loss", "tokens_per_s", "seconds")},
        "config": {"pretrain": pre_cfg.to_dict(), "finetune": ft_cfg.to_dict()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "results.json", results)
    return results
