"""Every preset builds, trains a step, and round-trips through its model folder; plain BERTs load in transformers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from tinylm.checkpoint import CONV_MODEL_TYPE, load_model, save_model
from tinylm.config import MODEL_PRESETS, ModelConfig, replace
from tinylm.model import IGNORE_INDEX, BertForClassification, BertForMLM, attention, dropout

SMALL_VOCAB = 512  # the paper presets keep their shape; only the vocabulary is cut to keep the test fast


def _batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    ids[1, 17:] = 0
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, IGNORE_INDEX))
    labels[:, 0] = ids[:, 0]  # at least one masked position per row
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("preset", list(MODEL_PRESETS))
def test_preset_trains_and_round_trips(preset: str, tmp_path) -> None:
    cfg = replace(MODEL_PRESETS[preset], vocab_size=SMALL_VOCAB)
    torch.manual_seed(0)
    model = BertForMLM(cfg)
    batch = _batch(cfg.vocab_size)
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    model.eval()
    with torch.no_grad():
        expected = model(batch["input_ids"], batch["attention_mask"]).logits
        got = loaded(batch["input_ids"], batch["attention_mask"]).logits
    assert torch.equal(expected, got)

    clf = BertForClassification(cfg, num_labels=4)
    save_model(clf, tmp_path / "c", label_names=["a", "b", "c", "d"])
    clf_loaded = load_model(tmp_path / "c")
    clf.eval()
    with torch.no_grad():
        assert torch.equal(clf(batch["input_ids"], batch["attention_mask"]).logits,
                           clf_loaded(batch["input_ids"], batch["attention_mask"]).logits)


def test_plain_bert_loads_in_transformers_with_same_outputs_and_loss(tmp_path) -> None:
    cfg = replace(MODEL_PRESETS["cpu-1"], vocab_size=SMALL_VOCAB)
    torch.manual_seed(1)
    model = BertForMLM(cfg).eval()
    save_model(model, tmp_path / "m")
    hf = AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    batch = _batch(cfg.vocab_size, seed=1)
    with torch.no_grad():
        ours_logits = model(batch["input_ids"], batch["attention_mask"]).logits
        hf_out = hf(**batch)
        ours_loss = model(**batch).loss
    valid = batch["attention_mask"].bool()
    assert torch.allclose(ours_logits[valid], hf_out.logits[valid], atol=1e-4)
    assert abs(ours_loss.item() - hf_out.loss.item()) < 1e-4


def test_classifier_loads_in_transformers(tmp_path) -> None:
    cfg = replace(MODEL_PRESETS["cpu-1"], vocab_size=SMALL_VOCAB)
    model = BertForClassification(cfg, num_labels=3).eval()
    save_model(model, tmp_path / "c", label_names=["x", "y", "z"])
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "c").eval()
    assert hf.config.id2label == {0: "x", 1: "y", 2: "z"}
    batch = _batch(cfg.vocab_size)
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["attention_mask"]).logits
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_conv_variant_is_refused_by_transformers_but_loads_in_tinylm(tmp_path) -> None:
    cfg = replace(MODEL_PRESETS["cpu-1-conv"], vocab_size=SMALL_VOCAB)
    save_model(BertForMLM(cfg), tmp_path / "v")
    assert json.loads((tmp_path / "v" / "config.json").read_text())["model_type"] == CONV_MODEL_TYPE
    with pytest.raises((ValueError, KeyError)):
        AutoModelForMaskedLM.from_pretrained(tmp_path / "v")
    assert load_model(tmp_path / "v").cfg.conv_kernels == cfg.conv_kernels


def test_mlm_checkpoint_initialises_a_classifier_encoder(tmp_path) -> None:
    cfg = replace(MODEL_PRESETS["cpu-1"], vocab_size=SMALL_VOCAB)
    mlm = BertForMLM(cfg)
    save_model(mlm, tmp_path / "m")
    clf = load_model(tmp_path / "m", head="classification", num_labels=5)
    assert isinstance(clf, BertForClassification) and clf.num_labels == 5
    for name, tensor in mlm.bert.state_dict().items():
        assert torch.equal(tensor, clf.bert.state_dict()[name]), name


def test_paper_sizes() -> None:
    """The paper's models: hidden 64 x heads, intermediate 4 x hidden, 128 positions, bert-base vocabulary."""
    assert MODEL_PRESETS["bert-6"] == ModelConfig(num_hidden_layers=6)
    assert MODEL_PRESETS["bert-1"] == ModelConfig(num_hidden_layers=1)
    assert MODEL_PRESETS["bert-1-conv0-heads24"].hidden_size == 1536
    assert MODEL_PRESETS["bert-1-conv2-k3-d64-heads8"].hidden_size == 512
    assert MODEL_PRESETS["bert-1-conv2-k16,3-d64-heads12"].conv_kernels == (16, 3)
    assert MODEL_PRESETS["bert-1-conv3-k3-d32-heads12"].conv_channels == 32
    n = sum(p.numel() for p in BertForMLM(MODEL_PRESETS["bert-6"]).parameters())
    assert 66e6 < n < 67.5e6  # 6-layer BERT with a 30,522 vocabulary and a tied decoder


def test_sequence_longer_than_positions_is_a_clear_error() -> None:
    cfg = replace(MODEL_PRESETS["cpu-1"], vocab_size=SMALL_VOCAB, max_position_embeddings=16)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        BertForMLM(cfg)(torch.ones(1, 17, dtype=torch.long))


def test_cpu_dropout_keeps_the_right_fraction_with_the_right_scale_and_gradient():
    torch.manual_seed(0)
    x = torch.ones(400_000, requires_grad=True)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    # 400k Bernoulli(0.9) draws: the keep rate is within 5 standard deviations (0.0024) of 0.9.
    assert abs(kept.float().mean().item() - 0.9) < 0.0024
    scale = 65536 / (65536 - round(0.1 * 65536))
    assert torch.allclose(y[kept], torch.full_like(y[kept], scale))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * keep * scale)/dx = keep * scale
    # Same seed, same mask (resumed runs replay their dropout); eval and p=0 are the identity.
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1, training=True), y)
    assert dropout(x, 0.1, training=False) is x
    assert dropout(x, 0.0, training=True) is x


def test_explicit_attention_matches_sdpa_when_dropout_is_off():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8) for _ in range(3))
    mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 5:] = False
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # dropout_p below 1/65536 rounds to dropping nothing, so the explicit path must equal SDPA.
    explicit = attention(q, k, v, mask, 1e-9, training=True)
    assert torch.allclose(explicit, expected, atol=1e-6)
