"""Files written whole or not at all: `write_json` (a temporary file, then a rename) and `atomic_dir` (a folder
written under a temporary name, then moved into place), which model folders, run folders and results share.

What they write gets the user's umask, as a plain mkdir or open would give: tempfile's folder is 0700, and
safetensors writes its files 0600, which would keep a model from a service account that may read the user's
files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Write a folder under a temporary name and move it into place only when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        with_umask(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def with_umask(folder: Path) -> None:
    """A folder and everything in it readable as the umask allows: folders 0777 and files 0666 less the umask (a
    file's execute bits kept)."""
    mask = umask()
    for item in [folder, *folder.rglob("*")]:
        if item.is_symlink():
            continue
        mode = 0o777 if item.is_dir() else 0o666 | (item.stat().st_mode & 0o111)
        os.chmod(item, mode & ~mask)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename), so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


__all__ = ["atomic_dir", "umask", "with_umask", "write_json"]
