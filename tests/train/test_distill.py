"""`tinylm distill`: a student learns a fine-tuned committee's soft votes, is an ordinary model folder, and serves
(PyTorch and its int8 ONNX graph).

The teacher is a 2-member committee of the cpu-1 preset, pre-trained for 3 steps on the committed Wikipedia sample
and fine-tuned on the committed AG News sample (tests/fixtures/data), as `tinylm reproduce committee` trains one.
"""

from __future__ import annotations

import dataclasses
import json

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tinylm.checkpoint import load_model
from tinylm.cli import main
from tinylm.committee import load_committee, soft_vote
from tinylm.config import replace
from tinylm.data import DataError, load_task
from tinylm.experiments.scales import SCALES
from tinylm.inference.onnx import INT8_FILE, export_onnx
from tinylm.inference.predictor import Predictor
from tinylm.model import IGNORE_INDEX, ModelOutput
from tinylm.serving.app import create_app
from tinylm.serving.server import running
from tinylm.tokenizer import load_tokenizer
from tinylm.train.committee import finetune_committee, pretrain_committee
from tinylm.train.distill import (
    DistillationLoss,
    DistillConfig,
    build_student,
    distill,
    soft_targets,
    task_config,
    unlabeled_texts,
)
from tinylm.train.evaluate import predict_proba

TRAIN_PER_LABEL, TEST_PER_LABEL = 16, 10


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data_root):
    """A fine-tuned 2-member committee's run folder (its pre-trained committee is the sibling `pre`)."""
    root = tmp_path_factory.mktemp("teacher")
    # The second CPU scale's recipe (lr 1e-3; fine-tuning without warm-up or dropout): a teacher that is sure of
    # itself after a few steps, which the student's test needs.
    pre = replace(SCALES["cpu"].pretrain, model="cpu-1", articles=48, epochs=1, batch_size=16, seq_len=64, lr=1e-3)
    pretrain_committee(pre, 2, root / "pre", root=data_root)
    ft = replace(SCALES["cpu"].finetune, task="ag_news", init=str(root / "pre"), epochs=4, batch_size=16, lr=2e-3,
                 max_length=64, train_per_label=TRAIN_PER_LABEL, test_per_label=TEST_PER_LABEL, precision="fp32",
                 warmup_ratio=0.0)
    ft = dataclasses.replace(ft, dropout=None)
    finetune_committee(ft, 2, root / "ft", root=data_root)
    return root / "ft"


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory, data_root):
    """A student distilled on the training texts plus 32 texts of the unused training pool (pure soft targets)."""
    out = tmp_path_factory.mktemp("student") / "run"
    cfg = DistillConfig(teacher=str(teacher), unlabeled="pool", unlabeled_texts=32, alpha=1.0, epochs=6,
                        batch_size=16, lr=2e-3, precision="fp32")
    return out, distill(cfg, out, root=data_root)


def _kl(teacher_probs: np.ndarray, student_probs: np.ndarray) -> float:
    return float(np.mean(np.sum(teacher_probs * (np.log(teacher_probs) - np.log(student_probs)), axis=1)))


