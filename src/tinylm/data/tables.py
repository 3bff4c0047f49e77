"""Table files of the user's own (CSV, TSV, JSON lines or a JSON array, Parquet) as `datasets.Dataset`s, for the
labelled files (data.user_files) and the corpora (data.corpus).

`datasets` reads them (one reader for every format, compressed ones too: .gz, .bz2, .xz); this module checks
what it cannot say in one line, before or after it reads: a CSV/TSV's header row (present, named, unique, and
followed by at least one row), the first line that is not UTF-8, and the first line of a JSON lines file that is
not JSON. A CSV/TSV without a header row is read with `no_header`: its columns are then named by their 0-based
numbers ("0", "1", ...).

`datasets` keeps an Arrow copy of every file it reads under $TINYLM_CACHE/datasets (default
~/.cache/tinylm/datasets; rebuilt when the file changes); TINYLM_CACHE=off keeps none (data.paths.cache_dir).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinylm.data.errors import DataError
from tinylm.data.paths import COMPRESSIONS, cache_dir, cache_is_off, iter_lines, read_text, unread_compression

# File name endings -> the `datasets` reader; any of them may also end in a compression suffix (data.paths).
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".ndjson": "json", ".json": "json",
                 ".parquet": "parquet"}
NO_HEADER_HINT = ("does the file have a header row? If not, use --no-header and give --text-column and "
                  "--label-column as 0-based column numbers")
_NUMBER = re.compile(r"[+-]?\d+([.,]\d+)?")


def table_format(path: Path) -> str | None:
    """csv, tsv, json or parquet from the name (a compression suffix aside); None for any other file."""
    name = path.name.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    return TABLE_FORMATS.get(Path(name).suffix)


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars or log lines from `datasets` while a file is read: a bad file's error stays one line."""
    import datasets

    bars_off, level = datasets.are_progress_bars_disabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if not bars_off:
            datasets.enable_progress_bars()


def open_table(path: str | os.PathLike[str], *, no_header: bool = False) -> Any:
    """A CSV, TSV, JSON (lines) or Parquet file as a `datasets.Dataset`; CSV/TSV cells stay text, as written.
    no_header: a CSV/TSV whose first row is data; its columns are named "0", "1", ..."""
    path = Path(path)
    kind = table_format(path)
    if kind is None:
        why = unread_compression(path)
        raise DataError(path, why or f"unknown file type; use one of {', '.join(TABLE_FORMATS)} (optionally "
                                     f"compressed: {', '.join(COMPRESSIONS)})")
    if not path.is_file():
        raise DataError(path, "is a folder, not a file" if path.is_dir() else "file not found")
    if no_header and kind not in ("csv", "tsv"):
        raise DataError(path, "--no-header is for CSV and TSV files; a JSON or Parquet file names its columns")
    from datasets import Features, Value, load_dataset  # slow to import; only users of their own files pay

    options: dict[str, Any] = {}
    if kind in ("csv", "tsv"):
        sep = "\t" if kind == "tsv" else ","
        names = csv_columns(path, sep, no_header=no_header)
        # Every column as text, and no "NA"/"null" turned into a missing value: labels and texts stay as written.
        options = {"sep": sep, "features": Features({name: Value("string") for name in names}), "na_filter": False}
        if no_header:
            options |= {"column_names": names, "header": None}
    try:
        with _quiet_datasets():
            return load_dataset("csv" if kind == "tsv" else kind, data_files=str(path), split="train",
                                cache_dir=str(cache_dir() / "datasets"), keep_in_memory=cache_is_off(), **options)
    except Exception as err:  # datasets wraps the reader's error: name the file's line where we can
        if kind != "parquet":
            for _ in iter_lines(path):  # raises a DataError at the first line that is not UTF-8
                pass
        if kind == "json":
            _check_json(path)
        raise DataError(path, f"cannot read as {kind.upper()}: {_root_cause(err)}") from None


def csv_columns(path: Path, sep: str, *, no_header: bool = False) -> list[str]:
    """The column names of a CSV/TSV file: its header row's (checked: present, named, unique, and followed by a
    row), or with no_header "0", "1", ... for the columns of its first row."""
    rows = (row for row in csv.reader(iter_lines(path), delimiter=sep))
    first = next(rows, None)
    if not first:
        raise DataError(path, "empty file: expected " + ("a row" if no_header else "a header row naming the columns"),
                        1)
    if no_header:
        return [str(i) for i in range(len(first))]
    for i, name in enumerate(first, 1):
        if not name.strip():
            raise DataError(path, f"column {i} of the header row has no name", 1)
        if first.index(name) < i - 1:
            raise DataError(path, f"the header row names column {name!r} twice", 1)
    if not any(any(cell.strip() for cell in row) for row in rows):
        raise DataError(path, "has a header but no rows")
    return first


def _check_json(path: Path) -> None:
    """The DataError of a JSON lines file's first line that is not a JSON object (or of a JSON array file that
    is not JSON), or of a file with no records; nothing when every line parses."""
    lines = iter_lines(path)
    first = next((line for line in lines if line.strip()), None)
    lines.close()
    if first is None:
        raise DataError(path, "empty file: no rows")
    if first.lstrip().startswith("["):  # one JSON array
        try:
            records = json.loads(read_text(path))
        except json.JSONDecodeError as err:
            raise DataError(path, f"invalid JSON: {err.msg} (column {err.colno})", err.lineno) from None
        if not records:
            raise DataError(path, "no rows (an empty JSON array)")
        return
    for line_no, line in enumerate(iter_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, f"invalid JSON: {err.msg} (column {err.colno})", line_no) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object per line, got {type(record).__name__}", line_no)


def _root_cause(err: BaseException) -> str:
    """The innermost error behind `err`, as "Type: message"."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return f"{type(err).__name__}: {err}"


def looks_like_data(names: Sequence[str]) -> bool:
    """True when a header row reads like a row of data: a number, or a sentence, where a column name should be."""
    return any(_NUMBER.fullmatch(n.strip()) or len(n.split()) >= 4 or len(n) > 40 for n in names)


def table_columns(dataset: Any, columns: Sequence[str], where: str, *,
                  header_hint: bool = False) -> dict[str, list[Any]]:
    """The named columns of a `datasets.Dataset` as lists; a missing one names the columns there are (and, with
    header_hint, when the header row reads like data or a column is asked for by number, asks about it)."""
    for column in columns:
        if column not in dataset.column_names:
            there = dataset.column_names
            if all(n.isdigit() for n in there):  # read with no_header
                raise DataError(where, f"no column {column!r}; the file has {len(there)} columns, numbered 0 to "
                                       f"{len(there) - 1}")
            hint = header_hint and (looks_like_data(there) or all(c.strip().isdigit() for c in columns))
            shown = ", ".join(n if len(n) <= 40 else n[:37] + "..." for n in there)
            raise DataError(where, f"no column {column!r}; the columns are: {shown}"
                                   + (f"; {NO_HEADER_HINT}" if hint else ""))
    if dataset.num_rows == 0:
        raise DataError(where, "no rows")
    return dataset.select_columns(list(columns)).to_dict()
