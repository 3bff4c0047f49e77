"""The user's data paths, hardened (issue 27): every bad input of a command family is one line on stderr, exit
status 2 and nothing written (no run folder, config file, empty folder or temporary file); and what used to go
wrong on good input (compressed files, header-less CSVs, duplicate rows, the task a run records, the model's file
modes, the copy `datasets` keeps) now goes right. Small real data: the shipped AG News sample CSV."""

from __future__ import annotations

import bz2
import json
import lzma
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cli_errors import one_line_error
from tinylm.cli import main
from tinylm.data.corpus import read_corpus
from tinylm.data.user_files import MIN_HELD_PER_LABEL, MIN_TRAIN_PER_LABEL, LabelledSource, load_task_data

EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "ag_news_sample.csv"
LINES = EXAMPLE_CSV.read_text(encoding="utf-8").splitlines()  # "label,content", then 400 rows, 100 a label
OWN = ["--text-column", "content", "--label-column", "label"]
FT = ["finetune", "--preset", "demo", "--tokenizer", "tinylm-wiki-4k", "--epochs", "1", "--max-length", "32"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def inputs(tmp_path: Path) -> dict[str, Path]:
    """The bad files of the battery, written next to the run folder."""
    rows = LINES[1:]
    two = [row for label in "1234" for row in [r for r in rows if r.startswith(label + ",")][:2]]
    dup = [row for row in two for _ in range(40)]  # 8 rows (2 a label), each 40 times
    jsonl = [json.dumps({"label": r.split(",", 1)[0], "content": r.split(",", 1)[1]}) for r in rows[:40]]
    jsonl[6] += " trailing"
    with lzma.open(tmp_path / "train.csv.zst", "wt") as f:  # (an xz stream: its name is what is refused)
        f.write(EXAMPLE_CSV.read_text(encoding="utf-8"))
    return {
        "header-only": write(tmp_path / "header_only.csv", LINES[0] + "\n"),
        "no-header": write(tmp_path / "no_header.csv", "\n".join(rows) + "\n"),
        "broken-jsonl": write(tmp_path / "broken.jsonl", "\n".join(jsonl) + "\n"),
        "duplicates": write(tmp_path / "dup.csv", "\n".join([LINES[0], *dup]) + "\n"),
        "zst": tmp_path / "train.csv.zst",
    }


FINETUNE_CASES = {
    # item 5: splits that leave too few rows of a label
    "test-fraction-tiny": ("example", ["--test-fraction", "0.0001"],
                           ["label '1' has 1 test row with --test-fraction 0.0001", "rows per label"]),
    "test-fraction-huge": ("example", ["--test-fraction", "0.999"],
                           ["label '1' has 1 training row with --test-fraction 0.999",
                            f"at least {MIN_HELD_PER_LABEL} test and validation rows and {MIN_TRAIN_PER_LABEL} "
                            "training rows"]),
    "validation-fraction-huge": ("example", ["--test-fraction", "0.2", "--validation-fraction", "0.99"],
                                 ["has 1 training row with --test-fraction 0.2 and --validation-fraction 0.99",
                                  "'1' 1/79/20"]),
    # item 11: a file of duplicates
    "all-duplicates": ("duplicates", ["--test-fraction", "0.2"],
                       ["dup.csv: too few rows", ", after dropping 312 duplicate rows"]),
    # item 12: header-only, broken JSON lines, no header row
    "header-only": ("header-only", ["--test-fraction", "0.2"], ["header_only.csv: has a header but no rows"]),
    "broken-jsonl": ("broken-jsonl", ["--test-fraction", "0.2"], ["broken.jsonl:7: invalid JSON: Extra data"]),
    "no-header-row": ("no-header", ["--test-fraction", "0.2"],
                      ["no_header.csv: no column 'content'", "does the file have a header row?", "--no-header"]),
    "no-header-names": ("no-header", ["--test-fraction", "0.2", "--no-header"],
                        ["--no-header is for CSV/TSV files", "0-based column numbers"]),
    "no-header-json": ("broken-jsonl", ["--test-fraction", "0.2", "--no-header", "--text-column", "1",
                                        "--label-column", "0"], ["--no-header is for CSV and TSV files"]),
    "no-header-column": ("no-header", ["--test-fraction", "0.2", "--no-header", "--text-column", "2",
                                       "--label-column", "0"], ["no column '2'; the file has 2 columns"]),
    # item 7: a compression tinylm does not read
    "zst": ("zst", ["--test-fraction", "0.2"], ["train.csv.zst: zstd-compressed (.zst) files are not read",
                                                ".gz, .bz2, .xz"]),
}


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], folder: Path, *words: str) -> None:
    """Exit 2, one line naming `words` on stderr, and nothing new in `folder` (where the run folder would be)."""
    before = sorted(folder.iterdir())
    one_line_error(capsys, argv, *words)
    assert sorted(folder.iterdir()) == before  # no run folder, config file, empty folder or temporary file


