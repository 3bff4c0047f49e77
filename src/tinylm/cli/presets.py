"""`tinylm presets`: the model and recipe presets."""

from __future__ import annotations

import argparse

from tinylm.cli.common import print_json
from tinylm.config import FINETUNE_PRESETS, MODEL_PRESETS, PRETRAIN_PRESETS


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("presets", help="list model and recipe presets")


def run(args: argparse.Namespace) -> int:
    print_json({
        "models": {k: v.to_dict() for k, v in MODEL_PRESETS.items()},
        "pretrain": {k: v.to_dict() for k, v in PRETRAIN_PRESETS.items()},
        "finetune": {k: v.to_dict() for k, v in FINETUNE_PRESETS.items()},
    })
    return 0
