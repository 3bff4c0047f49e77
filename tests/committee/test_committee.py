"""The soft committee's vectorised pass equals a Python loop over the same member weights.

Tolerances (fp32 throughout): logits, probabilities and losses atol 1e-5; gradients atol 1e-6 + rtol 1e-4;
AdamW on identical gradients atol 1e-7; weights after three full training steps atol lr/100 (see that test).
Save/load round trips are exact (torch.equal); an extracted member loaded by transformers matches at atol 1e-4
(another implementation of the same layers).
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tinylm.checkpoint import load_model
from tinylm.committee import Committee, extract_member, hard_vote, load_committee, save_committee, soft_vote
from tinylm.config import ModelConfig
from tinylm.data import load_task
from tinylm.inference.predictor import Predictor, ProbabilityGraph
from tinylm.model import IGNORE_INDEX, BertForClassification, BertForMLM
from tinylm.tokenizer import load_tokenizer
from tinylm.train.committee_step import (
    clip_grad_norm_per_member_,
    committee_train_step,
    make_committee_optimizer,
    stack_member_batches,
)
from tinylm.train.evaluate import class_probabilities, evaluate_model, predict_proba
from tinylm.train.finetune import pad_batch
from tinylm.train.loop import LoopConfig, make_optimizer, train_step
from tinylm.train.pretrain import mask_tokens

ATOL = 1e-5
N = 4


def tiny(layers: int = 1, vocab: int = 30522, dropout: float = 0.1, conv: bool = False) -> ModelConfig:
    """A BERT-1 (or 2-layer) of hidden 32; conv=True adds the paper's convolutional front block."""
    return ModelConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        conv_kernels=(3, 3) if conv else (), conv_channels=4 if conv else 0,
    )


SHAPES = {"bert1": {}, "two-layer": {"layers": 2}, "conv": {"conv": True}}


@pytest.fixture(scope="module")
def tokenizer(data_root):
    return load_tokenizer("bert-base-uncased", data_root)


@pytest.fixture(scope="module")
def task(data_root):
    return load_task("ag_news", data_root, train_per_label=0, test_per_label=8)


