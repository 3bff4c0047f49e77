"""What a folder given on the command line holds, and who writes a run folder.

`folder_kind` reads a model or run folder's config.json (and tinylm_meta.json) without loading any weights: a
fine-tuned classifier, a soft committee of classifiers, a distilled student, or a pre-trained (MLM) model or
committee. Every command that needs a classifier (predict, evaluate, serve, export onnx, distill --teacher) asks
`classifier_folder` first, so a pre-trained folder is one line saying so, never a shape mismatch or a server whose
every answer is a 500. `looks_local` decides whether a name that is no folder here is a missing local path (not
found) or a Hugging Face hub repo id.

`one_writer` gives a run folder one writer: every trainer holds RUN/.writer.lock (an flock, which the kernel
releases when its process dies, so a killed run leaves no stale lock) and a second process asking for the same
folder is refused at once instead of interleaving its checkpoints, logs and config with the first's.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

COMMITTEE_MODEL_TYPE = "tinylm_committee"  # config.json's model_type of a committee folder (committee/io.py)
FolderKind = Literal["classifier", "committee", "student", "mlm", "mlm_committee"]
CLASSIFIER_KINDS: tuple[FolderKind, ...] = ("classifier", "committee", "student")
WRITER_LOCK = ".writer.lock"


def looks_local(name: str | os.PathLike) -> bool:
    """Whether `name` means a local path rather than a hub repo id ("org/model", or a bare name like
    "bert-base-uncased"): it exists, starts with ".", "/" or "~", has more than one "/", or its parent folder
    exists here ("runs/nope" beside a runs/ folder)."""
    text = str(name)
    path = Path(text)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or text.endswith("/"):
        return True
    return "/" in text and path.parent.is_dir()


def _read_config(folder: Path, shown: str) -> dict[str, Any]:
    config = folder / "config.json"
    if not config.is_file():
        if (folder / "checkpoint").is_dir() or any(folder.glob("*_config.json")):
            raise FileNotFoundError(f"{shown}: a run folder without a finished model yet; re-run its command to "
                                    "resume it")
        raise FileNotFoundError(f"{shown}: no config.json, so this is not a model folder")
    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{config}: unreadable ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{config}: not a model config")
    return raw


def folder_kind(path: str | os.PathLike) -> FolderKind:
    """What the model or run folder at `path` holds (a run folder: its model/), from its config files alone.

    A FileNotFoundError names a path that does not exist and a folder with no model in it; a name that is no local
    path is resolved as the hub's (checkpoint.resolve_model_dir)."""
    from tinylm.checkpoint import model_folder, resolve_model_dir

    folder = model_folder(path)
    if not folder.is_dir():
        if folder.exists():
            raise FileNotFoundError(f"{path}: a file, not a model folder")
        if looks_local(path):
            raise FileNotFoundError(f"{path}: not found")
        folder = resolve_model_dir(path)
    raw = _read_config(folder, str(path))
    head = (raw.get("tinylm") or {}).get("head")
    if head is None:
        head = "classification" if "id2label" in raw and "ForSequence" in str(raw.get("architectures")) else "mlm"
    committee = raw.get("model_type") == COMMITTEE_MODEL_TYPE
    if head != "classification":
        return "mlm_committee" if committee else "mlm"
    if committee:
        return "committee"
    meta = folder / "tinylm_meta.json"
    return "student" if meta.is_file() and "distill" in json.loads(meta.read_text()) else "classifier"


def classifier_folder(path: str | os.PathLike) -> Path:
    """The model folder of the classifier at `path` (a fine-tuned model, committee or student, or its run folder);
    a one-line error for anything else: a missing path, a folder without a model, a pre-trained (MLM) one."""
    from tinylm.checkpoint import model_folder, resolve_model_dir

    kind = folder_kind(path)
    if kind == "mlm":
        raise ValueError(f"{path} is a pre-trained (MLM) folder, not a classifier; fine-tune it first "
                         f"(tinylm finetune --init {path} ...)")
    if kind == "mlm_committee":
        raise ValueError(f"{path} is a pre-trained (MLM) committee, not a classifier; fine-tune its members first "
                         "(tinylm reproduce committee fine-tunes committees)")
    folder = model_folder(path)
    return folder if folder.is_dir() else resolve_model_dir(path)


# ---------------------------------------------------------------- one writer per run folder

class FolderInUse(RuntimeError):
    """Another process holds the run folder's writer lock."""


_held: dict[str, int] = {}  # folders this process holds (re-entered by a trainer a trainer calls), with a count
_held_guard = threading.Lock()


@contextmanager
def one_writer(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold FOLDER/.writer.lock (created with the folder) while the body runs; FolderInUse, at once and before
    anything is written, when another process holds it. The same process may re-enter. On exit the lock file is
    removed, and so is a folder this call created when the body failed leaving it empty (bad input leaves no
    run folder behind)."""
    folder = Path(folder)
    key = str(folder.resolve())
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield folder
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    created = _first_missing(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / WRITER_LOCK
    fd = _acquire(lock, folder)
    with _held_guard:
        _held[key] = 1
    ok = False
    try:
        yield folder
        ok = True
    finally:
        with _held_guard:
            del _held[key]
        lock.unlink(missing_ok=True)  # while still locked: a waiter that opened this file sees it is gone
        os.close(fd)
        if not ok and created is not None:
            _remove_empty(folder, created)


def _acquire(lock: Path, folder: Path) -> int:
    """An open, exclusively flocked descriptor of `lock` holding this process's id."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise FolderInUse(f"{folder}: another tinylm run{by} is writing this run folder; wait for it to end, "
                              "or give another --out") from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder removed the file between our open and our lock: lock the new one


def _first_missing(folder: Path) -> Path | None:
    """The outermost of `folder` and its parents that does not exist yet (None: the folder exists)."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing = path
    return missing


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to `stop` while they are empty."""
    for path in (folder, *folder.parents):
        try:
            path.rmdir()
        except OSError:
            return
        if path == stop:
            return


__all__ = ["CLASSIFIER_KINDS", "COMMITTEE_MODEL_TYPE", "WRITER_LOCK", "FolderInUse", "FolderKind",
           "classifier_folder", "folder_kind", "looks_local", "one_writer"]
