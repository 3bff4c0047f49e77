"""Labelled data of the user's own: a CSV, TSV, JSON lines or Parquet file, or a hub dataset, as a TaskData.

Files are read by Hugging Face `datasets` (one reader for every format) and checked row by row before anything is
trained or written, so bad input is one DataError naming the file and row (rows count from 1, a CSV header not
included). The rules:

- Labels are kept as given, as strings or integers, and ordered: integers (and strings that all look like
  integers) by value, other strings alphabetically, a hub dataset's ClassLabel in its own order. Label i of the
  model is the i-th name; the names land in the model's config.json (id2label).
- CSV and TSV cells are read as text, so a label column is "integers" when every label looks like one; a column
  that mixes labels like `1` and `sports` (or, in JSON lines, 1 and "sports") is refused as mixed label types.
- The labels are the training data's; a label seen only in the test data is refused, and so is training data
  with a single label.
- Exact duplicate rows are dropped before the test and validation splits, and so are training rows whose text is
  a test text; TaskData.duplicates counts them. A split must leave every label MIN_HELD_PER_LABEL test and
  validation rows and MIN_TRAIN_PER_LABEL training rows (the user's data always needs those training rows).
- The built-in tasks are presets of this path (`load_task_data`): they read their own fixed layouts, then share
  the sampling (data.tasks.sample_task) and the validation split with the user's data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinylm.data.errors import DataError
from tinylm.data.examples import Example, TaskData
from tinylm.data.hub import hub_where, load_hub_split, parse_hub_name
from tinylm.data.sampling import stratified_split
from tinylm.data.tables import open_table, table_columns, table_format
from tinylm.data.tasks import clean_text, load_task, sample_task

_INTEGER = re.compile(r"[+-]?\d+")
SOURCE_HELP = {
    "train_file": "your labelled training data: .csv, .tsv, .jsonl or .parquet (also .gz, .bz2 or .xz), a CSV/TSV "
                  "with a header row unless --no-header (instead of --task)",
    "test_file": "your labelled test data, same columns (or carve it out with --test-fraction)",
    "test_fraction": "hold out this stratified fraction of the training data as the test set",
    "validation_fraction": "hold out this stratified fraction of the training examples for validation",
    "text_column": "column holding the text (default: text)",
    "label_column": "column holding the label, strings or integers (default: label)",
    "dataset": "a Hugging Face hub dataset NAME[:CONFIG] (instead of --train-file; needs internet)",
    "train_split": "the hub dataset's training split (default: train)",
    "test_split": "the hub dataset's test split (default: test, unless --test-fraction)",
    "no_header": "the CSV/TSV files have no header row: give --text-column and --label-column as 0-based column "
                 "numbers",
}
MIN_HELD_PER_LABEL = 2  # test and validation rows of each label that --test-fraction/--validation-fraction leave
MIN_TRAIN_PER_LABEL = 4  # training rows of each label that the user's data (and a validation split) leave


@dataclass(frozen=True)
class LabelledSource:
    """Where the user's labelled examples come from. FinetuneConfig has the same fields (so they are its flags
    and enter its hash); `of` reads them from it or from the CLI's arguments."""

    train_file: str | None = None
    test_file: str | None = None
    test_fraction: float = 0.0
    validation_fraction: float = 0.0
    text_column: str = "text"
    label_column: str = "label"
    dataset: str | None = None
    train_split: str | None = None
    test_split: str | None = None
    no_header: bool = False  # CSV/TSV files without a header row; the columns are then 0-based numbers

    def __post_init__(self) -> None:
        for name in ("test_fraction", "validation_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"--{_flag(name)} must be in [0, 1), got {value}")
        if not self.text_column or not self.label_column or self.text_column == self.label_column:
            raise ValueError("--text-column and --label-column must be two different, non-empty column names")
        if self.train_file and self.dataset:
            raise ValueError("give --train-file or --dataset, not both")
        if self.test_fraction and (self.test_file or self.test_split):
            raise ValueError("give --test-file (or --test-split) or --test-fraction, not both")
        if (self.train_split or self.test_split) and not self.dataset:
            raise ValueError("--train-split and --test-split name the splits of a --dataset")
        if self.no_header and (self.dataset or not (self.text_column.isdigit() and self.label_column.isdigit())):
            raise ValueError("--no-header is for CSV/TSV files, whose columns it names by number: give "
                             "--text-column and --label-column as 0-based column numbers (e.g. --label-column 0 "
                             "--text-column 1)")

    @classmethod
    def of(cls, obj: Any) -> LabelledSource:
        """The fields of the same names on `obj` (a FinetuneConfig or parsed arguments); absent or None: default."""
        values = {f.name: getattr(obj, f.name, None) for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if v is not None})

    @property
    def given(self) -> bool:
        """True when this names data (else the built-in task is read)."""
        return bool(self.train_file or self.test_file or self.dataset)

    @property
    def origin(self) -> str:
        """Where the data comes from, as a run records it: the training (else test) file as given, or hub:NAME."""
        return f"hub:{self.dataset}" if self.dataset else str(self.train_file or self.test_file or "")

    @property
    def name(self) -> str:
        """How results name the data: the training file's name or the hub dataset's."""
        if self.dataset:
            return self.dataset
        return Path(self.train_file or self.test_file or "").name

    def require(self, *, train: bool) -> None:
        """ValueError unless this names training data (when `train`) and a test set, as fine-tuning needs."""
        if train and not (self.train_file or self.dataset):
            raise ValueError("give the training data: --train-file FILE (or --dataset NAME)")
        if not (self.test_file or self.test_fraction or self.dataset):
            raise ValueError("give a test set: --test-file FILE, or --test-fraction 0.2 to hold out part of "
                             "the training file")


