"""Your own data: labelled CSV/TSV/JSON lines/Parquet files and corpora, through the loaders and the CLI.

Every bad input of the user guide's "Your own data" section (docs/user_guide.md) is a one-line error naming the
file (and row or line), exit status 2 and no run folder. Trainings here are a few steps of the `demo` model on the
shipped example CSV.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import json
import lzma
from pathlib import Path

import pytest

from cli_errors import one_line_error
from tinylm.cli import main
from tinylm.config import (
    FINETUNE_PRESETS,
    PRETRAIN_PRESETS,
    USER_DATA_FIELDS,
    FinetuneConfig,
    PretrainConfig,
    config_hash,
    replace,
)
from tinylm.data import DataError, load_task
from tinylm.data.corpus import count_documents, load_corpus, read_corpus
from tinylm.data.user_files import LabelledSource, load_labelled, load_task_data, read_labelled

EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "ag_news_sample.csv"
OWN = ["--text-column", "content", "--label-column", "label"]
TINY = ["--preset", "demo", "--tokenizer", "tinylm-wiki-4k", "--epochs", "1", "--max-length", "32"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def csv_rows(*rows: str, header: str = "label,content") -> str:
    return "\n".join([header, *rows]) + "\n"


GOOD_ROWS = [f"{label},text number {i} about {topic}" for i, (label, topic) in
             enumerate([("2", "sports"), ("10", "tech"), ("2", "football"), ("10", "chips"), ("2", "tennis"),
                        ("10", "phones"), ("3", "markets"), ("3", "banks"), ("3", "stocks")])]


def source(path: Path, **kw: object) -> LabelledSource:
    return LabelledSource(train_file=str(path), text_column="content", label_column="label", **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- configs


def test_new_config_fields_keep_every_existing_hash() -> None:
    """The run cache keys on config hashes: a config that leaves the new fields alone hashes exactly as the same
    settings did before those fields existed (its dict without them)."""
    added = {PretrainConfig: ("corpus", "text_field", "withhold", "init"),
             FinetuneConfig: (*USER_DATA_FIELDS, "dropout")}
    for cfg in [*PRETRAIN_PRESETS.values(), *FINETUNE_PRESETS.values()]:
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        before = {k: v for k, v in dataclasses.asdict(cfg).items()
                  if not (k in added[type(cfg)] and v == defaults[k])
                  and not (k == "snapshots" and not v)}  # (an older addition)
        assert cfg.to_dict() == before and config_hash(cfg) == config_hash(before)
    own = replace(FINETUNE_PRESETS["cpu"], train_file="a.csv", test_fraction=0.2)
    assert own.to_dict()["train_file"] == "a.csv" and "test_file" not in own.to_dict()
    assert config_hash(own) != config_hash(FINETUNE_PRESETS["cpu"])
    assert "corpus" in replace(PRETRAIN_PRESETS["cpu"], corpus="c.txt").to_dict()


def test_labelled_source_mirrors_the_finetune_config_fields() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    mine = {f.name: f.default for f in dataclasses.fields(LabelledSource)}
    assert tuple(mine) == USER_DATA_FIELDS and all(defaults[k] == v for k, v in mine.items())
    assert not LabelledSource.of(FinetuneConfig()).given


# ---------------------------------------------------------------- reading and labels


def test_every_format_reads_the_same_task(tmp_path: Path) -> None:
    import pandas as pd

    rows = [*GOOD_ROWS, *(row.replace("number", "no.") for row in GOOD_ROWS)]  # 6 a label: 2 test, 4 training
    csv_path = write(tmp_path / "d.csv", csv_rows(*rows))
    frame = pd.read_csv(csv_path, dtype={"label": int, "content": str})
    write(tmp_path / "d.tsv", frame.to_csv(sep="\t", index=False))
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    with gzip.open(tmp_path / "d.csv.gz", "wt", encoding="utf-8") as f:
        f.write(csv_path.read_text())
    with bz2.open(tmp_path / "d.csv.bz2", "wt", encoding="utf-8") as f:
        f.write(csv_path.read_text())
    with lzma.open(tmp_path / "d.jsonl.xz", "wt", encoding="utf-8") as f:
        f.write((tmp_path / "d.jsonl").read_text())
    tasks = [load_task_data(source(tmp_path / name, test_fraction=0.34), "")
             for name in ("d.csv", "d.tsv", "d.jsonl", "d.parquet", "d.csv.gz", "d.csv.bz2", "d.jsonl.xz")]
    assert tasks[0].label_names == ["2", "3", "10"]  # integers in numeric order, kept as written
    for task in tasks[1:]:
        assert (task.label_names, task.train, task.test) == (tasks[0].label_names, tasks[0].train, tasks[0].test)
    assert len(tasks[0].test) == 6 and {e.label for e in tasks[0].test} == {0, 1, 2}  # two of each label
    assert not {e.text for e in tasks[0].train} & {e.text for e in tasks[0].test}


def test_labels_are_kept_as_given_and_ordered(tmp_path: Path) -> None:
    strings = write(tmp_path / "s.jsonl", "".join(json.dumps({"label": name, "text": f"t {i}"}) + "\n"
                                                  for i, name in enumerate(["World", "sci/tech", "Sports"] * 2)))
    assert read_labelled(LabelledSource(train_file=str(strings)), "train").label_names() == \
        ["Sports", "World", "sci/tech"]
    # NA, null and quoted text stay text in a CSV, never a missing value
    quoted = read_labelled(source(write(tmp_path / "q.csv", csv_rows('a,"NA"', "b,null", 'a," x, y "', "b,z"))),
                           "train")
    assert {text for text, _ in quoted.rows} == {"NA", "null", "x, y", "z"}


def test_sampling_counts_split_and_validation(tmp_path: Path) -> None:
    rows = [f"{'ab'[i % 2]},row {i}" for i in range(40)]
    path = write(tmp_path / "d.csv", csv_rows(*rows))
    full = load_labelled(source(path, test_fraction=0.25))
    assert (len(full.train), len(full.test)) == (30, 10)
    few = load_labelled(source(path, test_fraction=0.25), train_per_label=5)
    assert few.test == full.test and len(few.train) == 10  # the test set does not depend on train_per_label
    assert load_labelled(source(path, test_fraction=0.25), seed=1).test != full.test
    with_val = load_task_data(source(path, test_fraction=0.25, validation_fraction=0.2), "", seed=42)
    assert (len(with_val.train), len(with_val.validation), with_val.test) == (24, 6, full.test)
    assert {e.label for e in with_val.validation} == {0, 1}
    with pytest.raises(DataError, match=r"label 0 \(a\) has 15 examples, 16 needed"):
        load_labelled(source(path, test_fraction=0.25), train_per_label=16)


def test_builtin_tasks_are_presets_of_the_same_path(data_root: Path) -> None:
    task = load_task_data(LabelledSource(), "ag_news", data_root, train_per_label=12, test_per_label=6, seed=3)
    assert task == load_task("ag_news", data_root, train_per_label=12, test_per_label=6, seed=3)
    carved = load_task_data(LabelledSource(validation_fraction=0.25), "ag_news", data_root, train_per_label=12,
                            test_per_label=6, seed=3)
    assert (len(carved.train), len(carved.validation), carved.test) == (36, 12, task.test)


def test_hub_dataset_with_class_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """--dataset NAME: the loader is the real one but for the download; a ClassLabel's names are the labels."""
    from datasets import ClassLabel, Dataset, Features, Value

    import tinylm.data.user_files as user_files

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    splits = {"train": Dataset.from_dict({"text": ["bad", "good", "awful", "great"], "label": [0, 1, 0, 1]},
                                         features=features),
              "test": Dataset.from_dict({"text": ["meh", "fine"], "label": [0, 1]}, features=features)}
    asked = []
    monkeypatch.setattr(user_files, "load_hub_split", lambda name, config, split: asked.append((name, config, split))
                        or splits[split])
    task = load_labelled(LabelledSource(dataset="someone/reviews:en"))
    assert task.label_names == ["neg", "pos"] and len(task.train) == 4 and len(task.test) == 2
    assert asked == [("someone/reviews", "en", "train"), ("someone/reviews", "en", "test")]