def encode(tokenizer, texts, max_length: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return pad_batch(ids, tokenizer.pad_token_id)


def loop_logits(members, ids, mask) -> torch.Tensor:
    return torch.stack([m(ids, mask).logits for m in members])


@pytest.mark.parametrize("shape", list(SHAPES))
def test_inference_equals_loop_soft_and_hard_vote(shape, tokenizer, task) -> None:
    cfg = tiny(**SHAPES[shape])
    committee = Committee.init(cfg, N, seeds=[11, 12, 13, 14], num_labels=4).eval()
    members = [committee.member(i) for i in range(N)]
    ids, mask = encode(tokenizer, [e.text for e in task.test[:6]])
    assert not bool(mask.all())  # padding is exercised
    with torch.no_grad():
        expected = loop_logits(members, ids, mask)
        for cls_only in (True, False):
            committee.cls_only = cls_only
            torch.testing.assert_close(committee(ids, mask).logits, expected, atol=ATOL, rtol=0)
        committee.chunk_elements = 1  # inference in chunks of one member
        torch.testing.assert_close(committee(ids, mask).logits, expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(committee(ids, mask, members=[3, 1]).logits, expected[[3, 1]], atol=ATOL, rtol=0)
        per_member = committee(ids.expand(N, -1, -1), mask.expand(N, -1, -1)).logits
        torch.testing.assert_close(per_member, expected, atol=ATOL, rtol=0)
        committee.chunk_elements = 1 << 22
        probs = class_probabilities(committee, ids, mask, per_member=True)
        torch.testing.assert_close(probs, expected.softmax(-1), atol=ATOL, rtol=0)
        torch.testing.assert_close(class_probabilities(committee, ids, mask), expected.softmax(-1).mean(0),
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(soft_vote(probs), probs.mean(0))
        votes = torch.stack([torch.bincount(expected[:, b].argmax(-1), minlength=4) for b in range(ids.shape[0])])
        hard = hard_vote(class_probabilities(committee, ids, mask, per_member=True))
        assert (votes.gather(1, hard[:, None]).squeeze(1) == votes.max(1).values).all()
        for subset in ([1, 2], [3, 0, 2]):  # contiguous (views) and not (copies)
            torch.testing.assert_close(class_probabilities(committee, ids, mask, members=subset),
                                       expected[subset].softmax(-1).mean(0), atol=ATOL, rtol=0)
            torch.testing.assert_close(soft_vote(probs, subset), probs[subset].mean(0))


def test_hard_vote_majority_and_ties() -> None:
    p = torch.tensor([
        [[0.6, 0.4, 0.0]], [[0.6, 0.4, 0.0]], [[0.1, 0.9, 0.0]],  # 2 votes for 0, 1 for 1
        [[0.0, 0.2, 0.8]],
    ])
    assert hard_vote(p).tolist() == [0]  # 2 votes beat 1 + 1
    tie = torch.tensor([[[0.51, 0.49]], [[0.05, 0.95]]])  # one vote each: the soft vote (class 1) breaks the tie
    assert hard_vote(tie).tolist() == [1]
    assert hard_vote(p, members=[2, 3]).tolist() == [1]  # 1 vote each for 1 and 2; soft vote 0.55 vs 0.40


def test_per_member_batches_equal_loop(tokenizer, task) -> None:
    """Training input: one batch per member ([N, B, L], own rows and width), stacked with padding."""
    cfg = tiny(dropout=0.0)
    committee = Committee.init(cfg, N, num_labels=4).train()
    members = [committee.member(i).train() for i in range(N)]
    batches = []
    for j in range(N):
        rows = task.test[j * 5:j * 5 + 3 + j % 2]  # different rows, counts and widths per member
        ids, mask = encode(tokenizer, [e.text for e in rows], max_length=20 + 8 * j)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([e.label for e in rows])})
    stacked = stack_member_batches(batches, tokenizer.pad_token_id)
    out = committee(**stacked)
    for j, (m, bt) in enumerate(zip(members, batches, strict=True)):
        ref = m(**bt)
        rows = bt["input_ids"].shape[0]
        torch.testing.assert_close(out.logits[j, :rows], ref.logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(out.member_losses[j], ref.loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, out.member_losses.sum())


def _assert_grads_equal(committee: Committee, members) -> None:
    for name, p in committee.members.named_parameters():
        for i, m in enumerate(members):
            ref = m.get_parameter(name).grad
            assert ref is not None and p.grad is not None, name
            torch.testing.assert_close(p.grad[i], ref, atol=1e-6, rtol=1e-4, msg=f"{name} member {i}")


@pytest.mark.parametrize("shape", list(SHAPES))
def test_summed_loss_gradients_equal_per_member_gradients(shape, tokenizer, task) -> None:
    cfg = tiny(dropout=0.0, **SHAPES[shape])  # train mode without dropout: batch norm uses batch statistics
    committee = Committee.init(cfg, N, num_labels=4).train()
    members = [committee.member(i).train() for i in range(N)]
    ids, mask = encode(tokenizer, [e.text for e in task.test[:5]])
    labels = torch.tensor([e.label for e in task.test[:5]])
    committee(ids, mask, labels=labels).loss.backward()
    for m in members:
        m(ids, mask, labels=labels).loss.backward()
    _assert_grads_equal(committee, members)
    if cfg.conv_kernels:  # running statistics move per member as in each member
        for name, buf in committee.members.named_buffers():
            for i, m in enumerate(members):
                torch.testing.assert_close(buf[i], m.get_buffer(name), atol=1e-6, rtol=1e-5, msg=name)


def test_mlm_committee_per_member_masks_loss_and_gradients(tokenizer, task) -> None:
    cfg = tiny(layers=2, dropout=0.0)
    committee = Committee.init(cfg, N, head="mlm").train()
    members = [committee.member(i).train() for i in range(N)]
    ids, mask = encode(tokenizer, [e.text for e in task.test[:4]])
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    batches = []
    for j in range(N):  # each member its own masks
        gen = torch.Generator().manual_seed(100 + j)
        inputs, labels = mask_tokens(ids, special, cfg.vocab_size, tokenizer.mask_token_id, 0.15 + 0.05 * j, gen)
        batches.append({"input_ids": inputs, "attention_mask": mask, "labels": labels})
    out = committee(**stack_member_batches(batches, tokenizer.pad_token_id))
    out.loss.backward()
    for j, (m, bt) in enumerate(zip(members, batches, strict=True)):
        ref = m(**bt)
        ref.loss.backward()
        torch.testing.assert_close(out.member_losses[j], ref.loss, atol=ATOL, rtol=0)
        k = ref.logits.shape[0]
        torch.testing.assert_close(out.logits[j, :k], ref.logits, atol=ATOL, rtol=0)
    _assert_grads_equal(committee, members)
    with torch.no_grad():  # inference: vocabulary logits at every position
        committee.eval()
        torch.testing.assert_close(committee(ids, mask).logits,
                                   torch.stack([m.eval()(ids, mask).logits for m in members]), atol=ATOL, rtol=0)


def _loop_cfg(lr: float, weight_decay: float, grad_clip: float | None) -> LoopConfig:
    return LoopConfig(epochs=1, lr=lr, weight_decay=weight_decay, warmup_ratio=0.0, schedule="step",
                      precision="fp32", seed=0, save_every=100, grad_clip=grad_clip)


def test_adamw_on_stacked_params_equals_adamw_per_member() -> None:
    """Same gradients in, same weights out: the optimizer alone (fused AdamW, BERT's decay groups)."""
    cfg = tiny(vocab=200, dropout=0.0, conv=True)
    loop_cfg = _loop_cfg(lr=1e-2, weight_decay=0.1, grad_clip=None)
    dev = torch.device("cpu")
    committee = Committee.init(cfg, N, num_labels=3).train()
    members = [committee.member(i).train() for i in range(N)]
    opt = make_committee_optimizer(committee, loop_cfg.lr, loop_cfg.weight_decay, dev)
    opts = [make_optimizer(m, loop_cfg, dev) for m in members]
    names = {id(p): n for n, p in committee.members.named_parameters()}
    member_names = {id(p): n for n, p in members[0].named_parameters()}
    assert [[names[id(p)] for p in g["params"]] for g in opt.param_groups] == [
        [member_names[id(p)] for p in g["params"]] for g in opts[0].param_groups]
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in opts[0].param_groups]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for name, p in committee.members.named_parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 10 ** torch.randint(-9, 0, (N,), generator=gen).view(
                N, *([1] * (p.ndim - 1)))
            for i, m in enumerate(members):
                m.get_parameter(name).grad = p.grad[i].clone()
        opt.step()
        for o in opts:
            o.step()
    for name, p in committee.members.named_parameters():
        for i, m in enumerate(members):
            torch.testing.assert_close(p.detach()[i], m.get_parameter(name).detach(), atol=1e-7, rtol=0,
                                       msg=f"{name} member {i}")


def test_train_steps_with_clipping_equal_separate_members(tokenizer, task) -> None:
    """Three production steps (fused AdamW, no decay on biases/norms, clipping at 0.5) on the stacked committee,
    members on different batches, equal training.train_step on each member. Adam divides by sqrt(v) + 1e-8, so
    an entry whose gradient is near 1e-8 turns a rounding-level gradient difference into up to ~1 % of a step:
    weights are compared at atol lr/100 (decay alone moves LayerNorm weights by lr * 0.1 per step)."""
    cfg = tiny(dropout=0.0)
    loop_cfg = _loop_cfg(lr=3e-3, weight_decay=0.1, grad_clip=0.5)
    dev = torch.device("cpu")
    committee = Committee.init(cfg, N, num_labels=4).train()
    members = [committee.member(i).train() for i in range(N)]
    opt = make_committee_optimizer(committee, loop_cfg.lr, loop_cfg.weight_decay, dev)
    opts = [make_optimizer(m, loop_cfg, dev) for m in members]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    texts = task.test
    for step in range(3):
        batches = []
        for j in range(N):
            rows = texts[(step * N + j) * 2:(step * N + j) * 2 + 2]
            ids, mask = encode(tokenizer, [e.text for e in rows])
            batches.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([e.label for e in rows])})
        losses = committee_train_step(committee, stack_member_batches(batches, tokenizer.pad_token_id), opt, scaler,
                                      "fp32", dev, loop_cfg.grad_clip)
        for j, (m, o) in enumerate(zip(members, opts, strict=True)):
            ref = train_step(m, batches[j], o, scaler, "fp32", dev, loop_cfg.grad_clip).loss.detach()
            torch.testing.assert_close(losses[j], ref, atol=ATOL, rtol=0)
    for name, p in committee.members.named_parameters():
        for i, m in enumerate(members):
            torch.testing.assert_close(p.detach()[i], m.get_parameter(name).detach(), atol=loop_cfg.lr / 100, rtol=0,
                                       msg=f"{name} member {i}")