def _flag(name: str) -> str:
    return name.replace("_", "-")


# ---------------------------------------------------------------- checking rows and labels


@dataclass(frozen=True)
class LabelledRows:
    """One file or split as checked (text, label name) rows, and how its labels are ordered."""

    where: str
    rows: list[tuple[str, str]]
    class_names: list[str] | None = None  # a hub ClassLabel's names: its order is the label order

    def label_names(self) -> list[str]:
        names = {label for _, label in self.rows}
        if self.class_names is not None:
            return [n for n in self.class_names if n in names]
        if all(_INTEGER.fullmatch(n) for n in names):
            return sorted(names, key=lambda n: (int(n), n))
        return sorted(names)


def read_labelled(source: LabelledSource, part: str) -> LabelledRows:
    """The "train" or "test" part of a source: its file or hub split, read and checked."""
    if source.dataset:
        name, config = parse_hub_name(source.dataset)
        split = (source.train_split or "train") if part == "train" else (source.test_split or "test")
        dataset, where, typed = load_hub_split(name, config, split), hub_where(name, config, split), True
    else:
        path = source.train_file if part == "train" else source.test_file
        assert path is not None
        dataset, where = open_table(path, no_header=source.no_header), str(path)
        typed = table_format(Path(path)) not in ("csv", "tsv")
    columns = table_columns(dataset, [source.text_column, source.label_column], where,
                            header_hint=not typed and not source.no_header)
    class_names = getattr(dataset.features[source.label_column], "names", None)
    labels = columns[source.label_column]
    if class_names is not None:
        labels = [class_names[v] if isinstance(v, int) and 0 <= v < len(class_names) else v for v in labels]
    checked = checked_rows(columns[source.text_column], labels, where, source.text_column, source.label_column,
                           typed=typed)
    return LabelledRows(where, checked, list(class_names) if class_names is not None else None)


def checked_rows(texts: Sequence[Any], labels: Sequence[Any], where: str, text_column: str, label_column: str,
                 *, typed: bool) -> list[tuple[str, str]]:
    """(clean text, label name) per row; a DataError names the first bad row: no text, no label, a label that is
    neither a string nor an integer, or labels of mixed types (typed: by their JSON type; CSV: integer-like or not)."""
    # A JSON reader turns a column of 1, 2 and 2.5 into floats: name the row that made it so, not row 1's 1.0.
    fraction = next((row for row, v in enumerate(labels, 1) if isinstance(v, float) and not v.is_integer()), None)
    if fraction is not None:
        _label(labels[fraction - 1], typed, where, fraction, label_column)
    rows: list[tuple[str, str]] = []
    first_kind: tuple[int, str, Any] | None = None  # (row, kind, value) of the first label
    for row, (raw_text, raw_label) in enumerate(zip(texts, labels, strict=True), 1):
        if not isinstance(raw_text, str) and raw_text is not None:
            raise DataError(where, f"row {row}: the text in column {text_column!r} is not a string "
                                   f"({type(raw_text).__name__} {raw_text!r})")
        text = clean_text(raw_text or "")
        if not text:
            raise DataError(where, f"row {row}: empty text in column {text_column!r}")
        name, kind = _label(raw_label, typed, where, row, label_column)
        if first_kind is None:
            first_kind = (row, kind, raw_label)
        elif kind != first_kind[1]:
            raise DataError(where, f"row {row}: mixed label types in column {label_column!r}: {raw_label!r} is "
                                   f"{_article(kind)} but row {first_kind[0]} has {first_kind[2]!r}, "
                                   f"{_article(first_kind[1])}")
        rows.append((text, name))
    return rows


