"""The run cache's key covers what changes a run's weights: the config, its model preset's fields and its
vocabulary's content (a run trained under other settings must never come back under the same name)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tinylm.config import MODEL_PRESETS, SHIPPED_VOCABS, FinetuneConfig, PretrainConfig
from tinylm.experiments.run_cache import run_dir, vocabulary_digest


def test_a_changed_model_preset_changes_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scratch = FinetuneConfig(task="ag_news", model="demo", tokenizer="tinylm-wiki-4k")
    pre = PretrainConfig(model="demo", tokenizer="tinylm-wiki-4k")
    before = run_dir(tmp_path, "finetune", scratch), run_dir(tmp_path, "pretrain", pre)
    assert before == (run_dir(tmp_path, "finetune", scratch), run_dir(tmp_path, "pretrain", pre))  # stable
    monkeypatch.setitem(MODEL_PRESETS, "demo", dataclasses.replace(MODEL_PRESETS["demo"], hidden_dropout_prob=0.1))
    after = run_dir(tmp_path, "finetune", scratch), run_dir(tmp_path, "pretrain", pre)
    assert after[0] != before[0] and after[1] != before[1]


def test_a_changed_vocabulary_changes_the_key(tmp_path: Path) -> None:
    vocab = tmp_path / "tok" / "vocab.txt"
    vocab.parent.mkdir()
    vocab.write_text(SHIPPED_VOCABS["tinylm-wiki-4k"].read_text())
    cfg = FinetuneConfig(task="ag_news", model="demo", tokenizer=str(vocab.parent))
    first = run_dir(tmp_path, "finetune", cfg)
    assert vocabulary_digest(str(vocab.parent)) == vocabulary_digest("tinylm-wiki-4k")  # content, not name
    vocab.write_text(vocab.read_text().replace("\nthe\n", "\nthee\n"))
    assert run_dir(tmp_path, "finetune", cfg) != first


def test_an_init_run_is_keyed_by_its_name_not_its_path(tmp_path: Path) -> None:
    a = FinetuneConfig(task="ag_news", init=str(tmp_path / "x" / "pretrain-abc"))
    b = FinetuneConfig(task="ag_news", init=str(tmp_path / "moved" / "pretrain-abc"))
    assert run_dir(tmp_path, "finetune", a).name == run_dir(tmp_path, "finetune", b).name
    c = FinetuneConfig(task="ag_news", init=str(tmp_path / "x" / "pretrain-abd"))
    assert run_dir(tmp_path, "finetune", a) != run_dir(tmp_path, "finetune", c)
