"""`tinylm overlap`: token overlap between a pre-training corpus and labelled data, before any training."""

from __future__ import annotations

import argparse
from typing import Any

from tinylm.cli.common import add_config_flags, print_json, task_or_own_data
from tinylm.cli.pretrain import pretrain_config
from tinylm.config import PRETRAIN_PRESETS, PretrainConfig
from tinylm.data.corpus import CORPUS_HELP
from tinylm.data.user_files import SOURCE_HELP, LabelledSource


def add_parser(sub: argparse._SubParsersAction) -> None:
    o = sub.add_parser("overlap", help="token overlap between a pre-training corpus and labelled data, before "
                                       "training (the tokenizer, documents and windows `pretrain` would use)")
    o.add_argument("--preset", choices=list(PRETRAIN_PRESETS), default="cpu", help="the pre-training preset")
    add_config_flags(o, PretrainConfig, only=("corpus", "text_field", "articles", "tokenizer", "model", "seq_len",
                                              "data_seed", "data_source"), helps=CORPUS_HELP)
    o.add_argument("--task", default=None, help="a built-in task (or your own data: --train-file, ...)")
    add_config_flags(o, LabelledSource, exclude=("validation_fraction",), helps=SOURCE_HELP)
    o.add_argument("--train-per-label", type=int, default=None)
    o.add_argument("--test-per-label", type=int, default=None)


def overlap_measures(args: argparse.Namespace) -> dict[str, Any]:
    """The overlap measures (tinylm.analysis.overlap) between the documents and tokenizer a `pretrain` with the
    same flags would use and the labelled texts (training and test examples)."""
    from tinylm.analysis.overlap import overlap_report
    from tinylm.config import resolve_model_config
    from tinylm.data.user_files import load_task_data
    from tinylm.train.pretrain import pretraining_texts, pretraining_tokenizer

    source = task_or_own_data(args)
    cfg = pretrain_config(args)
    task = load_task_data(source, args.task, args.data, train_per_label=args.train_per_label,
                          test_per_label=args.test_per_label, seed=cfg.data_seed)
    texts = pretraining_texts(cfg, args.data)
    tokenizer = pretraining_tokenizer(cfg, texts, resolve_model_config(cfg.model).vocab_size, args.data)
    labelled = [e.text for e in (*task.train, *task.validation, *task.test)]
    return {"corpus": cfg.corpus or f"wikipedia ({cfg.data_source})", "documents": len(texts), "data": task.name,
            "texts": len(labelled), "tokenizer": cfg.tokenizer, "vocab_size": len(tokenizer), "seq_len": cfg.seq_len,
            "overlap": overlap_report(texts, labelled, tokenizer, cfg.seq_len)}


def run(args: argparse.Namespace) -> int:
    print_json(overlap_measures(args))
    return 0