# ---------------------------------------------------------------- bad input: one line, file and row, exit 2


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], out: Path, *words: str) -> str:
    err = one_line_error(capsys, argv, *words)
    assert not out.exists()
    return err


@pytest.mark.parametrize(
    ("train", "test", "words"),
    [
        (csv_rows(*GOOD_ROWS, header="label,text"), None, ["no column 'content'", "the columns are: label, text"]),
        (csv_rows(*GOOD_ROWS[:4], "3,   ", *GOOD_ROWS[4:]), None, ["row 5: empty text in column 'content'"]),
        (csv_rows(*GOOD_ROWS), csv_rows("2,a", "7,b"), ["test.csv: row 2: label '7'", "not one of the training"]),
        (csv_rows("1,a", "1,b", "1,c"), None, ["train.csv: only one label ('1')"]),
        (csv_rows(*GOOD_ROWS[:3], "sports,x", *GOOD_ROWS[3:]), None, ["row 4: mixed label types", "row 1 has '2'"]),
        (csv_rows(*GOOD_ROWS, "2,caf\xe9"), None, ["train.csv:11:", "not valid UTF-8"]),
        (csv_rows(*GOOD_ROWS, ",no label"), None, ["row 10: no label in column 'label'"]),
        (csv_rows(*GOOD_ROWS, '2,"x",extra'), None, ["cannot read as CSV", "Expected 2 fields in line 11"]),
        ("", None, ["train.csv:1: empty file"]),
    ],
    ids=["missing-column", "empty-text", "label-only-in-test", "one-class", "mixed-labels", "encoding", "no-label",
         "bad-row", "empty-file"],
)
def test_bad_csv_is_one_line_naming_file_and_row(tmp_path: Path, capsys: pytest.CaptureFixture[str], train: str,
                                                 test: str | None, words: list[str]) -> None:
    train_path = tmp_path / "train.csv"
    if "\xe9" in train:
        train_path.write_bytes(train.encode("latin-1"))
    else:
        write(train_path, train)
    split = ["--test-file", str(write(tmp_path / "test.csv", test))] if test else ["--test-fraction", "0.2"]
    out = tmp_path / "run"
    _fails(capsys, ["finetune", *TINY, "--train-file", str(train_path), *split, *OWN, "--out", str(out)], out,
           "train.csv" if not test else "test.csv", *words)


