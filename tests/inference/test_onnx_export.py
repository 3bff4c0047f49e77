"""`tinylm export onnx`: a fine-tuned model and a soft committee, each as one ONNX graph, give PyTorch's class
probabilities through onnxruntime on real AG News texts.

Tolerance: max |p_torch - p_onnx| <= 1e-5 (inference.onnx.PARITY_TOLERANCE) on probabilities, fp32 both;
measured differences are ~1e-7. The references are the repo's own paths, independent of the export code: for a
model, train.evaluate.predict_proba (model.py's forward); for a committee, the mean of its members'
probabilities, each member run on its own. The models are fine-tuned here (demo preset, shipped AG News sample,
a few steps each).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest

from tinylm.checkpoint import load_model
from tinylm.cli import main
from tinylm.committee import Committee, save_committee
from tinylm.config import FINETUNE_PRESETS, replace
from tinylm.data import load_task
from tinylm.experiments.demo import DEMO_DATA
from tinylm.inference.onnx import ACCURACY_TOLERANCE, PARITY_TOLERANCE, export_onnx, report_path
from tinylm.inference.predictor import Predictor
from tinylm.serving.app import create_app
from tinylm.serving.server import running
from tinylm.tokenizer import load_tokenizer
from tinylm.train.evaluate import predict_proba
from tinylm.train.finetune import finetune

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list:
    """Three demo-size AG News classifiers fine-tuned from scratch with different seeds (40 steps each)."""
    root = tmp_path_factory.mktemp("members")
    base = replace(FINETUNE_PRESETS["demo"], task="ag_news", tokenizer="tinylm-wiki-4k", train_per_label=64,
                   test_per_label=4, epochs=5, max_length=64, lr=2e-3, save_every=1000)
    folders = []
    for seed in SEEDS:
        finetune(replace(base, seed=seed), root / f"m{seed}", root=DEMO_DATA)
        folders.append(root / f"m{seed}" / "model")
    return folders


@pytest.fixture(scope="module")
def committee_dir(members, tmp_path_factory):
    models = [load_model(f, head="classification") for f in members]
    labels = ["World", "Sports", "Business", "Sci/Tech"]
    return save_committee(Committee.from_members(models).eval(), tmp_path_factory.mktemp("committee") / "c",
                          load_tokenizer(members[0]), label_names=labels)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real AG News test texts (the shipped sample), a different draw from the export's own check texts."""
    return [e.text for e in load_task("ag_news", DEMO_DATA, train_per_label=0, test_per_label=12, seed=11).test]


def reference_proba(folder, texts: list[str]) -> np.ndarray:
    model = load_model(folder, head="classification")
    return predict_proba(model, load_tokenizer(folder), texts, batch_size=8)


def onnx_proba(folder, graph, texts: list[str], batch_size: int) -> np.ndarray:
    return Predictor.load(folder, "onnx", onnx_path=graph).predict_proba(texts, batch_size=batch_size)


