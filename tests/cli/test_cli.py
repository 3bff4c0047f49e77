"""The CLI end to end on real data slices, its errors on bad input, and the shipped demo."""

from __future__ import annotations

import json
import shutil

import pytest

from tinylm.cli import main
from tinylm.experiments.demo import DEMO_DATA


def test_pretrain_finetune_evaluate_predict_end_to_end(tmp_path, data_root, capsys) -> None:
    """The whole path through the CLI: pre-train, fine-tune from it and from scratch, evaluate, predict."""
    common = ["--data", str(data_root)]
    assert main([*common, "pretrain", "--preset", "demo", "--articles", "64", "--epochs", "1", "--seq-len", "64",
                 "--out", str(tmp_path / "pt")]) == 0
    ft = ["finetune", "--preset", "demo", "--task", "ag_news", "--train-per-label", "12", "--test-per-label", "6",
          "--epochs", "1", "--max-length", "64"]
    assert main([*common, *ft, "--init", str(tmp_path / "pt"), "--out", str(tmp_path / "ft")]) == 0
    assert main([*common, *ft, "--tokenizer", str(tmp_path / "pt"), "--out", str(tmp_path / "scratch")]) == 0
    capsys.readouterr()

    assert main([*common, "evaluate", str(tmp_path / "ft"), "--task", "ag_news", "--test-per-label", "6",
                 "--out", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    trained = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert evaluated["accuracy"] == trained["accuracy"]  # same test sample, same model, same answer
    assert sum(map(sum, evaluated["confusion_matrix"])) == 24

    capsys.readouterr()
    assert main(["predict", str(tmp_path / "ft"), "Oil prices rose sharply on Monday.", "The team won the cup."]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["label"] in {"World", "Sports", "Business", "Sci/Tech"}
        assert abs(sum(line["probabilities"].values()) - 1) < 1e-4


def _copy_ag_news(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root / "ag_news", root / "ag_news")
    return root


@pytest.mark.parametrize(
    ("bad_line", "expect"),
    [
        ('"3","only two columns"', "test.csv:5"),
        ('"9","Title","Description"', "test.csv:5"),
        ('"x","Title","Description"', "test.csv:5"),
    ],
)
def test_bad_task_csv_gives_one_line_error_and_no_output(tmp_path, data_root, capsys, bad_line, expect) -> None:
    root = _copy_ag_news(data_root, tmp_path)
    test_csv = root / "ag_news" / "test.csv"
    lines = test_csv.read_text().splitlines()
    lines[4] = bad_line
    test_csv.chmod(0o644)
    test_csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    code = main(["--data", str(root), "finetune", "--preset", "demo", "--task", "ag_news",
                 "--tokenizer", "bert-base-uncased", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert expect in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_data_file_is_a_clear_error(tmp_path, capsys) -> None:
    (tmp_path / "wikipedia").mkdir()
    code = main(["--data", str(tmp_path), "pretrain", "--preset", "demo", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "articles.jsonl" in err
    assert not (tmp_path / "run").exists()


def test_unknown_model_preset_is_a_clear_error(tmp_path, data_root, capsys) -> None:
    code = main(["--data", str(data_root), "pretrain", "--model", "bert-99", "--articles", "8",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "unknown model preset 'bert-99'" in capsys.readouterr().err


def test_demo_data_is_small_and_readable() -> None:
    size = sum(p.stat().st_size for p in DEMO_DATA.rglob("*") if p.is_file())
    assert 0 < size < 5e6
    from tinylm.data import load_articles, load_task

    task = load_task("ag_news", DEMO_DATA, train_per_label=250, test_per_label=250)
    assert len(task.train) == 1000 and len(task.test) == 1000
    assert len(load_articles(100, root=DEMO_DATA)) == 100


# The full demo (slow) is tests/experiments/test_demo_figures.py: it checks the figures the README shows.
