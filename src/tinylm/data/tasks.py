"""The fine-tuning tasks (AG News, DBpedia-14, FewRel): strict readers for their files and paper-style samples.

Readers return fully built lists and reject bad input with a DataError naming the file and line, so a caller
never starts writing output from half-read data.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from tinylm.data.errors import DataError, RecordError
from tinylm.data.examples import Example, TaskData
from tinylm.data.fewrel import load_fewrel
from tinylm.data.hub import load_hub_split
from tinylm.data.paths import data_root, iter_lines
from tinylm.data.sampling import balanced_sample

# The one task list, in the order experiments run them and reports list them (the paper's tables); TASKS is the
# same tasks sorted by name, the order of the CLI's choices and of error lines.
TASK_ORDER: tuple[str, ...] = ("fewrel", "ag_news", "dbpedia")
TASKS: tuple[str, ...] = tuple(sorted(TASK_ORDER))
PAPER_SAMPLING: dict[str, tuple[int, int]] = {"ag_news": (1000, 1000), "dbpedia": (100, 100), "fewrel": (630, 70)}
# Hugging Face hub datasets for source="hub": (repository, text column). FewRel has no usable hub copy.
HUB_DATASETS: dict[str, tuple[str, str]] = {"ag_news": ("fancyzhx/ag_news", "text"),
                                            "dbpedia": ("fancyzhx/dbpedia_14", "content")}
SOURCES: tuple[str, ...] = ("local", "hub")

CsvLayout = Literal["ag_news", "dbpedia"]
_CSV_COLUMNS: dict[str, tuple[int, ...]] = {"ag_news": (3,), "dbpedia": (2, 3)}
_CSV_HELP = {"ag_news": "class, title, description", "dbpedia": "class, content or class, title, content"}


# ---------------------------------------------------------------- text and record checks


def clean_text(text: str, backslash_breaks: bool = False) -> str:
    """Collapse whitespace; with backslash_breaks, first turn AG News's '\\' (a line break in the original)
    into a space, so no backslash reaches the tokenizer."""
    if backslash_breaks:
        text = text.replace("\\", " ")
    return " ".join(text.split())


def labelled_example(record: object, text_key: str, num_labels: int, backslash_breaks: bool = False) -> Example:
    """Check a {"label": 0-based int, text_key: str} record and build its Example; RecordError if malformed."""
    if not isinstance(record, Mapping):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("label", text_key):
        if key not in record:
            raise RecordError(f"missing field {key!r}")
    label, raw = record["label"], record[text_key]
    if not isinstance(label, int) or isinstance(label, bool):
        raise RecordError(f"'label' must be an integer, got {type(label).__name__} {label!r}")
    if not 0 <= label < num_labels:
        raise RecordError(f"label {label} out of range 0..{num_labels - 1}")
    if not isinstance(raw, str):
        raise RecordError(f"{text_key!r} must be a string, got {type(raw).__name__}")
    text = clean_text(raw, backslash_breaks)
    if not text:
        raise RecordError(f"empty {text_key!r}")
    return Example(text, label)


# ---------------------------------------------------------------- file readers


def read_classes(path: str | os.PathLike[str]) -> list[str]:
    """Class names, one per non-empty line (line i is class i, 1-based in the CSV files)."""
    path = Path(path)
    names: list[str] = []
    for line_no, line in enumerate(iter_lines(path), 1):
        name = line.strip()
        if not name:
            continue
        if name in names:
            raise DataError(path, f"duplicate class name {name!r}", line_no)
        names.append(name)
    if not names:
        raise DataError(path, "no class names (empty file)")
    return names


def read_label_csv(path: str | os.PathLike[str], num_labels: int, layout: CsvLayout = "ag_news") -> list[Example]:
    """Rows of a header-less task CSV whose column 0 is the class, 1..num_labels.

    layout="ag_news": class, title, description -> text "title description", '\\' read as a line break.
    layout="dbpedia": class, content (the shared files) or class, title, content (the original) -> content only,
    as in the paper; the first row fixes the column count for the whole file.
    """
    if layout not in _CSV_COLUMNS:
        raise ValueError(f"unknown CSV layout {layout!r}; choose one of {sorted(_CSV_COLUMNS)}")
    path = Path(path)
    reader = csv.reader(iter_lines(path))
    examples: list[Example] = []
    columns: tuple[int, ...] = _CSV_COLUMNS[layout]
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num  # a quoted field may span lines: report where the row starts
            if not any(field.strip() for field in row):
                continue
            if len(row) not in columns:
                raise DataError(path, f"expected {' or '.join(map(str, columns))} columns "
                                      f"({_CSV_HELP[layout]}), got {len(row)}", start)
            columns = (len(row),)
            examples.append(_csv_example(row, num_labels, layout, path, start))
    except csv.Error as err:
        raise DataError(path, f"malformed CSV: {err}", reader.line_num) from None
    if not examples:
        raise DataError(path, "no rows (empty file)")
    return examples


def _csv_example(row: list[str], num_labels: int, layout: CsvLayout, path: Path, line: int) -> Example:
    """One checked CSV row: 1-based class in range, non-empty text."""
    try:
        cls = int(row[0].strip())
    except ValueError:
        raise DataError(path, f"class {row[0]!r} is not an integer", line) from None
    if not 1 <= cls <= num_labels:
        raise DataError(path, f"class {cls} out of range 1..{num_labels}", line)
    ag_news = layout == "ag_news"
    text = clean_text(f"{row[1]} {row[2]}" if ag_news else row[-1], backslash_breaks=ag_news)
    if not text:
        raise DataError(path, "empty text", line)
    return Example(text, cls - 1)


def read_label_jsonl(
    path: str | os.PathLike[str], num_labels: int, *, backslash_breaks: bool = False
) -> list[Example]:
    """{"label": 0-based int, "text": str} per line (blank lines skipped); backslash_breaks=True for AG News."""
    path = Path(path)
    examples: list[Example] = []
    for line_no, line in enumerate(iter_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            examples.append(labelled_example(record, "text", num_labels, backslash_breaks))
        except json.JSONDecodeError as err:
            raise DataError(path, f"invalid JSON: {err.msg} (column {err.colno})", line_no) from None
        except RecordError as err:
            raise DataError(path, str(err), line_no) from None
    if not examples:
        raise DataError(path, "no examples (empty file)")
    return examples


# ---------------------------------------------------------------- hub datasets


def hub_label_names(dataset: Any) -> list[str]:
    """Label names of a hub dataset's ClassLabel "label" column (their order is the label index)."""
    feature = dataset.features.get("label")
    names = getattr(feature, "names", None)
    if not names:
        raise DataError("hub dataset", "its 'label' column has no class names (expected a ClassLabel)")
    return list(names)