def test_per_member_clipping_equals_clip_grad_norm() -> None:
    cfg = tiny(vocab=200, dropout=0.0)
    committee = Committee.init(cfg, N, num_labels=3).train()
    members = [committee.member(i).train() for i in range(N)]
    ids = torch.randint(5, 200, (3, 12))
    labels = torch.tensor([0, 1, 2])
    committee(ids, labels=labels).loss.backward()
    norms = clip_grad_norm_per_member_(committee, 0.05)
    for i, m in enumerate(members):
        m(ids, labels=labels).loss.backward()
        ref = torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05)
        torch.testing.assert_close(norms[i], ref, atol=1e-6, rtol=1e-5)
    _assert_grads_equal(committee, members)


def test_init_and_from_members_give_the_seeded_models() -> None:
    cfg = tiny(vocab=300)
    state = torch.random.get_rng_state()
    committee = Committee.init(cfg, 3, seeds=[7, 8, 9], num_labels=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    for i, seed in enumerate([7, 8, 9]):
        torch.manual_seed(seed)
        ref = BertForClassification(cfg, 4)
        got = committee.member(i)
        for name, t in ref.state_dict().items():
            assert torch.equal(got.state_dict()[name], t), name
    assert not torch.equal(committee.members.classifier.weight[0], committee.members.classifier.weight[1])
    rebuilt = Committee.from_members([committee.member(i) for i in range(3)])
    for (name, a), b in zip(committee.state_dict().items(), rebuilt.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    view = committee.member(2, copy=False)
    assert view.classifier.weight.data_ptr() == committee.members.classifier.weight[2].data_ptr()
    with pytest.raises(ValueError):
        Committee.from_members([BertForClassification(cfg, 4), BertForClassification(cfg, 3)])
    with pytest.raises(ValueError):
        Committee.from_members([BertForClassification(cfg, 4), BertForMLM(cfg)])


def test_save_load_extract_round_trip(tmp_path, tokenizer, task) -> None:
    cfg = tiny()
    names = task.label_names
    committee = Committee.init(cfg, N, num_labels=len(names)).eval()
    folder = save_committee(committee, tmp_path / "committee", tokenizer, names, extra={"note": "test"})
    raw = json.loads((folder / "config.json").read_text())
    assert raw["model_type"] == "tinylm_committee" and raw["num_members"] == N
    assert raw["tinylm"]["committee"]["members"] == N and raw["tinylm"]["head"] == "classification"
    assert ModelConfig.from_dict(raw["tinylm"]["model"]) == cfg
    assert [raw["id2label"][str(i)] for i in range(len(names))] == names
    assert json.loads((folder / "tinylm_meta.json").read_text()) == {"note": "test"}

    loaded = load_committee(folder)
    assert loaded.n == N and loaded.label_names == names and not loaded.training
    ids, mask = encode(tokenizer, [e.text for e in task.test[:5]])
    with torch.no_grad():
        expected = committee(ids, mask).logits
        assert torch.equal(loaded(ids, mask).logits, expected)
        extract_member(folder, 2, tmp_path / "member2")
        member = load_model(tmp_path / "member2")
        assert isinstance(member, BertForClassification)
        torch.testing.assert_close(member(ids, mask).logits, expected[2], atol=ATOL, rtol=0)
        hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "member2").eval()
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=mask).logits, expected[2], atol=1e-4, rtol=0)
    assert load_tokenizer(tmp_path / "member2").get_vocab() == tokenizer.get_vocab()
    with pytest.raises((KeyError, RuntimeError)):  # the stacked folder is not an ordinary model folder
        load_model(folder)