def test_bad_jsonl_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"label": 1, "text": "a"}, {"label": 2, "text": "b"}, {"label": "sports", "text": "c"}]
    mixed = write(tmp_path / "mixed.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    _fails(capsys, ["finetune", *TINY, "--train-file", str(mixed), "--test-fraction", "0.3", "--out", str(out)], out,
           "mixed.jsonl: row 3: mixed label types", "'sports' is a string but row 1 has 1, an integer")
    floats = write(tmp_path / "floats.jsonl", '{"label": 1, "text": "a"}\n{"label": 2.5, "text": "b"}\n')
    _fails(capsys, ["finetune", *TINY, "--train-file", str(floats), "--test-fraction", "0.3", "--out", str(out)], out,
           "floats.jsonl: row 2: label 2.5", "must be strings or integers")


def test_bad_flags_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    base = ["finetune", *TINY, "--train-file", str(EXAMPLE_CSV), *OWN, "--out", str(out)]
    _fails(capsys, base, out, "give a test set")
    _fails(capsys, [*base, "--task", "dbpedia", "--test-fraction", "0.2"], out, "not both")
    _fails(capsys, [*base, "--test-fraction", "1.5"], out, "test_fraction: 1.5 is not allowed", "[0, 1)")
    _fails(capsys, [*base, "--test-fraction", "0.2", "--test-file", str(EXAMPLE_CSV)], out, "not both")
    notes = write(tmp_path / "notes.txt", "1,a\n")
    _fails(capsys, ["finetune", *TINY, "--train-file", str(notes), "--test-fraction", "0.2", "--out", str(out)], out,
           "notes.txt: unknown file type")
    _fails(capsys, ["evaluate", str(tmp_path), "--task", "ag_news", "--test-file", str(EXAMPLE_CSV)], out,
           "one of them")