def _label(value: Any, typed: bool, where: str, row: int, column: str) -> tuple[str, str]:
    """A label's name (as given, surrounding blanks dropped) and kind ("integer" or "string")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), "integer"
    if isinstance(value, str) and value.strip():
        name = value.strip()
        return name, "string" if typed or not _INTEGER.fullmatch(name) else "integer"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(where, f"row {row}: no label in column {column!r}")
    raise DataError(where, f"row {row}: label {value!r} in column {column!r} is a {type(value).__name__}; "
                           "labels must be strings or integers")


def _article(kind: str) -> str:
    return "an integer" if kind == "integer" else "a string"


# ---------------------------------------------------------------- the task


def load_labelled(
    source: LabelledSource,
    *,
    label_names: Sequence[str] | None = None,
    train_per_label: int | None = None,
    test_per_label: int | None = None,
    seed: int = 42,
) -> TaskData:
    """The user's data as a TaskData: every row (or per_label rows of each label, balanced) of the training and
    test data, the test set being the test file/split or a stratified test_fraction of the training data.

    label_names: the labels to use (a trained model's, when evaluating); default: the training data's. The
    training data is not read when label_names are given, the test set has its own file and no training
    examples are asked for (train_per_label=0).
    """
    train: LabelledRows | None = None
    if label_names is None or source.test_fraction or train_per_label != 0:
        train = read_labelled(source, "train")
    names = list(label_names) if label_names is not None else train.label_names()  # type: ignore[union-attr]
    if label_names is None and len(names) < 2:
        raise DataError(train.where, f"only one label ({names[0]!r}) in column {source.label_column!r}: "  # type: ignore[union-attr]
                                     "a classifier needs at least two")
    index = {name: i for i, name in enumerate(names)}
    train_examples, dropped = _unique(_examples(train, index, source, "the model's labels") if train else [])
    train_where = train.where if train else ""
    if source.test_fraction:
        try:
            train_examples, test_examples = stratified_split(train_examples, source.test_fraction, len(names), seed,
                                                             source=train_where, label_names=names)
        except DataError as err:  # a label left with one row, maybe by dropping duplicates
            raise DataError(err.path, err.message + (f" (after dropping {dropped} duplicate rows)" if dropped
                                                     else ""), err.line) from None
        test_where = train_where
    elif source.test_file or source.dataset:
        test = read_labelled(source, "test")
        test_examples, dropped_test = _unique(_examples(test, index, source, f"the training data's labels "
                                                        f"({train_where})" if label_names is None
                                                        else "the model's labels"))
        test_where, dropped = test.where, dropped + dropped_test
    else:
        test_examples, test_where = [], ""
    test_texts = {e.text for e in test_examples}  # a text with another label in the test set is not trained on
    unseen = [e for e in train_examples if e.text not in test_texts]
    task = sample_task(source.name, names, (unseen, train_where), (test_examples, test_where), train_per_label,
                       test_per_label, seed)
    return dataclasses.replace(task, duplicates=dropped + len(train_examples) - len(unseen))


def _unique(examples: list[Example]) -> tuple[list[Example], int]:
    """Examples without exact (text, label) repeats (the first kept), and how many were dropped."""
    kept = list(dict.fromkeys(examples))
    return kept, len(examples) - len(kept)


def _examples(part: LabelledRows, index: dict[str, int], source: LabelledSource, whose: str) -> list[Example]:
    """Rows as Examples with label indices; a label outside `index` names its first row."""
    examples = []
    for row, (text, name) in enumerate(part.rows, 1):
        if name not in index:
            shown = ", ".join(list(index)[:20]) + (", ..." if len(index) > 20 else "")
            raise DataError(part.where, f"row {row}: label {name!r} in column {source.label_column!r} is not one "
                                        f"of {whose}: {shown}")
        examples.append(Example(text, index[name]))
    return examples


def load_task_data(
    source: LabelledSource,
    task: str,
    root: str | os.PathLike[str] | None = None,
    *,
    train_per_label: int | None = None,
    test_per_label: int | None = None,
    seed: int = 42,
    fewrel_markers: bool = False,
    data_source: str = "local",
    label_names: Sequence[str] | None = None,
) -> TaskData:
    """The examples a run asks for: the user's data when `source` names some, else the built-in `task` (a preset:
    its own readers, the same sampling); then a stratified validation_fraction of the training examples held out."""
    if source.given:
        data = load_labelled(source, label_names=label_names, train_per_label=train_per_label,
                             test_per_label=test_per_label, seed=seed)
    else:
        data = load_task(task, root, train_per_label=train_per_label, test_per_label=test_per_label, seed=seed,
                         fewrel_markers=fewrel_markers, source=data_source)
    data = with_validation(data, source.validation_fraction, seed)
    need = {"train": MIN_TRAIN_PER_LABEL if source.given or source.validation_fraction else 0,
            "validation": MIN_HELD_PER_LABEL if source.validation_fraction else 0,
            "test": MIN_HELD_PER_LABEL if source.test_fraction else 0}
    asked = {"train": train_per_label, "test": test_per_label}  # a per-label sample asked smaller is the user's
    need = {part: min(n, asked.get(part) if asked.get(part) is not None else n) for part, n in need.items()}
    require_rows_per_label(data, need, source.origin if source.given else data.name, source)
    return data


def require_rows_per_label(data: TaskData, need: dict[str, int], where: str, source: LabelledSource) -> None:
    """DataError naming the first label with fewer than need[part] rows in a part (train, validation, test) of
    `data`, with every label's counts, the splits' flags and the duplicates dropped."""
    parts = {"train": data.train, "validation": data.validation, "test": data.test}
    counts = {part: [0] * data.num_labels for part in parts}
    for part, examples in parts.items():
        for e in examples:
            counts[part][e.label] += 1
    short = next(((part, label) for part in parts for label in range(data.num_labels)
                  if counts[part][label] < need.get(part, 0)), None)
    if short is None:
        return
    part, label = short
    flags = [f"--{_flag(f)} {getattr(source, f):g}" for f in ("test_fraction", "validation_fraction")
             if getattr(source, f)]
    why = " with " + " and ".join(flags) if flags else ""
    why += f", after dropping {data.duplicates} duplicate rows" if data.duplicates else ""
    shown = ", ".join(f"{name!r} {counts['train'][i]}/{counts['validation'][i]}/{counts['test'][i]}"
                      for i, name in enumerate(data.label_names[:10])) + (", ..." if data.num_labels > 10 else "")
    n, noun = counts[part][label], "training" if part == "train" else part
    raise DataError(where, f"too few rows: label {data.label_names[label]!r} has {n} {noun} row"
                           f"{'s' if n != 1 else ''}{why}, fewer than the {need[part]} a label needs (at least "
                           f"{MIN_HELD_PER_LABEL} test and validation rows and {MIN_TRAIN_PER_LABEL} training rows); "
                           f"rows per label, training/validation/test: {shown}")


def with_validation(data: TaskData, fraction: float, seed: int) -> TaskData:
    """`data` with a stratified `fraction` of its training examples moved to data.validation (none when 0)."""
    if not fraction:
        return data
    train, validation = stratified_split(data.train, fraction, data.num_labels, seed,
                                         source=f"{data.name} (training examples)", label_names=data.label_names)
    return dataclasses.replace(data, train=train, validation=validation)


def content_hash(strings: Iterable[str]) -> str:
    """A short hash of a sequence of strings: a run on user data records its data's, so a resumed run on an edited
    file is refused instead of mixing the two."""
    h = hashlib.sha256()
    for s in strings:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def task_hash(data: TaskData) -> str:
    """content_hash of a task's label names and every example (train, validation, test) with its label."""
    parts = {"labels": data.label_names, "train": data.train, "validation": data.validation, "test": data.test}
    return content_hash(f"{part}\t{e.label}\t{e.text}" if not isinstance(e, str) else f"{part}\t{e}"
                        for part, items in parts.items() for e in items)
