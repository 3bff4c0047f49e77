"""`tinylm finetune`: fine-tune a classifier (from the shipped pre-trained model, another model folder, or from
scratch)."""

from __future__ import annotations

import argparse
import dataclasses

from tinylm.cli.common import add_config_flags, config_from_args, print_json, without_tables
from tinylm.config import FINETUNE_PRESETS, SHIPPED_MODELS, FinetuneConfig
from tinylm.data.user_files import SOURCE_HELP, LabelledSource

SCRATCH = "scratch"  # --init scratch: the shipped model's twin, its architecture and tokenizer with random weights
DEFAULT_MODEL = next(iter(SHIPPED_MODELS))
HELPS = {
    **SOURCE_HELP,
    "init": f"where training starts: a model folder or run, a shipped model ({', '.join(SHIPPED_MODELS)}; "
            f"'shipped' = {DEFAULT_MODEL}), or 'scratch' (random weights, the shipped model's architecture and "
            f"tokenizer). Default: {DEFAULT_MODEL}, unless --tokenizer or --model is given (then from scratch "
            "with those, as before)",
    "tokenizer": "from scratch: a tokenizer (name, folder or vocab.txt); a model folder also gives its architecture",
    "model": "from scratch: the model preset (with --tokenizer); ignored with --init",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("finetune", help=f"fine-tune a classifier (from the shipped {DEFAULT_MODEL} unless --init "
                                        "says otherwise) on a built-in task or your own data (--train-file)")
    # demo: the recipe the shipped model was measured with (docs/pretrained_model.md); the cpu preset's 4 epochs
    # are too few optimizer steps for a file of a few hundred rows.
    f.add_argument("--preset", choices=list(FINETUNE_PRESETS), default="demo",
                   help="the recipe's defaults (`tinylm presets`; default demo: 20 epochs, lr 5e-4, 10 %% warm-up)")
    f.add_argument("--out", required=True, help="run folder; the model lands in OUT/model; re-run to resume")
    add_config_flags(f, FinetuneConfig, helps=HELPS)


def starting_point(cfg: FinetuneConfig, args: argparse.Namespace) -> FinetuneConfig:
    """Where the command's training starts (the library's FinetuneConfig(init=None) always means from scratch):
    no --init is the shipped model, unless the from-scratch flags --tokenizer or --model are given; --init scratch
    is the shipped model's twin (init None, its tokenizer and architecture) unless --tokenizer names another."""
    from tinylm.checkpoint import shipped_name

    if args.init == SCRATCH:
        return dataclasses.replace(cfg, init=None, tokenizer=args.tokenizer or DEFAULT_MODEL)
    if args.init is None and args.tokenizer is None and args.model is None and cfg.init is None:
        return dataclasses.replace(cfg, init=DEFAULT_MODEL)
    return dataclasses.replace(cfg, init=shipped_name(cfg.init) or cfg.init) if cfg.init else cfg


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The fine-tuning config of the arguments. With the user's own data a preset's per-label counts (its
    built-in tasks' samples) do not apply: every row is used unless --train-per-label/--test-per-label say."""
    cfg = starting_point(config_from_args(FinetuneConfig, FINETUNE_PRESETS, args), args)
    if LabelledSource.of(cfg).given:
        if args.task is not None:
            raise ValueError("give --task or your own data (--train-file or --dataset), not both")
        cfg = dataclasses.replace(cfg, train_per_label=args.train_per_label, test_per_label=args.test_per_label)
    return cfg


def run(args: argparse.Namespace) -> int:
    from tinylm.train.finetune import finetune

    print_json(without_tables(finetune(finetune_config(args), args.out, root=args.data, device=args.device)))
    return 0
