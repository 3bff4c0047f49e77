"""The rows a fine-tuning run trained and was tested on, recorded in its run folder (rows.json), so that a later
evaluation can prove that it scores none of the training rows.

A row is its text as the model saw it (cleaned by the data readers), kept as a short hash: the first 12 hex digits
of its sha256, a few bytes a row, and a chance of about one in 10^10 that an unseen text of a thousand-row test set
matches one of a hundred thousand training texts by accident. The data path never trains on a test-pool text
(data.tasks.sample_task), so the run's own test rows are disjoint from its training rows by construction; a
re-drawn split (another --test-fraction or --data-seed), a file that repeats training rows, or a built-in task
sampled from one pool with another seed may not be, and `check_held_out` refuses those.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tinylm.checkpoint import model_folder
from tinylm.data import Example
from tinylm.io import write_json

ROWS_FILE = "rows.json"
HASH_CHARS = 12


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def record_rows(out: Path, train_texts: Iterable[str], test_texts: Iterable[str]) -> None:
    """Write out/rows.json: the hashes of the texts the run trained on and of its test texts (sorted, once each)."""
    write_json(out / ROWS_FILE, {
        "hash": f"sha256 of each text as trained (cleaned), its first {HASH_CHARS} hex digits",
        "train": sorted({text_hash(t) for t in train_texts}),
        "test": sorted({text_hash(t) for t in test_texts}),
    })


def stored_rows(path: str | os.PathLike) -> dict[str, Any] | None:
    """The rows.json of the run at `path` (a run folder, or the model folder inside one); None when it has none
    (a run from before rows were recorded, or a model folder on its own)."""
    folder = model_folder(path)
    run = folder.parent if folder.name == "model" else Path(path)
    return json.loads((run / ROWS_FILE).read_text()) if (run / ROWS_FILE).is_file() else None


def check_held_out(path: str | os.PathLike, examples: Sequence[Example], hint: str = "") -> None:
    """A ValueError (one line) when any of `examples` is a text the run at `path` trained on; nothing to check
    without its rows.json. `hint` says how to score held-out rows instead."""
    rows = stored_rows(path)
    if rows is None:
        return
    trained = set(rows["train"])
    seen = [e.text for e in examples if text_hash(e.text) in trained]
    if seen:
        first = seen[0] if len(seen[0]) <= 40 else seen[0][:40] + "..."
        raise ValueError(f"{path} was trained on {len(seen)} of the {len(examples)} rows to evaluate (the first: "
                         f"{first!r}), so their score is no test score{hint}")


__all__ = ["HASH_CHARS", "ROWS_FILE", "check_held_out", "record_rows", "stored_rows", "text_hash"]
