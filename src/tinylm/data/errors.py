"""The one error type for bad or missing input data, so callers can report it in a single line."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad or missing input data. str(err) is one clear line naming the file (and the line number when known)."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.message = " ".join(str(message).split())  # always one line, whatever the cause's text held
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {self.message}")


class RecordError(ValueError):
    """One record is malformed. Raised by record checks that know no file; the reader that does adds the file
    and line and re-raises it as a DataError (hub records get the dataset name and row instead)."""