def test_mlm_committee_round_trip(tmp_path) -> None:
    cfg = tiny(vocab=300, conv=True)
    committee = Committee.init(cfg, 3, head="mlm").eval()
    save_committee(committee, tmp_path / "c")
    loaded = load_committee(tmp_path / "c")
    ids = torch.randint(5, 300, (2, 10))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, committee(ids).logits)
        extract_member(tmp_path / "c", 1, tmp_path / "m1")
        torch.testing.assert_close(load_model(tmp_path / "m1")(ids).logits, committee(ids).logits[1], atol=ATOL,
                                   rtol=0)
    with pytest.raises(ValueError):
        ProbabilityGraph(loaded)


def test_classifier_load_predicts_with_a_committee_folder(tmp_path, tokenizer, task) -> None:
    cfg = tiny()
    committee = Committee.init(cfg, N, num_labels=task.num_labels).eval()
    save_committee(committee, tmp_path / "run" / "model", tokenizer, task.label_names)
    clf = Predictor.load(tmp_path / "run", device="cpu")  # a run folder, as `tinylm predict` gets it
    texts = [e.text for e in task.test[:7]]
    preds = clf.predict(texts)
    member_probs = predict_proba(committee, tokenizer, texts, per_member=True)
    assert member_probs.shape == (N, len(texts), task.num_labels)
    soft = member_probs.mean(0)
    for pred, p in zip(preds, soft, strict=True):
        assert pred["label"] == task.label_names[int(p.argmax())]
        got = [pred["probabilities"][n] for n in task.label_names]
        assert max(abs(a - float(b)) for a, b in zip(got, p, strict=True)) < 1e-5
    metrics = evaluate_model(clf.model, clf.tokenizer, task.test, task.label_names)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert len(metrics["confusion_matrix"]) == task.num_labels


def test_padding_rows_of_stacked_batches_carry_no_loss() -> None:
    a = {"input_ids": torch.tensor([[2, 7, 3]]), "attention_mask": torch.tensor([[1, 1, 1]]),
         "labels": torch.tensor([1])}
    b = {"input_ids": torch.tensor([[2, 9, 9, 3], [2, 8, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1],
                                                                                                   [1, 1, 1, 0]]),
         "labels": torch.tensor([0, 1])}
    s = stack_member_batches([a, b], pad_id=0)
    assert s["input_ids"].shape == (2, 2, 4)
    assert s["labels"].tolist() == [[1, IGNORE_INDEX], [0, 1]]
    assert s["attention_mask"][0].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