def test_model_export_matches_pytorch(members, texts, tmp_path) -> None:
    graph = tmp_path / "model.onnx"
    report = export_onnx(members[0], graph)
    assert graph.is_file() and json.loads(report_path(graph).read_text())["parity"] == report["parity"]
    assert report["parity"]["max_abs_diff"] <= PARITY_TOLERANCE and report["parity"]["texts"] == 64
    expected = reference_proba(members[0], texts)
    assert expected.std() > 0.01  # a trained model, not a uniform answer
    for batch_size in (1, 16):  # no padding, and padded batches of mixed lengths
        got = onnx_proba(members[0], graph, texts, batch_size)
        assert np.abs(got - expected).max() <= PARITY_TOLERANCE
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_committee_exports_as_one_graph_with_the_soft_vote(members, committee_dir, texts, tmp_path) -> None:
    graph = tmp_path / "committee.onnx"
    report = export_onnx(committee_dir, graph)
    assert report["kind"] == "committee" and report["members"] == len(SEEDS)
    assert report["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    # The soft vote from the members run one by one, as ordinary models.
    expected = np.mean([reference_proba(m, texts) for m in members], axis=0)
    got = onnx_proba(committee_dir, graph, texts, batch_size=16)
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE
    # One graph whose op sequence does not grow with the member count: the same nodes as a committee of one's.
    one = save_committee(Committee.from_members([load_model(members[0], head="classification")]).eval(),
                         tmp_path / "one", load_tokenizer(members[0]), label_names=["a", "b", "c", "d"])
    single = tmp_path / "single.onnx"
    export_onnx(one, single, check_texts=texts[:8])
    committee_graph, single_graph = onnx.load(str(graph)).graph, onnx.load(str(single)).graph
    assert [i.name for i in committee_graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in committee_graph.output] == ["probabilities"]
    assert len(committee_graph.node) == len(single_graph.node)


def test_export_command_and_predict_with_the_onnx_runtime(members, capsys) -> None:
    folder = members[1]
    assert main(["export", "onnx", str(folder)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (folder / "model.onnx").is_file() and (folder / "model.onnx.json").is_file()
    assert printed["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    sample = ["Oil prices rose sharply on Monday.", "The team won the cup after extra time."]
    outputs = {}
    for runtime in ("torch", "onnx"):
        assert main(["predict", "--runtime", runtime, str(folder), *sample]) == 0
        outputs[runtime] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Options may also follow the model folder and come between the texts.
    assert main(["predict", str(folder), sample[0], "--runtime", "onnx", sample[1]]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == outputs["onnx"]
    with pytest.raises(SystemExit) as exit_info:  # an unknown flag is still argparse's usage error
        main(["predict", str(folder), sample[0], "--no-such-flag"])
    assert exit_info.value.code == 2
    capsys.readouterr()
    for a, b in zip(outputs["torch"], outputs["onnx"], strict=True):
        assert a["text"] == b["text"] and a["label"] == b["label"]
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()),
                                   atol=PARITY_TOLERANCE)


def test_server_with_the_onnx_runtime(members, texts) -> None:
    import httpx

    folder = members[1]
    if not (folder / "model.onnx").is_file():
        export_onnx(folder, check_texts=texts[:8])
    predictor = Predictor.load(folder, "onnx")
    with running(create_app(predictor)) as url:
        info = httpx.get(url + "/info").json()
        r = httpx.post(url + "/predict", json={"texts": texts[:6]}, timeout=30)
    assert info["runtime"] == "onnx" and r.status_code == 200
    expected = reference_proba(folder, texts[:6])
    got = np.array([[p["probabilities"][k] for k in info["labels"]] for p in r.json()["predictions"]])
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE + 1e-6  # answers are rounded to 6 decimals


def test_onnx_runtime_without_an_exported_graph_is_a_clear_error(committee_dir, capsys) -> None:
    assert main(["predict", "--runtime", "onnx", str(committee_dir), "some text"]) == 2
    err = capsys.readouterr().err
    assert "tinylm export onnx" in err and "Traceback" not in err


# ----- int8: ONNX Runtime's dynamic quantization, judged by test accuracy -----


def test_int8_export_of_a_model_and_a_committee_is_checked_on_accuracy(members, committee_dir, texts,
                                                                       tmp_path) -> None:
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    plain = export_onnx(members[0], fp32, root=DEMO_DATA)
    report = export_onnx(members[0], int8, quantize="int8", root=DEMO_DATA)
    assert json.loads(report_path(int8).read_text())["accuracy"] == report["accuracy"]
    # The accuracy check ran on the test sample the model's stored fine-tuning config names (4 per label).
    acc = report["accuracy"]
    assert acc["task"] == "ag_news" and acc["texts"] == 16 and acc["tolerance_points"] == ACCURACY_TOLERANCE
    assert acc["loss_points"] == pytest.approx(100 * (acc["torch_fp32"] - acc["onnx"]))
    assert acc["loss_points"] <= ACCURACY_TOLERANCE and plain["accuracy"]["loss_points"] == 0
    assert report["fp32_parity"]["max_abs_diff"] <= PARITY_TOLERANCE and report["parity"]["tolerance"] is None
    # int8 weights: the graph is well under half the fp32 one, and its answers stay close to PyTorch's.
    assert int8.stat().st_size < fp32.stat().st_size / 2.5
    expected = reference_proba(members[0], texts)
    got = onnx_proba(members[0], int8, texts, batch_size=16)
    assert np.abs(got - expected).max() < 0.05 and (got.argmax(1) == expected.argmax(1)).mean() >= 0.9
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    # A committee folder stores no fine-tuning config here: an int8 graph needs a test sample to be judged on.
    with pytest.raises(ValueError, match="test sample"):
        export_onnx(committee_dir, tmp_path / "c.int8.onnx", quantize="int8")
    sample = load_task("ag_news", DEMO_DATA, train_per_label=0, test_per_label=5, seed=3)
    report = export_onnx(committee_dir, tmp_path / "c.int8.onnx", quantize="int8", task_data=sample,
                         accuracy_tolerance=None)
    assert report["members"] == len(SEEDS) and report["accuracy"]["texts"] == 20
    assert report["accuracy"]["tolerance_points"] is None


def test_an_int8_graph_that_loses_accuracy_is_refused(members, tmp_path, monkeypatch) -> None:
    """A quantizer whose graph answers "World" for every text (a broken quantization, made to order) loses the
    model's accuracy above chance: the export refuses it and leaves no graph behind."""
    import torch

    import tinylm.inference.onnx as onnx_export

    class AlwaysFirst(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            zero = (input_ids[:, :1] * 0 + attention_mask[:, :1] * 0).float()
            return torch.cat([zero + 1, zero, zero, zero], dim=1)

    def broken(graph, out):
        ids = torch.ones((2, 3), dtype=torch.long)
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices, as onnx_export silences
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(AlwaysFirst(), (ids, ids), str(out), input_names=["input_ids", "attention_mask"],
                              output_names=["probabilities"], dynamo=False,
                              dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}})
        return {"method": "broken on purpose"}

    sample = load_task("ag_news", DEMO_DATA, train_per_label=0, test_per_label=25, seed=4)
    torch_acc = float(np.mean(reference_proba(members[0], [e.text for e in sample.test]).argmax(1)
                              == [e.label for e in sample.test]))
    assert torch_acc > 0.25 + ACCURACY_TOLERANCE / 100  # above the constant answer's 25 %, so it must be refused
    monkeypatch.setattr(onnx_export, "quantize_int8", broken)
    with pytest.raises(RuntimeError, match="accuracy check failed"):
        export_onnx(members[0], tmp_path / "bad.int8.onnx", quantize="int8", task_data=sample)
    assert list(tmp_path.iterdir()) == []
    # With the tolerance raised past the loss, the same graph is written, its loss on record.
    report = export_onnx(members[0], tmp_path / "bad.int8.onnx", quantize="int8", task_data=sample,
                         accuracy_tolerance=100.0)
    assert report["accuracy"]["onnx"] == 0.25
    assert report["accuracy"]["loss_points"] == pytest.approx(100 * (torch_acc - 0.25))


def test_export_command_quantizes_and_names_the_task(members, committee_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli.int8.onnx"
    assert main(["--data", str(DEMO_DATA), "export", "onnx", str(members[2]), "--quantize", "int8", "--out",
                 str(out), "--accuracy-tolerance", "100"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["quantize"] == "int8" and printed["accuracy"]["texts"] == 16 and out.is_file()
    # No stored task: the command says so, and --task names one.
    assert main(["export", "onnx", str(committee_dir), "--quantize", "int8", "--out", str(tmp_path / "c.onnx")]) == 2
    assert "--task" in capsys.readouterr().err
    assert main(["--data", str(DEMO_DATA), "export", "onnx", str(committee_dir), "--quantize", "int8", "--task",
                 "ag_news", "--test-per-label", "3", "--accuracy-tolerance", "100", "--out",
                 str(tmp_path / "c.onnx")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"]["texts"] == 12
