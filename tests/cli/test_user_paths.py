"""Hardened user paths (issue 27): each case is correct behaviour or one line on stderr, exit status 2 and nothing
written. Evaluation never scores rows the run trained on; a run folder has one writer (tests/core/test_folders.py);
every command that needs a classifier says what it got instead; ports are checked before the model loads; a
missing teacher or export source is "not found" before anything is written; an export cleans up after a killed one.

Models are tiny: a few steps of the `demo` model on the shipped example CSV, or random weights.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from cli_errors import one_line_error
from tinylm.checkpoint import save_model
from tinylm.cli import main
from tinylm.config import ModelConfig
from tinylm.model import BertForClassification, BertForMLM
from tinylm.tokenizer import load_tokenizer
from tinylm.train.rows import ROWS_FILE

EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "ag_news_sample.csv"
OWN = ["--text-column", "content", "--label-column", "label"]
TINY = ["--preset", "demo", "--tokenizer", "tinylm-wiki-4k", "--epochs", "1", "--max-length", "32",
        "--batch-size", "64"]
LABELS = ["1", "2", "3", "4"]


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    """main(argv) exits 2 with one line on stderr holding every word."""
    capsys.readouterr()
    return one_line_error(capsys, argv, *words).strip()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model fine-tuned on the example CSV with 20 % held out (seed 42): 320 training rows, 80 test rows."""
    out = tmp_path_factory.mktemp("paths") / "ft"
    assert main(["finetune", *TINY, "--train-file", str(EXAMPLE_CSV), *OWN, "--test-fraction", "0.2",
                 "--out", str(out)]) == 0
    return out