def examples_from_hub(dataset: Any, task: str, *, source: str | None = None) -> list[Example]:
    """A hub `datasets.Dataset` of a task (columns "label" and the task's text column) as checked Examples.

    AG News text gets the same backslash clean-up as the local files; DBpedia uses "content" only, as the
    paper does. A bad row is a DataError naming the dataset and the 1-based row.
    """
    if task not in HUB_DATASETS:
        raise DataError(f"hub:{task}", f"hub loading is not supported for {task}; use the local files")
    repo, text_key = HUB_DATASETS[task]
    where = source or f"hub:{repo}"
    missing = sorted({"label", text_key} - set(dataset.column_names))
    if missing:
        raise DataError(where, f"missing column(s) {missing}; has {dataset.column_names}")
    num_labels = len(hub_label_names(dataset))
    columns = dataset.select_columns(["label", text_key]).to_dict()
    examples: list[Example] = []
    for row, (label, text) in enumerate(zip(columns["label"], columns[text_key], strict=True), 1):
        try:
            examples.append(labelled_example({"label": label, text_key: text}, text_key, num_labels,
                                             backslash_breaks=task == "ag_news"))
        except RecordError as err:
            raise DataError(where, f"row {row}: {err}") from None
    if not examples:
        raise DataError(where, "no rows")
    return examples


def _load_hub_split(task: str, split: str) -> Any:
    """One split of a task's hub dataset (needs internet the first time; cached by `datasets` afterwards)."""
    if task not in HUB_DATASETS:
        raise DataError(f"hub:{task}", f"hub loading is not supported for {task}; use the local files")
    repo, _ = HUB_DATASETS[task]
    return load_hub_split(repo, None, split)


# ---------------------------------------------------------------- tasks


