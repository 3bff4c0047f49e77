"""The `tinylm` command with the `paper` scales shrunk to a few steps of dropout-free tiny models (tests only).

tests/train/test_distributed.py runs the GPU runbook's commands (docs/gpu_runbook.md) through this file, under
`python -m torch.distributed.run` in place of `torchrun ... -m tinylm.cli`, so that `reproduce all --scale paper`
and `reproduce committee --scale paper` take seconds on a CPU. `install()` puts the same shrunken scales and
presets into a test process for the single-process side of each comparison.

Dropout is off (the `tiny-*` presets) because it is the one thing data-parallel ranks draw differently from
one process; precision is fp32 so that the comparisons see float rounding only.

`--stop-after N` as the first arguments interrupts the first training run after N steps, like a killed job
(the command exits with status 130, as after Ctrl-C; re-running it resumes).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tinylm.config import MODEL_PRESETS, replace
from tinylm.experiments.committee import COMMITTEE_SCALES, CommitteeScale
from tinylm.experiments.scales import SCALES, Scale

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
PRESETS = {
    "tiny-deep": replace(MODEL_PRESETS["demo"], **NO_DROPOUT),  # 2 layers, 128 wide
    "tiny-1": replace(MODEL_PRESETS["cpu-1"], **NO_DROPOUT),  # 1 layer, 128 wide
}


def tiny_scales() -> tuple[Scale, CommitteeScale]:
    """The shrunken `paper` scales; built once the tiny presets are installed, since configs check their model.

    Every shape of global batch: 17 and 41 articles in batches of 8 end with a one-row batch, which leaves one
    of two ranks without rows; 14 x 2 DBpedia texts end with a batch of 4."""
    paper = Scale(
        name="paper",
        sizes=(17, 41),
        pretrain=replace(SCALES["paper"].pretrain, model="tiny-deep", tokenizer="tinylm-wiki-4k", articles=41,
                         seq_len=32, epochs=2, batch_size=8, lr=1e-3, grad_clip=1.0, precision="fp32", save_every=4),
        finetune=replace(SCALES["paper"].finetune, model="tiny-deep", epochs=2, batch_size=8, lr=1e-3,
                         max_length=32, precision="fp32", save_every=4),
        samples={"fewrel": (2, 2), "ag_news": (6, 4), "dbpedia": (2, 2)},
        seeds=1,
    )
    committee = CommitteeScale(
        name="paper", members=3, member_model="tiny-1", deep_model="tiny-deep",  # 3 members: 2 ranks get 1 and 2
        pretrain=replace(paper.pretrain, articles=17), finetune=paper.finetune, samples=paper.samples,
        seeds=1, committee_sizes=(1, 2, 4),
    )
    return paper, committee


@contextmanager
def installed() -> Iterator[None]:
    """The tiny presets and `paper` scales in place of the real ones, for the duration of the block."""
    saved = (dict(MODEL_PRESETS), SCALES["paper"], COMMITTEE_SCALES["paper"])
    install()
    try:
        yield
    finally:
        MODEL_PRESETS.clear()
        MODEL_PRESETS.update(saved[0])
        SCALES["paper"], COMMITTEE_SCALES["paper"] = saved[1], saved[2]


def install() -> None:
    MODEL_PRESETS.update(PRESETS)
    SCALES["paper"], COMMITTEE_SCALES["paper"] = tiny_scales()


def stop_first_run_after(steps: int) -> None:
    """Interrupt the first training run after `steps` steps, as a kill would (checkpoints stay as written)."""
    import tinylm.train.loop as training

    real = training.train_loop

    def loop(*args: Any, **kwargs: Any) -> Any:
        state = real(*args, **{**kwargs, "stop_after": steps})
        raise KeyboardInterrupt(f"stopped after step {state.step}")

    for name in ("tinylm.train.pretrain", "tinylm.train.finetune", "tinylm.train.committee"):
        importlib.import_module(name).train_loop = loop  # the name each recipe calls


if __name__ == "__main__":
    install()
    args = sys.argv[1:]
    if args[:1] == ["--stop-after"]:
        stop_first_run_after(int(args[1]))
        args = args[2:]
    from tinylm.cli import main

    raise SystemExit(main(args))
