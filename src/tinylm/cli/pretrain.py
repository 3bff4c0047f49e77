"""`tinylm pretrain`: MLM pre-training on Wikipedia openings or the user's own corpus, from new weights or
(--init) continuing a model folder's."""

from __future__ import annotations

import argparse

from tinylm.cli.common import add_config_flags, config_from_args, print_json
from tinylm.config import PRETRAIN_PRESETS, SHIPPED_MODELS, PretrainConfig, replace
from tinylm.data.corpus import CORPUS_HELP

HELPS = {
    **CORPUS_HELP,
    "init": f"continue pre-training a model folder or run, or a shipped model ({', '.join(SHIPPED_MODELS)}, or "
            "'shipped'): its weights and its tokenizer; --model defaults to the preset of its shape",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="MLM pre-training on Wikipedia openings or your own corpus (--corpus), "
                                        "from new weights or a model folder's (--init)")
    p.add_argument("--preset", choices=list(PRETRAIN_PRESETS), default="cpu")
    p.add_argument("--out", required=True, help="run folder; the model lands in OUT/model; re-run to resume")
    add_config_flags(p, PretrainConfig, helps=HELPS)


def pretrain_config(args: argparse.Namespace) -> PretrainConfig:
    """The pre-training config of `pretrain` or `overlap`: a --corpus is used whole unless --articles is given
    (a preset's article count is a Wikipedia subset's size); --init brings its tokenizer and architecture."""
    cfg = config_from_args(PretrainConfig, PRETRAIN_PRESETS, args)
    if cfg.corpus and args.articles is None:
        from tinylm.data.corpus import count_documents

        cfg = replace(cfg, articles=count_documents(cfg.corpus, cfg.text_field))
    if getattr(args, "init", None):
        cfg = continued(cfg, args)
    return cfg


def continued(cfg: PretrainConfig, args: argparse.Namespace) -> PretrainConfig:
    """A --init run's config: the init by its shipped name if it has one, its tokenizer recorded as the run's, and
    the model preset of its shape unless --model names one (train.pretrain.init_architecture checks it)."""
    from tinylm.checkpoint import model_folder, read_model_config, shipped_name
    from tinylm.train.pretrain import preset_of_shape

    if args.tokenizer is not None:
        raise ValueError("--init brings its own tokenizer; leave --tokenizer out")
    init = shipped_name(args.init) or args.init
    folder = model_folder(init)
    model = args.model
    if model is None:
        folder_cfg, _ = read_model_config(folder)
        model = preset_of_shape(folder_cfg)
        if model is None:
            raise ValueError(f"{args.init}: no model preset has its shape; `tinylm presets` lists them")
    return replace(cfg, init=init, tokenizer=init if shipped_name(init) else str(folder), model=model)


def run(args: argparse.Namespace) -> int:
    from tinylm.train.pretrain import pretrain

    print_json(pretrain(pretrain_config(args), args.out, root=args.data, device=args.device))
    return 0
