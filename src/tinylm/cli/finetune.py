"""`tinylm finetune`: fine-tune a classifier (from a pre-trained model or from scratch)."""

from __future__ import annotations

import argparse
import dataclasses

from tinylm.cli.common import add_config_flags, config_from_args, print_json, without_tables
from tinylm.config import FINETUNE_PRESETS, FinetuneConfig
from tinylm.data.user_files import SOURCE_HELP, LabelledSource


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("finetune", help="fine-tune a classifier (from --init, or from scratch) on a built-in "
                                        "task or your own data (--train-file)")
    f.add_argument("--preset", choices=list(FINETUNE_PRESETS), default="cpu")
    f.add_argument("--out", required=True, help="run folder; the model lands in OUT/model; re-run to resume")
    add_config_flags(f, FinetuneConfig, helps=SOURCE_HELP)


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The fine-tuning config of the arguments. With the user's own data a preset's per-label counts (its
    built-in tasks' samples) do not apply: every row is used unless --train-per-label/--test-per-label say."""
    cfg = config_from_args(FinetuneConfig, FINETUNE_PRESETS, args)
    if LabelledSource.of(cfg).given:
        if args.task is not None:
            raise ValueError("give --task or your own data (--train-file or --dataset), not both")
        cfg = dataclasses.replace(cfg, train_per_label=args.train_per_label, test_per_label=args.test_per_label)
    return cfg


def run(args: argparse.Namespace) -> int:
    from tinylm.train.finetune import finetune

    print_json(without_tables(finetune(finetune_config(args), args.out, root=args.data, device=args.device)))
    return 0
