"""`tinylm distill`: one student trained to match a fine-tuned committee's soft votes."""

from __future__ import annotations

import argparse
import dataclasses

from tinylm.cli.common import add_config_flags, print_json, without_tables
from tinylm.train.distill_config import DISTILL_HELP, DistillConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("distill", help="train one student to match a fine-tuned committee's soft votes "
                                       "(knowledge distillation); the student is an ordinary model folder")
    k.add_argument("--out", required=True, help="run folder; the student lands in OUT/model; re-run to resume")
    add_config_flags(k, DistillConfig, helps=DISTILL_HELP)


def distill_config(args: argparse.Namespace) -> DistillConfig:
    """The distillation config of the flags given (no presets: the teacher's folder supplies the task sample)."""
    if not args.teacher:
        raise ValueError("distill needs --teacher (a fine-tuned committee folder or its run folder)")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(DistillConfig)}
    return DistillConfig(**{k: v for k, v in values.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from tinylm.train.distill import distill

    print_json(without_tables(distill(distill_config(args), args.out, root=args.data, device=args.device)))
    return 0