# ---------------------------------------------------------------- the shipped example, end to end


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's fine-tuning command on the shipped CSV (one epoch, from scratch, to be quick)."""
    out = tmp_path_factory.mktemp("own") / "ft"
    assert main(["finetune", *TINY, "--train-file", str(EXAMPLE_CSV), *OWN, "--test-fraction", "0.2",
                 "--validation-fraction", "0.1", "--out", str(out)]) == 0
    return out


def test_example_csv_is_the_readmes_file() -> None:
    lines = EXAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label,content" and 300 <= len(lines) - 1 <= 1000
    task = load_labelled(source(EXAMPLE_CSV, test_fraction=0.2))
    assert task.label_names == ["1", "2", "3", "4"] and len(task.test) == 80


def test_example_model_answers_with_the_files_labels(example_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import pipeline

    metrics = json.loads((example_run / "metrics.json").read_text())
    assert metrics["label_names"] == ["1", "2", "3", "4"] and metrics["test_examples"] == 80
    assert metrics["validation"]["examples"] == 32 and metrics["train_examples"] == 288
    config = json.loads((example_run / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "1", "1": "2", "2": "3", "3": "4"}

    classify = pipeline("text-classification", model=str(example_run / "model"), device="cpu")
    answers = classify(["Stocks rallied after the central bank held rates.", "The team won the cup."])
    assert {a["label"] for a in answers} <= {"1", "2", "3", "4"}

    capsys.readouterr()
    assert main(["predict", str(example_run), "Oil prices rose sharply on Monday."]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in {"1", "2", "3", "4"}

    # what `tinylm serve` answers with, on either runtime
    from tinylm.inference.onnx import export_onnx
    from tinylm.inference.predictor import Predictor

    export_onnx(example_run, check_texts=["Rates rose.", "The match was won late."])
    for runtime in ("torch", "onnx"):
        answer = Predictor.load(example_run, runtime).predict(["Oil prices rose sharply on Monday."])[0]
        assert answer["label"] in {"1", "2", "3", "4"} and list(answer["probabilities"]) == ["1", "2", "3", "4"]

    # evaluate re-draws the same held-out 20 % (it scores in fp32, fine-tuning in its bf16: a text may differ)
    assert main(["evaluate", str(example_run), "--train-file", str(EXAMPLE_CSV), *OWN, "--test-fraction", "0.2",
                 "--out", str(example_run / "eval.json")]) == 0
    evaluated = json.loads((example_run / "eval.json").read_text())
    assert [row["support"] for row in evaluated["per_class"].values() if isinstance(row, dict)] == \
        [row["support"] for row in metrics["per_class"].values() if isinstance(row, dict)]
    assert abs(evaluated["accuracy"] - metrics["accuracy"]) <= 0.05


def test_evaluate_on_a_test_file_checks_labels_against_the_model(example_run: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    test = write(tmp_path / "more.tsv", "content\tlabel\nrates rose\t3\nthe match\t2\n")
    capsys.readouterr()
    assert main(["evaluate", str(example_run), "--test-file", str(test), *OWN]) == 0
    assert json.loads(capsys.readouterr().out)["label_names"] == ["1", "2", "3", "4"]
    unknown = write(tmp_path / "unknown.tsv", "content\tlabel\nrates rose\t3\nthe match\t5\n")
    _fails(capsys, ["evaluate", str(example_run), "--test-file", str(unknown), *OWN], tmp_path / "none",
           "unknown.tsv: row 2: label '5'", "the model's labels: 1, 2, 3, 4")


# ---------------------------------------------------------------- corpora and overlap


def test_corpus_layouts(tmp_path: Path) -> None:
    lines = write(tmp_path / "docs.txt", "first doc\n\n  second doc  \nthird\n")
    assert read_corpus(lines) == ["first doc", "second doc", "third"]
    folder = tmp_path / "folder"
    write(folder / "b.txt", "doc b\nline two\n")
    write(folder / "sub" / "a.md", "doc a")
    write(folder / ".hidden", "skipped")
    write(folder / "empty.txt", "  \n")
    assert read_corpus(folder) == ["doc b\nline two", "doc a"]
    table = write(tmp_path / "c.jsonl", '{"body": "x y"}\n{"body": "z"}\n')
    assert read_corpus(table, "body") == ["x y", "z"] and count_documents(str(table), "body") == 2
    picked = load_corpus(str(lines), 2, seed=1)
    assert picked == load_corpus(str(lines), 2, seed=1) and set(picked) < set(read_corpus(lines))


def test_a_wikipedia_file_as_corpus_gives_the_articles_wikipedia_runs_train_on() -> None:
    """The corpus path samples and windows as the Wikipedia path does: the shipped articles file as --corpus
    yields the very texts `pretrain --data` takes from it."""
    from tinylm.data import load_articles
    from tinylm.experiments.demo import DEMO_DATA

    corpus = str(DEMO_DATA / "wikipedia" / "articles.jsonl.gz")
    assert load_corpus(corpus, 50, seed=7) == [a.text for a in load_articles(50, seed=7, root=DEMO_DATA)]


def test_bad_corpora(tmp_path: Path) -> None:
    bad = tmp_path / "folder" / "bad.txt"
    bad.parent.mkdir()
    bad.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: not valid UTF-8"):
        read_corpus(bad.parent)
    with pytest.raises(DataError, match=r"c\.jsonl: row 2: no text in column 'text'"):
        read_corpus(write(tmp_path / "c.jsonl", '{"text": "a"}\n{"text": ""}\n'))
    with pytest.raises(DataError, match="no column 'text'; the columns are: body"):
        read_corpus(write(tmp_path / "d.jsonl", '{"body": "a"}\n'))
    with pytest.raises(DataError, match="no documents"):
        read_corpus(write(tmp_path / "blank.txt", "\n \n"))
    with pytest.raises(DataError, match="3 documents requested but the corpus holds only 1"):
        load_corpus(str(write(tmp_path / "one.txt", "a\n")), 3)
    with pytest.raises(DataError, match=r"nowhere\.txt: not found"):
        read_corpus(tmp_path / "nowhere.txt")


def test_pretrain_on_a_corpus_then_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write(tmp_path / "corpus.txt", "".join(f"{line} number {i}\n" for i, line in enumerate(
        EXAMPLE_CSV.read_text(encoding="utf-8").splitlines()[1:41])))
    out = tmp_path / "pt"
    args = ["pretrain", "--preset", "demo", "--corpus", str(corpus), "--tokenizer", "tinylm-wiki-4k", "--epochs", "1",
            "--seq-len", "32", "--batch-size", "16", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["articles"] == 40 and summary["steps"] == 3 and "skipped" in summary["quality"]
    assert json.loads((out / "pretrain_config.json").read_text())["corpus"] == str(corpus)

    write(corpus, corpus.read_text().replace("number 7", "number seven"))  # an edited corpus is a different run
    _fails(capsys, args, tmp_path / "none", "different configuration")

    assert main(["overlap", "--corpus", str(corpus), "--tokenizer", "tinylm-wiki-4k", "--train-file",
                 str(EXAMPLE_CSV), *OWN]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == 40 and report["texts"] == 400
    assert set(report["overlap"]) == {"token", "type", "weighted"}
    assert all(0 < v <= 1 for v in report["overlap"].values())
