"""Where the data folder is: one rule shared by the CLI, the loaders and the tests."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tinylm.data.errors import DataError

ENV_VAR = "TINYLM_DATA"
_DEFAULT = Path("..") / "shared" / "data"
# src/tinylm/data/paths.py -> parents[3] is the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[3]
# The samples the package ships (src/tinylm/demo_data): the demo's data, and the tests'.
DEMO_DATA = Path(__file__).parents[1] / "demo_data"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Explicit root, else $TINYLM_DATA, else ../shared/data from the CWD, else from the repository root.

    Raises DataError naming the folder tried when the chosen one does not exist, so a typo in --data or
    TINYLM_DATA is reported as such instead of as a missing file deep inside a loader.
    """
    if root is not None:
        return _existing(Path(root).expanduser(), "data folder not found (given explicitly)")
    env = os.environ.get(ENV_VAR)
    if env:
        return _existing(Path(env).expanduser(), f"data folder not found (from ${ENV_VAR})")
    from_cwd = Path.cwd() / _DEFAULT
    if from_cwd.is_dir():
        return from_cwd.resolve()
    return _existing(
        (_REPO_ROOT / _DEFAULT).resolve(),
        f"data folder not found (also tried {from_cwd}); set ${ENV_VAR} or pass the data folder explicitly",
    )


def cache_dir() -> Path:
    """Where derived artefacts (token ids, trained vocabularies) are cached: $TINYLM_CACHE or ~/.cache/tinylm."""
    return Path(os.environ.get("TINYLM_CACHE", Path.home() / ".cache" / "tinylm"))


def _existing(path: Path, message: str) -> Path:
    """The path itself if it is a folder, else a DataError naming it."""
    if not path.is_dir():
        raise DataError(path, message)
    return path


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading bytes (decompressing when it ends in .gz); a missing file is a DataError."""
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")
        return open(path, "rb")  # the caller closes it
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a file") from None
    except OSError as err:
        raise DataError(path, f"cannot open: {err.strerror or err}") from None


def iter_lines(path: Path) -> Iterator[str]:
    """The file's lines, endings kept (csv needs them inside quoted fields), decoded as UTF-8 one line at a time.

    Decoding per line lets a bad byte be reported at its exact line; any read, decode or gzip failure is a
    DataError naming the line reached. A leading byte-order mark is dropped.
    """
    line_no = 0
    with open_binary(path) as f:
        try:
            for line_no, raw in enumerate(f, 1):
                text = raw.decode("utf-8")
                yield text.removeprefix("\ufeff") if line_no == 1 else text
        except UnicodeDecodeError as err:
            raise DataError(path, f"not valid UTF-8 text ({err.reason} at byte {err.start})", line_no) from None
        except (OSError, EOFError, zlib.error) as err:  # gzip: bad header, truncated or corrupt stream
            raise DataError(path, f"cannot read: {err}", line_no + 1) from None


def read_text(path: Path) -> str:
    """The whole file as text; a missing, unreadable or non-UTF-8 file is a DataError."""
    return "".join(iter_lines(path))
