"""Held-out MLM quality: the unigram baseline's arithmetic, fixed scoring positions, skip rules, and snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tinylm.config import PRETRAIN_PRESETS, replace
from tinylm.data.encoding import encode_cached
from tinylm.model import ModelOutput
from tinylm.tokenizer import load_tokenizer
from tinylm.train.mlm_quality import (
    EVAL_MASK_PROB,
    heldout_count,
    heldout_texts,
    masked_token_scores,
    mlm_quality,
    quality_or_reason,
    unigram_log_probs,
)
from tinylm.train.pretrain import pretrain, snapshot_steps, snapshots


class UnigramModel(nn.Module):
    """Predicts the same distribution at every masked position: an MLM that ignores its context."""

    def __init__(self, log_probs: np.ndarray):
        super().__init__()
        self.logits = nn.Parameter(torch.from_numpy(np.nan_to_num(log_probs, neginf=-1e9)).float())

    def forward(self, input_ids, attention_mask=None, labels=None):
        if labels is None:  # every position, as BertForMLM without labels
            return ModelOutput(logits=self.logits.expand(*input_ids.shape, -1))
        return ModelOutput(logits=self.logits[None].expand(int((labels != -100).sum()), -1))


def test_unigram_log_probs_are_add_one_smoothed_frequencies_without_special_tokens() -> None:
    ids = np.array([[0, 5, 5, 6], [1, 5, 7, 0]])
    logp = unigram_log_probs(ids, vocab_size=8, special_ids=[0, 1])
    p = np.exp(logp)
    assert p[[0, 1]].sum() == 0  # special tokens are never predicted
    counts = np.array([0, 0, 1, 1, 1, 4, 2, 2])  # token 5 seen 3 times (+1), 6 and 7 once (+1), 2-4 never (+1)
    np.testing.assert_allclose(p, counts / counts.sum())


def test_a_context_free_model_scores_exactly_the_unigram_baseline(data_root) -> None:
    tok = load_tokenizer("tinylm-wiki-4k")
    texts, _ = heldout_texts(data_root)
    ids = encode_cached(tok, texts, 64)
    train_ids = encode_cached(tok, texts[:20], 64)  # any "training" counts will do
    baseline = unigram_log_probs(train_ids, len(tok), tok.all_special_ids)
    quality = mlm_quality(UnigramModel(baseline), tok, ids, train_ids)
    assert quality["mlm_loss"] == pytest.approx(quality["unigram_loss"], abs=1e-3)
    assert quality["mlm_accuracy"] == pytest.approx(quality["unigram_accuracy"], abs=1e-4)
    assert 0 < quality["unigram_accuracy"] < 0.2


def test_scored_positions_are_fixed_non_special_and_about_fifteen_percent(data_root) -> None:
    tok = load_tokenizer("tinylm-wiki-4k")
    texts, _ = heldout_texts(data_root)
    ids = encode_cached(tok, texts, 64)
    model = UnigramModel(np.zeros(len(tok)))
    first, _, _ = masked_token_scores(model, ids, tok)
    again, _, _ = masked_token_scores(model, ids, tok)
    np.testing.assert_array_equal(first, again)
    assert not np.isin(first, tok.all_special_ids).any()
    non_special = (~np.isin(ids, tok.all_special_ids)).sum()
    assert abs(len(first) / non_special - EVAL_MASK_PROB) < 0.02


def test_heldout_set_is_the_tail_of_the_permutation_and_overlapping_subsets_are_refused(data_root) -> None:
    texts, pool = heldout_texts(data_root)
    assert len(texts) == heldout_count(pool) == pool // 10  # the 400-article sample holds out a tenth
    tok = load_tokenizer("tinylm-wiki-4k")
    kwargs = dict(root=data_root, data_seed=42)
    skipped = quality_or_reason(nn.Linear(1, 1), tok, np.zeros((1, 4), int), pool, 64, source="local", **kwargs)
    assert "held out" in skipped["skipped"]
    hub = quality_or_reason(nn.Linear(1, 1), tok, np.zeros((1, 4), int), 10, 64, source="hub", **kwargs)
    assert "hub" in hub["skipped"]


def test_snapshot_steps_halve_the_run() -> None:
    assert snapshot_steps(100, 3) == {50, 25, 12}
    assert snapshot_steps(3, 4) == {2, 1}  # rounded, duplicates and step 0 dropped
    assert snapshot_steps(100, 0) == set()


def test_pretraining_saves_scored_snapshots_and_the_final_quality(tmp_path, data_root) -> None:
    cfg = replace(PRETRAIN_PRESETS["demo"], tokenizer="tinylm-wiki-4k", articles=64, epochs=2, seq_len=64,
                  batch_size=16, snapshots=2)
    summary = pretrain(cfg, tmp_path / "run", root=data_root)
    assert summary["steps"] == 8
    found = snapshots(tmp_path / "run")
    assert sorted(found) == [2, 4, 8] and found[8] == tmp_path / "run" / "model"
    meta = json.loads((found[4] / "tinylm_meta.json").read_text())
    assert meta["step"] == 4 and meta["quality"]["heldout_positions"] > 100
    final = summary["quality"]
    assert final["heldout_articles"] == 40
    assert {"mlm_loss", "mlm_accuracy", "unigram_loss", "unigram_accuracy"} <= set(final)
    assert final["cloze"]["items"] + final["cloze"]["skipped"] == 22
    # A run without snapshots hashes as before snapshots existed.
    assert "snapshots" not in replace(cfg, snapshots=0).to_dict() and cfg.to_dict()["snapshots"] == 2
