"""`tinylm reproduce deploy` end to end on a tiny committee run: a student is distilled, every system is exported
(fp32 and int8), measured, and reported; a second run re-uses every student and graph.

The committee run is `reproduce committee` at a tiny scale: 2 cpu-1 members against cpu-6, pre-trained for 3 steps
on the committed Wikipedia sample and fine-tuned on the committed AG News sample (tests/fixtures/data).
"""

from __future__ import annotations

import json

import pytest
import torch

from tinylm.cli import main
from tinylm.committee import load_committee
from tinylm.config import replace
from tinylm.data import load_task
from tinylm.experiments import deploy as recipe
from tinylm.experiments.committee import CommitteeScale, reproduce_committee
from tinylm.experiments.deploy import RUNTIMES, DeployScale, reproduce_deploy
from tinylm.experiments.scales import SCALES
from tinylm.inference.predictor import Predictor
from tinylm.reports.deploy import frontier, int8_finding, student_finding
from tinylm.train.evaluate import evaluate_model

COMMITTEE = CommitteeScale(
    name="tiny", members=2, member_model="cpu-1", deep_model="cpu-6",
    pretrain=replace(SCALES["cpu"].pretrain, articles=48, epochs=1, batch_size=16, seq_len=64),
    finetune=replace(SCALES["cpu"].finetune, epochs=2, max_length=64),
    samples={"ag_news": (6, 10)}, seeds=1, committee_sizes=(1, 2),
)
DEPLOY = DeployScale(name="tiny", committee_sizes=(1,), distill={"epochs": 1, "unlabeled": "pool",
                                                                  "unlabeled_texts": 16},
                     latency_texts=6, throughput_batches=2, batch_size=8, warmup=1, parity_texts=8)
SYSTEMS = ("deep", "committee-2", "committee-1", "student")


@pytest.fixture(scope="module")
def committee_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("committee") / "run"
    reproduce_committee(COMMITTEE, out, tasks=("ag_news",), root=data_root)
    return out


