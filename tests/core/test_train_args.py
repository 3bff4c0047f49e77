"""One group of loop settings (config.TrainArgs) shared by the three recipe configs: their config hashes, the
order of their fields in to_dict, and their CLI flags are what they were when each recipe declared the fields
itself (the hashes key cached runs and committed results)."""

from __future__ import annotations

import dataclasses

import pytest

from tinylm.cli import build_parser
from tinylm.config import FINETUNE_PRESETS, PRETRAIN_PRESETS, FinetuneConfig, PretrainConfig, TrainArgs, config_hash
from tinylm.train.distill_config import DistillConfig
from tinylm.train.loop import LoopConfig

# Computed with the configs as they were before TrainArgs (commit 44f2d55).
HASHES = {
    "pretrain/paper": "0ad80f398885a55d",
    "pretrain/cpu": "796cb9fef9385600",
    "pretrain/demo": "595bffa9b1595ebb",
    "finetune/paper": "8f36ad1e92f91990",
    "finetune/cpu": "66c7c44ab35b9b92",
    "finetune/demo": "38ef2a49d546a794",
    "distill/default": "b541479a5d35962b",
}
LOOP = ["epochs", "batch_size", "lr", "weight_decay", "warmup_ratio", "schedule", "grad_clip", "precision", "seed",
        "data_seed", "save_every"]
ORDER = {
    PretrainConfig: ["model", "tokenizer", "articles", "seq_len", "mask_prob", *LOOP, "data_source", "compile",
                     "snapshots", "corpus", "text_field"],
    FinetuneConfig: ["task", "init", "model", "tokenizer", "train_per_label", "test_per_label", "fewrel_markers",
                     "max_length", "dropout", *LOOP, "data_source", "compile", "train_file", "test_file",
                     "test_fraction", "validation_fraction", "text_column", "label_column", "dataset", "train_split",
                     "test_split"],
    DistillConfig: ["teacher", "init", "pretrained", "member", "model", "temperature", "alpha", "unlabeled",
                    "unlabeled_texts", "task", "train_per_label", "test_per_label", "max_length", *LOOP, "compile"],
}


def configs() -> dict[str, object]:
    found: dict[str, object] = {f"pretrain/{n}": c for n, c in PRETRAIN_PRESETS.items()}
    found.update({f"finetune/{n}": c for n, c in FINETUNE_PRESETS.items()})
    found["distill/default"] = DistillConfig(teacher="runs/committee")
    return found


@pytest.mark.parametrize("name", sorted(HASHES))
def test_config_hashes_are_unchanged(name):
    assert config_hash(configs()[name]) == HASHES[name]


@pytest.mark.parametrize("cls", list(ORDER), ids=lambda c: c.__name__)
def test_fields_keep_their_reading_order(cls):
    assert [f.name for f in cls.reading_order()] == ORDER[cls]
    cfg = cls(teacher="t") if cls is DistillConfig else cls()
    assert [k for k in cfg.to_dict()] == [k for k in ORDER[cls] if k in cfg.to_dict()]


def test_the_three_recipes_share_the_loop_settings():
    assert [f.name for f in dataclasses.fields(TrainArgs)] == LOOP
    assert (PretrainConfig().epochs, FinetuneConfig().epochs, DistillConfig(teacher="t").epochs) == (3, 5, 10)
    assert (FinetuneConfig().lr, DistillConfig(teacher="t").data_seed) == (5e-5, None)
    loop = LoopConfig.of(FinetuneConfig(lr=1e-3, grad_clip=0.0), "x")
    assert (loop.lr, loop.grad_clip, loop.epochs) == (1e-3, None, 5)


@pytest.mark.parametrize("command", ["pretrain", "finetune", "distill"])
def test_the_flags_are_listed_in_the_recipes_order(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    flags = [a.dest for a in sub._actions if a.option_strings and a.dest in set(LOOP)]
    assert flags == [f for f in LOOP if f in flags]
