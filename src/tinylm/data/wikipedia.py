"""Wikipedia articles for pre-training: the shared local sample, or the full dump from the Hugging Face hub."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.data.errors import DataError, RecordError
from tinylm.data.hub import hub_where, stream_hub_records
from tinylm.data.paths import data_root, iter_lines

ARTICLES_FILE = Path("wikipedia") / "articles.jsonl.gz"
HUB_WIKIPEDIA = ("wikimedia/wikipedia", "20231101.en")


@dataclass(frozen=True)
class Article:
    """One article; text is plain text with paragraphs joined by newlines."""

    id: str
    title: str
    text: str


def article_from_record(record: object) -> Article:
    """Check an {"id", "title", "text"} record (id may be an int, as in WikiExtractor output); RecordError if bad."""
    if not isinstance(record, Mapping):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("id", "title", "text"):
        if key not in record:
            raise RecordError(f"missing field {key!r}")
    article_id, title, text = record["id"], record["title"], record["text"]
    if isinstance(article_id, bool) or not isinstance(article_id, int | str) or not str(article_id).strip():
        raise RecordError(f"'id' must be a non-empty string or an integer, got {article_id!r}")
    for key, value in (("title", title), ("text", text)):
        if not isinstance(value, str):
            raise RecordError(f"{key!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise RecordError(f"empty {key!r}")
    return Article(str(article_id), title, text)


def read_articles(path: str | os.PathLike[str]) -> Iterator[Article]:
    """Articles of a .jsonl or .jsonl.gz file, checked line by line (blank lines skipped).

    A generator so a caller can stop early; a bad line raises DataError with its line number when reached,
    and a file without articles raises at the end. load_articles reads it fully before returning anything.
    """
    path = Path(path)
    count = 0
    for line_no, line in enumerate(iter_lines(path), 1):
        if not line.strip():
            continue
        try:
            article = article_from_record(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(path, f"invalid JSON: {err.msg} (column {err.colno})", line_no) from None
        except RecordError as err:
            raise DataError(path, str(err), line_no) from None
        count += 1
        yield article
    if not count:
        raise DataError(path, "no articles (empty file)")


def articles_from_records(records: Iterable[Any], *, source: str = "hub:" + HUB_WIKIPEDIA[0]) -> list[Article]:
    """Hub records (or any {"id", "title", "text"} mappings) as checked Articles; a bad one names its 1-based row."""
    articles: list[Article] = []
    for row, record in enumerate(records, 1):
        try:
            articles.append(article_from_record(record))
        except RecordError as err:
            raise DataError(source, f"row {row}: {err}") from None
    return articles


def articles_path(root: str | os.PathLike[str] | None = None) -> Path:
    """wikipedia/articles.jsonl.gz in the data folder, or an uncompressed articles.jsonl when only that exists."""
    path = data_root(root) / ARTICLES_FILE
    plain = path.with_suffix("")  # articles.jsonl
    return plain if not path.exists() and plain.is_file() else path


def load_articles(
    num_articles: int, seed: int = 42, root: str | os.PathLike[str] | None = None, *, source: str = "local"
) -> list[Article]:
    """num_articles articles in a seeded random order.

    local: every article of the shared file, permuted with numpy default_rng(seed), the first num_articles.
    hub: the paper's recipe, wikimedia/wikipedia 20231101.en streamed, shuffled with `seed` (buffer 10,000),
    the first num_articles; needs internet and is the way to more articles than the local file holds.
    """
    if num_articles < 0:
        raise ValueError(f"num_articles must be >= 0, got {num_articles}")
    if source == "hub":
        return _load_hub_articles(num_articles, seed)
    if source != "local":
        raise ValueError(f"unknown data source {source!r}; choose one of: local, hub")
    path = articles_path(root)
    articles = list(read_articles(path))
    if num_articles > len(articles):
        raise DataError(path, f"{num_articles} articles requested but only {len(articles)} available; "
                              f"use the hub source ({HUB_WIKIPEDIA[0]}) for more")
    order = np.random.default_rng(seed).permutation(len(articles))[:num_articles]
    return [articles[i] for i in order]


def _load_hub_articles(num_articles: int, seed: int) -> list[Article]:
    """The first num_articles of the seeded, shuffled Wikipedia stream from the hub."""
    name, config = HUB_WIKIPEDIA
    source = hub_where(name, config)
    records = stream_hub_records(name, config, num_articles, seed)
    articles = articles_from_records(records, source=source)
    if len(articles) < num_articles:
        raise DataError(source, f"{num_articles} articles requested but the stream gave only {len(articles)}")
    return articles
