"""`tinylm pretrain`: MLM pre-training on Wikipedia openings or the user's own corpus."""

from __future__ import annotations

import argparse

from tinylm.cli.common import add_config_flags, config_from_args, print_json
from tinylm.config import PRETRAIN_PRESETS, PretrainConfig, replace
from tinylm.data.corpus import CORPUS_HELP


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="MLM pre-training on Wikipedia openings or your own corpus (--corpus)")
    p.add_argument("--preset", choices=list(PRETRAIN_PRESETS), default="cpu")
    p.add_argument("--out", required=True, help="run folder; the model lands in OUT/model; re-run to resume")
    add_config_flags(p, PretrainConfig, helps=CORPUS_HELP)


def pretrain_config(args: argparse.Namespace) -> PretrainConfig:
    """The pre-training config of `pretrain` or `overlap`: a --corpus is used whole unless --articles is given
    (a preset's article count is a Wikipedia subset's size)."""
    cfg = config_from_args(PretrainConfig, PRETRAIN_PRESETS, args)
    if cfg.corpus and args.articles is None:
        from tinylm.data.corpus import count_documents

        cfg = replace(cfg, articles=count_documents(cfg.corpus, cfg.text_field))
    return cfg


def run(args: argparse.Namespace) -> int:
    from tinylm.train.pretrain import pretrain

    print_json(pretrain(pretrain_config(args), args.out, root=args.data, device=args.device))
    return 0
