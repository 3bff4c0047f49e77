"""`tinylm reproduce committee` at a tiny scale: committee training, the accuracy-vs-size records and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinylm.cli import main
from tinylm.committee import load_committee, soft_vote
from tinylm.config import replace
from tinylm.experiments import committee as recipe
from tinylm.experiments import run_cache as runs_module
from tinylm.experiments.committee import CommitteeScale, committee_record, paired_bootstrap, reproduce_committee
from tinylm.experiments.scales import SCALES
from tinylm.train.committee import finetune_committee, member_seeds, pretrain_committee

TINY = CommitteeScale(
    name="tiny", members=4, member_model="cpu-1", deep_model="cpu-6",
    pretrain=replace(SCALES["cpu"].pretrain, articles=48, epochs=1, batch_size=16, seq_len=64),
    finetune=replace(SCALES["cpu"].finetune, epochs=2, max_length=64),
    samples={"ag_news": (6, 10)}, seeds=1, committee_sizes=(1, 2, 4, 8),
)


def test_committee_sweep_writes_records_and_report_then_reuses_runs(tmp_path, data_root, monkeypatch) -> None:
    out = tmp_path / "committee"
    results = reproduce_committee(TINY, out, tasks=("ag_news",), root=data_root)
    assert results["committee_sizes"] == [1, 2, 4]  # sizes above the member count are dropped
    (rec,) = results["records"]
    # k = 1 committees are the members themselves; the k = N committee is the full soft vote.
    assert rec["subsets"]["1"]["soft"] == rec["member_accuracies"]
    assert len(rec["subsets"]["2"]["soft"]) == 2 and len(rec["subsets"]["4"]["soft"]) == 1
    ft_dir = out / "runs" / rec["runs"]["committee_finetune"]
    metrics = json.loads((ft_dir / "metrics.json").read_text())
    assert rec["subsets"]["4"]["soft"][0] == pytest.approx(metrics["soft_vote"]["accuracy"])
    # The stored committee reproduces the stored member probabilities.
    committee = load_committee(ft_dir / "model")
    assert committee.n == 4 and committee.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert 0 <= rec["deep_accuracy"] <= 1
    b = rec["committee_minus_deep"]
    assert b["low"] <= b["difference"] <= b["high"]
    for name in ("results.json", "report.md", "report.html", "accuracy_vs_members.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "committee of 4 minus cpu-6" in report and "| 4 |" in report

    # A second call trains nothing.
    def refuse(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    for name in ("pretrain_committee", "finetune_committee"):
        monkeypatch.setattr(recipe, name, refuse)
    monkeypatch.setattr(runs_module, "pretrain", refuse)
    monkeypatch.setattr(runs_module, "finetune", refuse)
    again = reproduce_committee(TINY, out, tasks=("ag_news",), root=data_root)
    assert again["records"] == results["records"]


def test_committee_training_gives_independent_members_and_resumes_exactly(tmp_path, data_root) -> None:
    cfg = replace(TINY.pretrain, model="cpu-1", seed=3)
    full = pretrain_committee(cfg, 3, tmp_path / "full", root=data_root)
    assert full["steps"] == 3  # 48 articles / batch 16, one epoch
    # Killed after one step and resumed: the same weights as the unbroken run.
    pretrain_committee(cfg, 3, tmp_path / "resumed", root=data_root, stop_after=1)
    pretrain_committee(cfg, 3, tmp_path / "resumed", root=data_root)
    a, b = load_committee(tmp_path / "full" / "model"), load_committee(tmp_path / "resumed" / "model")
    for (name, x), y in zip(a.stacked().items(), b.stacked().values(), strict=True):
        assert torch.equal(x, y), name
    # Members differ (own initialisation, order, masks); member 0 keeps the committee's seed.
    emb = a.stacked()["bert.embeddings.word_embeddings.weight"]
    assert not torch.equal(emb[0], emb[1])
    assert member_seeds(3, 3) == [3, 1003, 2003]

    ft = replace(TINY.finetune, task="ag_news", init=str(tmp_path / "full"), train_per_label=6, test_per_label=10)
    result = finetune_committee(ft, 3, tmp_path / "ft", root=data_root)
    probs = np.load(tmp_path / "ft" / "member_probs.npy")
    assert probs.shape == (3, 40, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    labels = np.load(tmp_path / "ft" / "test_labels.npy")
    assert result["soft_vote"]["accuracy"] == pytest.approx(float((soft_vote(probs).argmax(-1).numpy() == labels)
                                                                  .mean()))
    # The fine-tuned encoders started from the pre-trained ones (not from fresh weights).
    ft_committee = load_committee(tmp_path / "ft" / "model")
    pre_emb, ft_emb = emb, ft_committee.stacked()["bert.embeddings.word_embeddings.weight"]
    fresh = torch.nn.init.normal_(torch.empty_like(pre_emb[0]), std=0.02)
    assert (ft_emb - pre_emb).abs().mean() < (fresh - pre_emb[0]).abs().mean() / 4


def test_committee_record_and_bootstrap_on_known_votes() -> None:
    labels = np.array([0, 1, 1, 0])
    # Member 0 right on all, member 1 right on the first two, members 2-3 wrong everywhere but confident-free.
    eye = np.eye(2, dtype=np.float32)
    right = eye[labels]
    wrong = eye[1 - labels]
    half = np.stack([right[0], right[1], wrong[2], wrong[3]])
    probs = np.stack([right, half, wrong * 0.6 + right * 0.4, wrong * 0.6 + right * 0.4])
    rec = committee_record(probs, labels, (1, 2, 4))
    assert rec["member_accuracies"] == [1.0, 0.5, 0.0, 0.0]
    assert rec["subsets"]["1"]["soft"] == [1.0, 0.5, 0.0, 0.0]
    assert rec["subsets"]["2"]["soft"] == [0.75, 0.0]  # members 0+1: texts 2-3 tie at 0.5 -> class 0
    b = paired_bootstrap(right, wrong, labels, seed=0)
    assert b["difference"] == 1.0 and b["low"] == 1.0 and b["high"] == 1.0


def test_committee_finding_judges_several_seeds_by_their_interval_and_one_seed_by_its_texts() -> None:
    from tinylm.analysis.stats import mean_ci
    from tinylm.reports.committee import committee_finding

    straddling = [{"low": -0.05, "high": 0.01}] * 3
    below = mean_ci([-0.02, -0.03, -0.025])  # every seed behind: the interval over seeds lies below 0
    assert "falls short by 2.5 points, its interval over seeds below 0" in committee_finding(
        "t", below, straddling, 4, "deep")
    spread = mean_ci([-0.08, 0.01, 0.02])  # a mean below 0 whose interval over seeds includes 0
    text = committee_finding("t", spread, [{"low": -0.1, "high": -0.06}] * 3, 8, "deep", how=" at equal compute")
    assert "no difference the seeds resolve" in text and "committee of 8 at equal compute minus deep" in text
    assert "beats the deep model" in committee_finding("t", mean_ci([0.03, 0.04, 0.05]), straddling, 4, "deep")
    one = mean_ci([-0.02])  # one seed: only the bootstrap over test texts can judge
    assert "within what the test sample alone could produce" in committee_finding("t", one, straddling[:1], 4, "d")
    assert "within" not in committee_finding("t", one, [{"low": -0.05, "high": -0.01}], 4, "d")


def test_cli_reproduce_committee_rejects_bad_members(tmp_path) -> None:
    assert main(["reproduce", "committee", "--members", "0", "--out", str(tmp_path / "x")]) == 2


def test_equal_compute_epochs_bring_the_committee_nearest_the_deep_models_flops() -> None:
    from tinylm.experiments.committee import compute_ratio, equal_compute_epochs

    cpu = recipe.COMMITTEE_SCALES["cpu"]  # 2 epochs of batches of 16 x 128 tokens
    # A cpu-6 step costs about 3.6 cpu-1 steps (train.flops counts both on one batch).
    assert 3 < 1 / compute_ratio(cpu, 1, cpu.pretrain.epochs) < 4
    assert equal_compute_epochs(cpu, 8) == 1 and 1.05 < compute_ratio(cpu, 8, 1) < 1.2
    six = replace(cpu, pretrain=replace(cpu.pretrain, epochs=6))  # the finer grid of a longer schedule
    for members in (4, 8):
        epochs = equal_compute_epochs(six, members)
        best = compute_ratio(six, members, epochs)
        assert all(abs(best - 1) <= abs(compute_ratio(six, members, e) - 1) for e in range(1, 12))
    assert equal_compute_epochs(six, 4) == 5 and equal_compute_epochs(six, 8) == 3


@pytest.mark.slow  # ~100-200 s: six pre-trainings, each scored on the held-out openings
def test_committee_workers_then_report_compare_over_seeds_at_equal_steps_and_compute(tmp_path, data_root,
                                                                                     monkeypatch) -> None:
    scale = replace(TINY, seeds=2, committee_sizes=(1, 2, 4), compute_members=(2,))
    monkeypatch.setitem(recipe.COMMITTEE_SCALES, "cpu", scale)
    out = tmp_path / "committee"
    args = ["--data", str(data_root), "reproduce", "committee", "--scale", "cpu", "--tasks", "ag_news",
            "--out", str(out)]
    assert main([*args, "--shard", "1/2"]) == 0
    assert not (out / "results.json").exists()
    trained = sorted(p.name for p in (out / "runs").iterdir())
    assert sum(name.startswith("committee2-pretrain") for name in trained) == 2  # one per seed
    assert main([*args, "--shard", "0/2"]) == 0
    assert main(args) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == trained  # the report pass trained nothing
    results = json.loads((out / "results.json").read_text())
    assert results["compute_members"] == [2]
    for r in results["records"]:
        c = r["equal_compute"]["2"]
        assert c["members"] == 2 and len(c["member_accuracies"]) == 2 and len(c["quality"]) == 2
        assert c["epochs"] >= 1 and 0.5 < c["compute_ratio"] < 2
    report = (out / "report.md").read_text()
    assert "Committee minus cpu-6, over seeds" in report
    assert "| ag_news | 2 members, equal compute |" in report and "| ag_news | 4 members, equal steps |" in report