class _Fixed(nn.Module):
    """A stand-in student that answers with fixed logits (the loss is under test, not a model)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModelOutput:
        return ModelOutput(logits=self.logits)


def test_loss_is_hinton_kl_plus_cross_entropy_on_labelled_rows() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0]])
    teacher_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    labels = torch.tensor([0, IGNORE_INDEX, 2])  # the middle row is unlabeled: soft term only
    t, alpha = 3.0, 0.25
    ids = torch.zeros((3, 4), dtype=torch.long)
    loss = DistillationLoss(_Fixed(logits.clone()), t, alpha)(ids, torch.ones_like(ids), labels, teacher_probs).loss
    p, q = teacher_probs.numpy(), torch.softmax(logits / t, -1).numpy()
    kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    log_q1 = torch.log_softmax(logits, -1).numpy()
    ce = -(log_q1[0, 0] + log_q1[2, 2]) / 2
    assert loss.item() == pytest.approx(alpha * t * t * kl + (1 - alpha) * ce, rel=1e-5)
    # Only unlabeled rows: the soft term alone (no NaN from an empty cross-entropy).
    none = torch.full((3,), IGNORE_INDEX)
    loss = DistillationLoss(_Fixed(logits.clone()), t, alpha)(ids, torch.ones_like(ids), none, teacher_probs).loss
    assert loss.item() == pytest.approx(alpha * t * t * kl, rel=1e-5)
    # The soft term is zero where the student's softened distribution is the teacher's.
    matched = _Fixed(t * torch.log(teacher_probs))
    loss = DistillationLoss(matched, t, 1.0)(ids, torch.ones_like(ids), none, teacher_probs).loss
    assert abs(loss.item()) < 1e-6


def test_soft_targets_are_the_soft_vote_at_t1_and_softer_above(teacher, data_root) -> None:
    committee, tokenizer = load_committee(teacher / "model"), load_tokenizer(teacher / "model")
    texts = [e.text for e in load_task("ag_news", data_root, train_per_label=0, test_per_label=3, seed=5).test]
    vote = soft_vote(predict_proba(committee, tokenizer, texts, max_length=64, per_member=True)).numpy()
    np.testing.assert_allclose(soft_targets(committee, tokenizer, texts, 1.0, 64), vote, atol=1e-6)
    hot, soft = soft_targets(committee, tokenizer, texts, 1.0, 64), soft_targets(committee, tokenizer, texts, 4.0, 64)
    entropy = lambda p: -(p * np.log(p)).sum(1)  # noqa: E731
    assert (entropy(soft) > entropy(hot)).all()
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)


def test_student_learns_the_committee_and_is_an_ordinary_model_folder(teacher, student, data_root) -> None:
    out, result = student
    cfg = DistillConfig(teacher=str(teacher), unlabeled="pool", unlabeled_texts=32, alpha=1.0)
    data_cfg = task_config(cfg, teacher / "model")
    assert (data_cfg.task, data_cfg.train_per_label, data_cfg.test_per_label) == ("ag_news", TRAIN_PER_LABEL,
                                                                                  TEST_PER_LABEL)
    task = load_task("ag_news", data_root, train_per_label=TRAIN_PER_LABEL, test_per_label=TEST_PER_LABEL, seed=42)
    assert result["train_examples"] == len(task.train) and result["unlabeled_examples"] == 32
    assert result["test_examples"] == len(task.test) and result["teacher_members"] == 2
    # The student started from member 0 of the pre-trained committee: out/init is that member, exactly.
    pre = load_committee(teacher.parent / "pre" / "model")
    init = load_file(str(out / "init" / "model.safetensors"))
    name = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(init[name], pre.stacked()[name][0])
    # It learned the committee: the KL from the teacher's soft vote (T = 1) on the training texts fell well below
    # that of the student it started as, and it agrees with the teacher more often.
    texts = [e.text for e in task.train]
    committee = load_committee(teacher / "model")
    tokenizer = load_tokenizer(out / "model")
    target = soft_targets(committee, tokenizer, texts, 1.0, 64)
    torch.manual_seed(cfg.seed)  # as distill seeds before it builds the student
    fresh, _ = build_student(cfg, teacher / "model", data_cfg, 4, out)
    before = predict_proba(fresh, tokenizer, texts, max_length=64)
    after = predict_proba(load_model(out / "model"), tokenizer, texts, max_length=64)
    assert _kl(target, after) < _kl(target, before) / 2
    # (a teacher this briefly trained is near uniform, so its argmax is a weak signal: measured 0.27 -> 0.73)
    assert np.mean(after.argmax(1) == target.argmax(1)) >= np.mean(before.argmax(1) == target.argmax(1)) + 0.25
    assert 0 <= result["agreement"] <= 1 and result["teacher_accuracy"] == pytest.approx(
        json.loads((teacher / "metrics.json").read_text())["soft_vote"]["accuracy"], abs=1 / len(task.test) + 1e-9)
    # An ordinary model folder: transformers loads it and answers as tinylm does.
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    enc = tokenizer(texts[:5], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hf_probs = torch.softmax(hf(**enc).logits, -1).numpy()
    np.testing.assert_allclose(hf_probs, predict_proba(load_model(out / "model"), tokenizer, texts[:5], max_length=64),
                               atol=1e-5)
    meta = json.loads((out / "model" / "tinylm_meta.json").read_text())
    assert meta["distill"]["teacher"] == str(teacher) and meta["finetune"]["task"] == "ag_news"


def test_killed_distillation_resumes_to_identical_weights(teacher, tmp_path, data_root) -> None:
    cfg = DistillConfig(teacher=str(teacher), epochs=2, batch_size=16, save_every=1, precision="fp32")
    distill(cfg, tmp_path / "full", root=data_root)
    partial = distill(cfg, tmp_path / "resumed", root=data_root, stop_after=3)
    assert partial["steps"] == 3 and not (tmp_path / "resumed" / "model").exists()
    distill(cfg, tmp_path / "resumed", root=data_root)
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unlabeled_texts_are_fresh_and_seeded(teacher, data_root) -> None:
    task = load_task("ag_news", data_root, train_per_label=TRAIN_PER_LABEL, test_per_label=TEST_PER_LABEL, seed=42)
    sample = {e.text for e in (*task.train, *task.test)}
    for kind in ("pool", "wikipedia"):
        cfg = DistillConfig(teacher=str(teacher), unlabeled=kind, unlabeled_texts=20)
        data_cfg = task_config(cfg, teacher / "model")
        texts = unlabeled_texts(cfg, data_cfg, task, data_root)
        assert len(texts) == len(set(texts)) == 20 and not sample & set(texts)
        assert texts == unlabeled_texts(cfg, data_cfg, task, data_root)
    too_many = DistillConfig(teacher=str(teacher), unlabeled="pool", unlabeled_texts=10**6)
    with pytest.raises(DataError, match="needed"):
        unlabeled_texts(too_many, task_config(too_many, teacher / "model"), task, data_root)


def test_config_checks_and_cli(teacher, tmp_path, data_root, capsys) -> None:
    for bad in ({"temperature": 0.0}, {"alpha": 1.5}, {"unlabeled": "pool"}, {"unlabeled_texts": 5},
                {"model": "cpu-1"}, {"model": "no-such-preset", "init": "scratch"}, {"member": -1}):
        with pytest.raises(ValueError):
            DistillConfig(teacher="t", **bad)
    assert main(["distill", "--out", str(tmp_path / "x")]) == 2  # no --teacher
    assert "--teacher" in capsys.readouterr().err
    # A scratch student of another preset, through the command.
    out = tmp_path / "scratch"
    assert main(["--data", str(data_root), "distill", "--teacher", str(teacher), "--out", str(out), "--init",
                 "scratch", "--model", "demo", "--epochs", "1", "--batch-size", "16", "--precision", "fp32"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["init"] == "scratch" and printed["steps"] == 4
    assert load_model(out / "model").cfg.num_hidden_layers == 2  # the demo preset's, not the teacher's 1


# ----- the student deployed: `tinylm serve` with PyTorch and with its int8 ONNX graph -----


def test_student_and_its_int8_graph_are_served(student, data_root) -> None:
    out, _ = student
    folder = out / "model"
    # Accuracy reported, not judged (tests/inference/test_onnx_export.py covers the refusal): one flipped text of 40
    # is 2.5 points, so this tiny model's graph could trip the default 0.5 by chance.
    report = export_onnx(folder, quantize="int8", root=data_root, accuracy_tolerance=None)
    graph = folder / INT8_FILE
    assert report["quantize"] == "int8" and graph.is_file() and report["accuracy"]["texts"] == 4 * TEST_PER_LABEL
    assert report["accuracy"]["loss_points"] <= 5.0
    texts = [e.text for e in load_task("ag_news", data_root, train_per_label=0, test_per_label=2, seed=9).test]
    expected = Predictor.load(folder, "torch").predict_proba(texts)
    for predictor in (Predictor.load(folder, "torch"), Predictor.load(folder, "onnx", onnx_path=graph)):
        with running(create_app(predictor)) as url:
            r = httpx.post(url + "/predict", json={"texts": texts}, timeout=60)
        assert r.status_code == 200
        got = np.array([[p["probabilities"][k] for k in predictor.label_names] for p in r.json()["predictions"]])
        # int8 answers are close to fp32's, not equal (measured differences ~1e-3 on these models)
        assert np.abs(got - expected).max() <= (1e-5 if predictor.runtime.name == "torch" else 0.05)


def test_tinylm_serve_command_serves_the_int8_graph(student, tinylm_serve) -> None:
    folder = student[0] / "model"
    if not (folder / INT8_FILE).is_file():
        pytest.skip("needs the int8 graph of the test above")
    with tinylm_serve(folder, "--runtime", "onnx", "--onnx", str(folder / INT8_FILE), startup_s=120) as (base, info):
        assert info["runtime"] == "onnx" and info["kind"] == "model"
        r = httpx.post(f"{base}/predict", json={"text": "Oil prices rose."}, timeout=30)
        assert r.status_code == 200 and r.json()["label"] in info["labels"]