@pytest.fixture(scope="module")
def deployed(committee_run, tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("deploy") / "out"
    return out, reproduce_deploy(DEPLOY, committee_run, out, root=data_root)


def test_every_system_and_runtime_is_a_row_with_accuracy_and_latency(deployed, committee_run, data_root) -> None:
    out, results = deployed
    rows = {r["system"]: r for r in results["rows"]}
    suffix = {"torch": "", "onnx": "-onnx", "onnx-int8": "-int8"}
    assert set(rows) == {s + suffix[rt] for s in SYSTEMS for rt in RUNTIMES}
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
    for r in rows.values():
        assert r["task"] == "ag_news" and 0 <= r["accuracy"] <= 1
        for tail in ("", "_all_threads"):
            assert 0 < r["p50_ms_batch1" + tail] <= r["p95_ms_batch1" + tail] and r["throughput_batch64" + tail] > 0
    # Accuracy is the committee run's own test sample, in fp32: the torch rows are what `evaluate` computes.
    test = load_task("ag_news", data_root, train_per_label=0, test_per_label=10, seed=42)
    for system in ("deep", "committee-2", "student"):
        clf = Predictor.load(_folder(results, out, committee_run, system))
        expected = evaluate_model(clf.model, clf.tokenizer, test.test, test.label_names)["accuracy"]
        assert rows[system]["accuracy"] == pytest.approx(expected)
        assert rows[system + "-onnx"]["accuracy"] == rows[system]["accuracy"]  # fp32 graphs: same answers
        int8 = rows[system + "-int8"]
        assert int8["accuracy_loss_points"] == pytest.approx(100 * (rows[system + "-onnx"]["accuracy"]
                                                                    - int8["accuracy"]), abs=1e-9)
        assert int8["within_tolerance"] == (int8["accuracy_loss_points"] <= DEPLOY.accuracy_tolerance)
        assert int8["bytes"] < rows[system + "-onnx"]["bytes"] / 2
    # Committees of k are the disjoint member groups; the timed committee-1 is member 0 alone.
    assert rows["committee-2"]["accuracy_groups"] == [rows["committee-2"]["accuracy"]]
    assert len(rows["committee-1"]["accuracy_groups"]) == 2
    assert rows["committee-1"]["accuracy_groups"][0] == pytest.approx(rows["committee-1"]["accuracy"])
    full = load_committee(_folder(results, out, committee_run, "committee-2"))
    one = load_committee(out / "systems" / "ag_news-seed42" / "committee-1")
    for name, t in one.stacked().items():
        assert torch.equal(t, full.stacked()[name][:1]), name
    assert rows["committee-2"]["parameters"] == 2 * rows["committee-1"]["parameters"]


def test_student_comparison_and_report(deployed) -> None:
    out, results = deployed
    rows = {r["system"]: r for r in results["rows"]}
    (student,) = results["students"]
    assert student["unlabeled_examples"] == 16 and student["teacher_members"] == 2
    (comparison,) = results["comparisons"]
    b = comparison["student_minus_committee"]
    assert b["low"] <= b["difference"] <= b["high"]
    assert b["difference"] == pytest.approx(rows["student"]["accuracy"] - rows["committee-2"]["accuracy"], abs=1e-9)
    for name in ("results.json", "report.md", "report.html", "frontier.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "student minus committee-2" in report and "| student-int8 | onnx-int8 |" in report
    assert "frontier.png" in report and "data:image/png;base64," in (out / "report.html").read_text()


def test_a_second_run_reuses_students_and_graphs(deployed, committee_run, data_root, monkeypatch) -> None:
    out, results = deployed

    def refuse(*args, **kwargs):
        raise AssertionError("a finished student or graph was made again")

    monkeypatch.setattr(recipe, "distill", refuse)
    monkeypatch.setattr(recipe, "export_onnx", refuse)
    quick = replace(DEPLOY, latency_texts=1, throughput_batches=1, warmup=0)  # timings are not compared
    again = reproduce_deploy(quick, committee_run, out, root=data_root)
    keep = ("system", "accuracy", "bytes")
    assert [{k: r[k] for k in keep} for r in again["rows"]] == [{k: r[k] for k in keep} for r in results["rows"]]


def test_cli_needs_a_finished_committee_run(tmp_path, capsys) -> None:
    assert main(["reproduce", "deploy", "--out", str(tmp_path / "x")]) == 2
    assert "--from" in capsys.readouterr().err
    assert main(["reproduce", "deploy", "--from", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "results.json" in capsys.readouterr().err


def test_frontier_and_findings_follow_the_numbers() -> None:
    assert frontier([(1.0, 50.0), (2.0, 40.0), (3.0, 70.0), (0.5, 30.0), (4.0, 70.0)]) == [
        (0.5, 30.0), (1.0, 50.0), (3.0, 70.0)]

    def row(system: str, runtime: str, accuracy: float, p50: float) -> dict:
        return {"system": system, "model": system.split("-onnx")[0].split("-int8")[0], "runtime": runtime,
                "seed": 1, "accuracy": accuracy, "p50_ms_batch1": p50}

    rows = [row("committee-8", "torch", 0.80, 10.0), row("student", "torch", 0.795, 0.9),
            row("student-onnx", "onnx", 0.795, 0.6), row("student-int8", "onnx-int8", 0.795, 0.3)]
    boot = {"difference": -0.005, "low": -0.02, "high": 0.01}
    good = student_finding("ag_news", rows, [{"seed": 1, "student_minus_committee": boot}], 8)
    assert "meets both targets" in good and "-0.5 points" in good and "0.09x" in good
    slow = [*rows[:1], row("student", "torch", 0.795, 2.0)]
    assert "not at 1/10" in student_finding("ag_news", slow, [{"seed": 1, "student_minus_committee": boot}], 8)
    assert "meets the target for every system" in int8_finding("ag_news", rows, 0.5)
    rows[-1]["p50_ms_batch1"] = 0.5  # 1.2x only
    assert "misses the target" in int8_finding("ag_news", rows, 0.5)


def _folder(results: dict, out, committee_run, system: str):
    record = json.loads((committee_run / "results.json").read_text())["records"][0]
    runs = committee_run / "runs"
    if system == "deep":
        return runs / record["runs"]["deep_finetune"] / "model"
    if system == "student":
        return out / "runs" / results["students"][0]["run"] / "model"
    return runs / record["runs"]["committee_finetune"] / "model"


def test_scale_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        DeployScale(name="x", committee_sizes=(0,), distill={})
    with pytest.raises(ValueError):
        DeployScale(name="x", committee_sizes=(2,), distill={"temperature": -1.0})
    with pytest.raises(TypeError):
        DeployScale(name="x", committee_sizes=(2,), distill={"no_such_field": 1})