def load_task(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    train_per_label: int | None = None,
    test_per_label: int | None = None,
    seed: int = 42,
    fewrel_markers: bool = False,
    source: str = "local",
) -> TaskData:
    """A task's balanced train and test samples (defaults: the paper's PAPER_SAMPLING counts per label).

    AG News and DBpedia sample train and test from their own pools, each with a fresh rng seeded by `seed`,
    so the test sample never depends on train_per_label (with train_per_label=0 the train pool is not read).
    Exact duplicate rows are dropped from each pool, and train rows whose text is in the test pool are
    dropped from the train pool, so no test text is trained on. FewRel splits one pool per relation.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}")
    default_train, default_test = PAPER_SAMPLING[name]
    n_train = default_train if train_per_label is None else train_per_label
    n_test = default_test if test_per_label is None else test_per_label
    if name == "fewrel":
        if source == "hub":
            raise DataError("hub:fewrel", "hub loading is not supported for fewrel; use the local files "
                                          "(fewrel/train_wiki.json or fewrel/val_wiki.json)")
        return load_fewrel(root, n_train, n_test, seed, fewrel_markers)
    if source == "hub":
        label_names, train_pool, test_pool = _hub_pools(name, n_train > 0)
    else:
        label_names, train_pool, test_pool = _local_pools(name, root, n_train > 0)
    return sample_task(name, label_names, train_pool, test_pool, n_train, n_test, seed)


_Pool = tuple[list[Example], str]  # (examples, where they came from: a file path or a hub dataset)


def sample_task(name: str, label_names: list[str], train_pool: _Pool, test_pool: _Pool, n_train: int | None,
                n_test: int | None, seed: int) -> TaskData:
    """The one sampling step of every task, built-in or the user's own (data.user_files): exact duplicate rows
    dropped from each pool and train rows whose text is in the test pool dropped (so no test text is trained on),
    then n per label drawn from each pool, balanced and seeded (None: every row, in pool order; 0: none)."""
    test_examples, test_source = test_pool
    test = _sample(_unique(test_examples), n_test, label_names, seed, test_source, "duplicate rows")
    train: list[Example] = []
    if n_train != 0:
        train_examples, train_source = train_pool
        unseen = _without_texts(_unique(train_examples), {e.text for e in test_examples})
        train = _sample(unseen, n_train, label_names, seed, train_source, "duplicate rows and test-pool texts")
    return TaskData(name, label_names, train, test)


def _local_pools(name: str, root: str | os.PathLike[str] | None, need_train: bool) -> tuple[list[str], _Pool, _Pool]:
    """Label names and the (train, test) pools of ag_news or dbpedia from the data folder."""
    folder = data_root(root) / name
    label_names = read_classes(folder / "classes.txt")
    n = len(label_names)
    if name == "ag_news":
        test_path = folder / "test.csv"
        test = read_label_csv(test_path, n, "ag_news")
        train_path = folder / "train.jsonl"
        if not need_train:
            train: list[Example] = []
        elif train_path.is_file():
            train = read_label_jsonl(train_path, n, backslash_breaks=True)
        else:
            train_path = folder / "train.csv"  # the original AG News layout
            train = read_label_csv(train_path, n, "ag_news")
    else:
        test_path, train_path = folder / "test.csv", folder / "train.csv"
        test = read_label_csv(test_path, n, "dbpedia")
        train = read_label_csv(train_path, n, "dbpedia") if need_train else []
    return label_names, (train, str(train_path)), (test, str(test_path))


def _hub_pools(name: str, need_train: bool) -> tuple[list[str], _Pool, _Pool]:
    """Label names and the (train, test) pools of ag_news or dbpedia from the Hugging Face hub."""
    repo, _ = HUB_DATASETS[name]
    test_set = _load_hub_split(name, "test")
    label_names = hub_label_names(test_set)
    test = examples_from_hub(test_set, name, source=f"hub:{repo}[test]")
    train: list[Example] = []
    if need_train:
        train = examples_from_hub(_load_hub_split(name, "train"), name, source=f"hub:{repo}[train]")
    return label_names, (train, f"hub:{repo}[train]"), (test, f"hub:{repo}[test]")


def _sample(examples: list[Example], per_label: int | None, label_names: list[str], seed: int, source: str,
            dropped: str) -> list[Example]:
    """balanced_sample whose too-few error says the count is after dropping rows (else it contradicts the file);
    per_label None keeps every example."""
    if per_label is None:
        return examples
    if not per_label:
        return []
    try:
        return balanced_sample(examples, per_label, len(label_names), seed, source=source, label_names=label_names)
    except DataError as err:
        raise DataError(err.path, f"{err.message} (after dropping {dropped})", err.line) from None


def _unique(examples: Iterable[Example]) -> list[Example]:
    """Examples with exact (text, label) duplicates dropped, first occurrence kept (the shared AG News train
    subset repeats 999 rows; sampling them twice would shrink the effective training set)."""
    return list(dict.fromkeys(examples))


def _without_texts(examples: Iterable[Example], texts: set[str]) -> list[Example]:
    """Examples whose text is not in `texts` (keeps test texts out of training)."""
    return [e for e in examples if e.text not in texts]