def tiny(vocab: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=64)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random tiny classifier and a random tiny pre-trained (MLM) model, with the shipped 4k vocabulary."""
    root, tokenizer = tmp_path_factory.mktemp("kinds"), load_tokenizer("tinylm-wiki-4k")
    torch.manual_seed(0)
    return {"classifier": save_model(BertForClassification(tiny(len(tokenizer)), 4), root / "clf", tokenizer,
                                     label_names=LABELS),
            "mlm": save_model(BertForMLM(tiny(len(tokenizer))), root / "pt" / "model", tokenizer)}


# ---------------------------------------------------------------- 1: evaluate never scores training rows


def test_the_run_records_its_rows(run: Path) -> None:
    rows = json.loads((run / ROWS_FILE).read_text())
    assert len(rows["train"]) == 320 and len(rows["test"]) == 80 and not set(rows["train"]) & set(rows["test"])


def test_evaluate_reuses_the_runs_split_and_refuses_another(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = ["evaluate", str(run), "--train-file", str(EXAMPLE_CSV), *OWN]
    for extra, asked in ((["--test-fraction", "0.5"], "--test-fraction 0.5 --data-seed 42"),
                         (["--test-fraction", "0.2", "--data-seed", "7"], "--test-fraction 0.2 --data-seed 7")):
        err = fails(capsys, [*own, *extra], "split with --test-fraction 0.2 --data-seed 42", asked,
                    "would score rows it trained on")
        assert err.startswith(f"tinylm: error: {run} was fine-tuned on ag_news_sample.csv")
    trained = json.loads((run / "metrics.json").read_text())
    for extra in ([], ["--test-fraction", "0.2"], ["--data-seed", "42"]):  # left out: the run's own split
        assert main([*own, *extra]) == 0
        scored = json.loads(capsys.readouterr().out)
        assert sum(map(sum, scored["confusion_matrix"])) == 80
        assert scored["confusion_matrix"] == trained["confusion_matrix"]


def test_evaluate_refuses_rows_the_run_trained_on(run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fails(capsys, ["evaluate", str(run), "--test-file", str(EXAMPLE_CSV), *OWN],
          f"{run} was trained on 320 of the 400 rows to evaluate", "score held-out rows")
    fails(capsys, ["evaluate", str(run / "model"), "--test-file", str(EXAMPLE_CSV), *OWN], "trained on 320")
    fresh = tmp_path / "fresh.csv"
    fresh.write_text("label,content\n3,Stocks rallied after the central bank held rates.\n2,The team won the cup.\n")
    assert main(["evaluate", str(run), "--test-file", str(fresh), *OWN]) == 0


# ---------------------------------------------------------------- 3, 8: a pre-trained folder where a classifier goes


def test_every_classifier_command_refuses_a_pretrained_folder(folders: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    mlm = folders["mlm"].parent  # its run folder, as a user names it
    said = (f"{mlm} is a pre-trained (MLM) folder, not a classifier; fine-tune it first "
            f"(tinylm finetune --init {mlm} ...)")
    for argv in (["predict", str(mlm), "a text"],
                 ["evaluate", str(mlm), "--test-file", str(EXAMPLE_CSV), *OWN],
                 ["serve", str(mlm), "--port", "8765"],
                 ["export", "onnx", str(mlm), "--out", str(tmp_path / "x" / "m.onnx")],
                 ["distill", "--teacher", str(mlm), "--task", "ag_news", "--out", str(tmp_path / "student")]):
        assert fails(capsys, argv) == f"tinylm: error: {said}", argv
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- 4, 13: ports


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_a_port_outside_1_to_65535_is_an_argument_error(folders: dict[str, Path], port: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(folders["classifier"]), "--port", port])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert err[-1] == f"tinylm serve: error: argument --port: expected a port from 1 to 65535, got '{port}'"


def test_a_port_in_use_is_the_last_line_before_the_model_loads(folders: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tinylm.inference.predictor import Predictor

    def never(*args: object, **kwargs: object) -> None:
        pytest.fail("the model was loaded although the port is taken")

    monkeypatch.setattr(Predictor, "load", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fails(capsys, ["serve", str(folders["classifier"]), "--port", str(port)],
              f"127.0.0.1:{port} is already in use (another server?); give another --port")


# ---------------------------------------------------------------- 9, 10: missing sources, stale temporaries


def test_a_missing_teacher_or_export_source_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for argv in (["distill", "--teacher", "runs/nope", "--task", "ag_news", "--out", "runs/student"],
                 ["distill", "--teacher", "runs/nope", "--out", "runs/student"],
                 ["export", "onnx", "runs/nope"],
                 ["predict", "runs/nope", "a text"]):
        assert fails(capsys, argv) == "tinylm: error: runs/nope: not found", argv
    assert os.listdir(tmp_path / "runs") == []


def test_an_export_removes_what_a_killed_export_left(folders: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    from tinylm.inference.onnx import remove_stale_temporaries

    graph = tmp_path / "model.int8.onnx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: its temporaries are stale
    stale = [tmp_path / f".model.int8.onnx.{dead_pid}.tmp", tmp_path / f".model.int8.onnx.{dead_pid}.tmp.int8"]
    running = tmp_path / f".model.int8.onnx.{os.getppid()}.tmp"  # a live process's export: kept
    others = [tmp_path / f".model.onnx.{dead_pid}.tmp", tmp_path / ".model.int8.onnx.json.tmp"]  # other targets
    for path in (*stale, running, *others):
        path.write_bytes(b"partial")
    assert sorted(remove_stale_temporaries(graph)) == sorted(stale)
    assert all(p.exists() for p in (running, *others))

    folder = folders["classifier"]  # and a real export runs it: its own target's stale files go
    leftover = folder / f".model.onnx.{dead_pid}.tmp"
    leftover.write_bytes(b"partial")
    check = ["--check-texts", str(tmp_path / "texts.txt")]
    (tmp_path / "texts.txt").write_text("Oil prices rose sharply.\nThe team won the cup.\n")
    assert main(["export", "onnx", str(folder), *check]) == 0
    assert not leftover.exists() and (folder / "model.onnx").is_file()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
