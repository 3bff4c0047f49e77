"""Pre-training and fine-tuning on real data slices: learning happens, seeds reproduce, killed runs resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tinylm.checkpoint import load_model
from tinylm.config import FinetuneConfig, PretrainConfig
from tinylm.model import IGNORE_INDEX
from tinylm.train.finetune import ClassificationBatches, finetune
from tinylm.train.loop import LoopConfig, lr_at
from tinylm.train.pretrain import mask_tokens, pretrain

TINY_PRETRAIN = PretrainConfig(
    model="demo", tokenizer="train", articles=96, seq_len=64, epochs=2, batch_size=16, lr=1e-3,
    save_every=4, warmup_ratio=0.1,
)


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_mlm_masking_rates_and_specials() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (64, 128))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS], [SEP]
    special = (ids == 2) | (ids == 3)
    inputs, labels = mask_tokens(ids, special, vocab_size=1000, mask_id=4, prob=0.15, gen=gen)
    chosen = labels != IGNORE_INDEX
    assert not chosen[special].any()
    assert abs(chosen.float().mean().item() * 128 / 126 - 0.15) < 0.01
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs == 4) & chosen
    kept = (inputs == ids) & chosen
    assert abs(masked.sum().item() / chosen.sum().item() - 0.8) < 0.02
    assert abs(kept.sum().item() / chosen.sum().item() - 0.1) < 0.03  # 10 % kept (+ random draws of itself)
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_linear_schedule_per_step_and_per_epoch() -> None:
    cfg = LoopConfig(epochs=4, lr=1.0, weight_decay=0, warmup_ratio=0, schedule="epoch", precision="fp32",
                     seed=0, save_every=10)
    assert [lr_at(cfg, s, e, 10) for s, e in [(0, 0), (15, 1), (39, 3)]] == [1.0, 0.75, 0.25]
    cfg.schedule, cfg.warmup_ratio = "step", 0.25
    assert lr_at(cfg, 0, 0, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 9, 0, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 39, 3, 10) == pytest.approx(1 / 30)


def test_pretrain_learns_and_same_seed_same_weights(tmp_path, data_root) -> None:
    a = pretrain(TINY_PRETRAIN, tmp_path / "a", root=data_root)
    b = pretrain(TINY_PRETRAIN, tmp_path / "b", root=data_root)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert len(log) == a["steps"] == 12
    first, last = np.mean([r["loss"] for r in log[:3]]), np.mean([r["loss"] for r in log[-3:]])
    assert last < first - 0.3, (first, last)  # MLM loss falls from ln(vocab)
    assert a["final_loss"] == b["final_loss"]
    assert (tmp_path / "a" / "model" / "tokenizer.json").is_file()


def test_killed_pretraining_resumes_to_identical_weights(tmp_path, data_root) -> None:
    pretrain(TINY_PRETRAIN, tmp_path / "full", root=data_root)
    # Killed after step 5: the last checkpoint is at step 4 (save_every=4; epochs end at steps 6 and 12), so
    # step 5 is replayed and the run goes on across the epoch boundary.
    partial = pretrain(TINY_PRETRAIN, tmp_path / "resumed", root=data_root, stop_after=5)
    assert partial["steps"] == 5 and not (tmp_path / "resumed" / "model").exists()
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    pretrain(TINY_PRETRAIN, tmp_path / "resumed", root=data_root)
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_resume_refuses_a_different_config(tmp_path, data_root) -> None:
    pretrain(TINY_PRETRAIN, tmp_path / "r", root=data_root, stop_after=4)
    other = PretrainConfig(**{**TINY_PRETRAIN.to_dict(), "lr": 5e-4})
    with pytest.raises(RuntimeError, match="different configuration"):
        pretrain(other, tmp_path / "r", root=data_root)


def test_finetune_from_pretrained_and_scratch_and_resume(tmp_path, data_root) -> None:
    pretrain(TINY_PRETRAIN, tmp_path / "pt", root=data_root)
    cfg = FinetuneConfig(task="ag_news", init=str(tmp_path / "pt"), train_per_label=16, test_per_label=8,
                         epochs=2, batch_size=16, lr=1e-3, save_every=3, max_length=64)
    full = finetune(cfg, tmp_path / "ft", root=data_root)
    assert full["test_examples"] == 32 and 0.0 <= full["accuracy"] <= 1.0
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert len(metrics["confusion_matrix"]) == 4 and sum(map(sum, metrics["confusion_matrix"])) == 32
    assert set(metrics["per_class"]) >= {"World", "Sports", "Business", "Sci/Tech", "macro avg"}
    clf = load_model(tmp_path / "ft" / "model")
    assert clf.num_labels == 4

    finetune(cfg, tmp_path / "ft2", root=data_root, stop_after=5)
    again = finetune(cfg, tmp_path / "ft2", root=data_root)
    assert again["accuracy"] == full["accuracy"]
    w1, w2 = _weights(tmp_path / "ft"), _weights(tmp_path / "ft2")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)

    scratch = finetune(FinetuneConfig(**{**cfg.to_dict(), "init": None, "tokenizer": str(tmp_path / "pt")}),
                       tmp_path / "scratch", root=data_root)
    assert scratch["init"] is None
    ws = _weights(tmp_path / "scratch")
    assert ws.keys() == w1.keys()  # the twin has the very same architecture


def test_classification_batches_cover_each_example_once_with_little_padding() -> None:
    rng = np.random.default_rng(0)
    ids = [[1] + [5] * int(n) + [2] for n in rng.integers(5, 120, size=1000)]
    labels = list(rng.integers(0, 4, size=1000))
    batches = ClassificationBatches(ids, labels, batch_size=32, pad_id=0, seed=1, epoch=0)
    seen = np.concatenate([b for b in batches.batches])
    assert sorted(seen.tolist()) == list(range(1000))
    padded = sum(batches[i]["input_ids"].numel() for i in range(len(batches)))
    real = sum(len(s) for s in ids)
    assert padded < 1.15 * real  # length bucketing keeps padding small
    again = ClassificationBatches(ids, labels, batch_size=32, pad_id=0, seed=1, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(batches.batches, again.batches, strict=True))
