"""A pre-training corpus of the user's own (`tinylm pretrain --corpus PATH`): its documents as texts.

PATH is one of
- a folder: every file in it (recursively; hidden ones skipped) is one document;
- a table file (.jsonl, .json, .csv, .tsv, .parquet, optionally compressed): one document per row, from the
  column `text_field` (read by `datasets`, as the labelled files are);
- any other file (.txt, .txt.gz, ...): one document per non-blank line;
- hub:NAME[:CONFIG]: a Hugging Face hub dataset's train split, streamed and shuffled (needs internet).

A run takes `count` documents of a seeded permutation, as it takes Wikipedia articles, and trains on the first
seq_len tokens of each. Text files must be UTF-8; a bad byte, or a table row without text, is a DataError
naming the file and line or row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tinylm.data.errors import DataError
from tinylm.data.hub import hub_where, parse_hub_name, stream_hub_records
from tinylm.data.paths import iter_lines, read_text
from tinylm.data.tables import open_table, table_columns, table_format

HUB_PREFIX = "hub:"
CORPUS_HELP = {
    "corpus": "pre-train on your own corpus instead of Wikipedia: a text file (a document per line), a folder (a "
              "document per file), a .jsonl/.csv/.parquet file with a text column, or hub:NAME[:CONFIG]; all of it "
              "unless --articles N",
    "text_field": "the corpus's text column, for a table file or hub dataset (default: text)",
}


def read_corpus(spec: str | os.PathLike[str], text_field: str = "text") -> list[str]:
    """Every document of a local corpus, in corpus order (files sorted by path)."""
    path = Path(spec)
    if str(spec).startswith(HUB_PREFIX):
        raise ValueError(f"{spec}: a hub corpus is streamed, not read whole; give --articles N")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        docs = [text for text in (read_text(p).strip() for p in files) if text]
        kind = "no documents (no non-empty files in the folder)"
    elif table_format(path) is not None:
        docs = _table_documents(path, text_field)
        kind = "no documents"
    elif path.is_file():
        docs = [line.strip() for line in iter_lines(path) if line.strip()]
        kind = "no documents (no non-blank lines)"
    else:
        raise DataError(path, f"not found (a file, a folder, or {HUB_PREFIX}NAME[:CONFIG] for a hub dataset)")
    if not docs:
        raise DataError(path, kind)
    return docs


def _table_documents(path: Path, text_field: str) -> list[str]:
    """The text column of a table file; a row whose text is missing, empty or not a string names its row."""
    texts = table_columns(open_table(path), [text_field], str(path))[text_field]
    for row, text in enumerate(texts, 1):
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, f"row {row}: no text in column {text_field!r}")
    return [t.strip() for t in texts]


def count_documents(spec: str, text_field: str = "text") -> int:
    """How many documents a local corpus holds (what `pretrain --corpus` takes when --articles is not given)."""
    return len(read_corpus(spec, text_field))


def load_corpus(spec: str, count: int, seed: int = 42, text_field: str = "text") -> list[str]:
    """`count` documents: the first of the corpus permuted with numpy default_rng(seed) (as load_articles does),
    or for a hub corpus the first of its stream shuffled with `seed`."""
    if count < 1:
        raise ValueError(f"the number of documents must be at least 1, got {count}")
    if spec.startswith(HUB_PREFIX):
        name, config = parse_hub_name(spec.removeprefix(HUB_PREFIX))
        where = hub_where(name, config)
        records = stream_hub_records(name, config, count, seed)
        texts = [r.get(text_field) if isinstance(r, dict) else None for r in records]
        for row, text in enumerate(texts, 1):
            if not isinstance(text, str) or not text.strip():
                raise DataError(where, f"row {row}: no text in field {text_field!r}")
        if len(texts) < count:
            raise DataError(where, f"{count} documents requested but the stream gave only {len(texts)}")
        return [t.strip() for t in texts]  # type: ignore[union-attr]
    docs = read_corpus(spec, text_field)
    if count > len(docs):
        raise DataError(spec, f"{count} documents requested but the corpus holds only {len(docs)}")
    order = np.random.default_rng(seed).permutation(len(docs))[:count]
    return [docs[i] for i in order]
