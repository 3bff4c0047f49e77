"""Where the data folder is: one rule shared by the CLI, the loaders and the tests."""

from __future__ import annotations

import atexit
import bz2
import gzip
import lzma
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
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


CACHE_VAR = "TINYLM_CACHE"
CACHE_OFF = ("off", "none", "no", "0", "false")  # TINYLM_CACHE=off: nothing is kept between commands
_scratch: list[Path] = []  # the one temporary cache folder of this process, when caching is off


def cache_dir() -> Path:
    """Where derived artefacts (token ids, trained vocabularies, the Arrow copies `datasets` makes of the user's
    files) are cached: $TINYLM_CACHE or ~/.cache/tinylm. With TINYLM_CACHE=off, a temporary folder of this process,
    removed when it exits, so that nothing of the user's data is kept."""
    value = os.environ.get(CACHE_VAR, "").strip()
    if value.lower() in CACHE_OFF:
        if not _scratch:
            _scratch.append(Path(tempfile.mkdtemp(prefix="tinylm-cache-")))
            atexit.register(shutil.rmtree, _scratch[0], True)
        return _scratch[0]
    return Path(value).expanduser() if value else Path.home() / ".cache" / "tinylm"


def cache_is_off() -> bool:
    """True when TINYLM_CACHE=off: readers keep what they read in memory, not in the (temporary) cache."""
    return os.environ.get(CACHE_VAR, "").strip().lower() in CACHE_OFF


def _existing(path: Path, message: str) -> Path:
    """The path itself if it is a folder, else a DataError naming it."""
    if not path.is_dir():
        raise DataError(path, message)
    return path


# Compressed files are read by their name's last suffix, with the standard library; every reader of the user's
# files (corpora, labelled tables, the data folder) opens them here. Other compressions are refused by name.
OPENERS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
COMPRESSIONS = tuple(OPENERS)
UNREAD_COMPRESSIONS = {".zst": "zstd", ".zstd": "zstd", ".zip": "zip", ".7z": "7-Zip", ".lz4": "LZ4", ".br": "Brotli"}


def unread_compression(path: Path) -> str | None:
    """Why a file with a compression suffix tinylm does not read is refused (one line), or None."""
    kind = UNREAD_COMPRESSIONS.get(path.suffix.lower())
    if kind is None:
        return None
    return (f"{kind}-compressed ({path.suffix}) files are not read; decompress it, or compress it with one of "
            f"{', '.join(COMPRESSIONS)}")


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing by its suffix (.gz, .bz2, .xz); a missing file, or one
    compressed in a way tinylm does not read (.zst, .zip, ...), is a DataError."""
    if (why := unread_compression(path)) is not None:
        raise DataError(path, why)
    try:
        opener = OPENERS.get(path.suffix.lower())
        return opener(path, "rb") if opener else open(path, "rb")  # the caller closes it
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a file") from None
    except OSError as err:
        raise DataError(path, f"cannot open: {err.strerror or err}") from None


def iter_lines(path: Path) -> Iterator[str]:
    """The file's lines, endings kept (csv needs them inside quoted fields), decoded as UTF-8 one line at a time.

    Decoding per line lets a bad byte be reported at its exact line; any read, decode or gzip failure is a
    DataError naming the line reached (of a compressed file: its decompressed lines). A leading byte-order mark
    is dropped.
    """
    line_no = 0
    with open_binary(path) as f:
        try:
            for line_no, raw in enumerate(f, 1):
                text = raw.decode("utf-8")
                yield text.removeprefix("\ufeff") if line_no == 1 else text
        except UnicodeDecodeError as err:
            raise DataError(path, f"not valid UTF-8 text ({err.reason} at byte {err.start})", line_no) from None
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as err:  # a bad header, truncated or corrupt stream
            raise DataError(path, f"cannot read: {err}", line_no + 1) from None


def read_text(path: Path) -> str:
    """The whole file as text; a missing, unreadable or non-UTF-8 file is a DataError."""
    return "".join(iter_lines(path))