@pytest.mark.parametrize("case", sorted(FINETUNE_CASES))
def test_finetune_bad_input_is_one_line_and_writes_nothing(case: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    name, flags, words = FINETUNE_CASES[case]
    train = EXAMPLE_CSV if name == "example" else inputs(tmp_path)[name]
    columns = [] if "--text-column" in flags else OWN
    argv = [*FT, "--train-file", str(train), *columns, *flags, "--out", str(tmp_path / "run")]
    _fails(capsys, argv, tmp_path, *words)


PRETRAIN_CASES = {
    "zst": ("notes.txt.zst", b"a line\n", ["notes.txt.zst: zstd-compressed"]),
    "header-only": ("docs.csv", b"text\n", ["docs.csv: has a header but no rows"]),
    "broken-jsonl": ("docs.jsonl", b'{"text": "a"}\n{"text": "b"}}\n', ["docs.jsonl:2: invalid JSON"]),
    "bad-bz2": ("docs.txt.bz2", b"not a bzip2 stream\n", ["docs.txt.bz2:1: cannot read"]),
}


@pytest.mark.parametrize("case", sorted(PRETRAIN_CASES))
def test_pretrain_corpus_bad_input_is_one_line_and_writes_nothing(case: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    name, content, words = PRETRAIN_CASES[case]
    (tmp_path / name).write_bytes(content)
    argv = ["pretrain", "--preset", "demo", "--corpus", str(tmp_path / name), "--tokenizer", "tinylm-wiki-4k",
            "--out", str(tmp_path / "run")]
    _fails(capsys, argv, tmp_path, *words)


# ---------------------------------------------------------------- good input, read right


def test_compressed_corpora_read_by_suffix(tmp_path: Path) -> None:
    docs = [row.split(",", 1)[1].strip('"') for row in LINES[1:21]]
    plain = write(tmp_path / "docs.txt", "\n".join(docs) + "\n")
    with bz2.open(tmp_path / "docs.txt.bz2", "wt", encoding="utf-8") as f:
        f.write(plain.read_text())
    with lzma.open(tmp_path / "docs.jsonl.xz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps({"text": d}) + "\n" for d in docs))
    assert read_corpus(tmp_path / "docs.txt.bz2") == read_corpus(plain) == read_corpus(tmp_path / "docs.jsonl.xz")


def test_no_header_reads_the_same_rows_as_a_header(tmp_path: Path) -> None:
    bare = write(tmp_path / "bare.tsv", "".join(row.replace(",", "\t", 1) + "\n" for row in LINES[1:]))
    header = load_task_data(LabelledSource(train_file=str(EXAMPLE_CSV), text_column="content",
                                           label_column="label", test_fraction=0.2), "")
    columns = load_task_data(LabelledSource(train_file=str(bare), text_column="1", label_column="0", no_header=True,
                                            test_fraction=0.2), "")
    assert (columns.label_names, columns.train, columns.test) == (header.label_names, header.train, header.test)


def test_a_run_on_own_data_records_its_source_duplicates_and_file_modes(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Item 6: the run records source: FILE (no built-in task) and makes its files with the umask; item 11: the
    duplicates dropped are reported on stderr and in metrics.json; item 12: --no-header alone is the switch."""
    rows = [row.replace(",", "\t", 1) for row in LINES[1:81]]  # 80 rows, then 7 of them again
    train = write(tmp_path / "train.tsv", "\n".join([*rows, *rows[:7]]) + "\n")
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert main([*FT, "--train-file", str(train), "--no-header", "--text-column", "1", "--label-column", "0",
                     "--test-fraction", "0.25", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    captured = capsys.readouterr()
    assert f"{train}: dropped 7 duplicate rows" in captured.err
    config = json.loads((out / "finetune_config.json").read_text())
    assert config["source"] == str(train) and "task" not in config and config["no_header"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"] == str(train) and metrics["duplicates_dropped"] == 7
    assert metrics["train_examples"] + metrics["test_examples"] == 80
    meta = json.loads((out / "model" / "tinylm_meta.json").read_text())
    assert meta["finetune"]["source"] == str(train) and "task" not in meta["finetune"]
    for path, mode in [(out / "model", 0o755), (out / "model" / "model.safetensors", 0o644),
                       (out / "checkpoint", 0o755), (out / "model" / "config.json", 0o644)]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert main(["predict", str(out), "Oil prices rose."]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in {"1", "2", "3", "4"}


def test_the_copy_datasets_keeps_goes_to_the_cache_and_off_keeps_none(tmp_path: Path, isolated_cache: Path) -> None:
    """Item 14: a labelled file's Arrow copy lands in $TINYLM_CACHE/datasets; TINYLM_CACHE=off keeps nothing."""
    load_task_data(LabelledSource(train_file=str(EXAMPLE_CSV), text_column="content", label_column="label",
                                  test_fraction=0.2), "")
    assert any((isolated_cache / "datasets").rglob("*.arrow"))
    script = ("from tinylm.data.paths import cache_dir; from tinylm.data.user_files import LabelledSource, "
              f"load_task_data; t = load_task_data(LabelledSource(train_file={str(EXAMPLE_CSV)!r}, "
              "text_column='content', label_column='label', test_fraction=0.2), ''); print(cache_dir(), len(t.train))")
    env = {**os.environ, "TINYLM_CACHE": "off", "HOME": str(tmp_path), "TINYLM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    scratch, train = done.stdout.split()
    assert train == "320" and not Path(scratch).exists()  # removed when the command ended
    assert not (tmp_path / ".cache" / "tinylm").exists()
