"""The one way tinylm reads Hugging Face hub datasets: a whole split, or the first N records of a shuffled stream.

Both need internet the first time (`datasets` caches a split afterwards) and turn any failure (network,
authentication, a misspelt name or split) into one DataError naming the dataset.
"""

from __future__ import annotations

from typing import Any

from tinylm.data.errors import DataError

HUB_SHUFFLE_BUFFER = 10_000


def parse_hub_name(spec: str) -> tuple[str, str | None]:
    """"NAME" or "NAME:CONFIG" (e.g. "fancyzhx/ag_news", "wikimedia/wikipedia:20231101.en") -> (name, config)."""
    name, _, config = spec.partition(":")
    if not name.strip():
        raise ValueError(f"{spec!r}: expected a hub dataset as NAME or NAME:CONFIG")
    return name.strip(), config.strip() or None


def hub_where(name: str, config: str | None, split: str | None = None) -> str:
    """How errors name a hub dataset: hub:NAME[/CONFIG][SPLIT]."""
    return f"hub:{name}" + (f"/{config}" if config else "") + (f"[{split}]" if split else "")


def load_hub_split(name: str, config: str | None, split: str) -> Any:
    """One split of a hub dataset as a `datasets.Dataset`."""
    from datasets import load_dataset  # slow to import; only hub users pay for it

    try:
        return load_dataset(name, config, split=split)
    except Exception as err:  # network, authentication, missing dataset or split: all reported as one line
        raise DataError(hub_where(name, config), f"could not load split {split!r}: {type(err).__name__}: {err}") \
            from None


def stream_hub_records(name: str, config: str | None, count: int, seed: int, split: str = "train") -> list[Any]:
    """The first `count` records of a split streamed and shuffled with `seed` (buffer HUB_SHUFFLE_BUFFER), so a
    subset of a dataset too large to download (full Wikipedia) costs only the records taken."""
    from datasets import load_dataset

    try:
        stream = load_dataset(name, config, split=split, streaming=True)
        return list(stream.shuffle(seed=seed, buffer_size=HUB_SHUFFLE_BUFFER).take(count))
    except Exception as err:  # network, authentication, missing dataset: all reported as one line
        raise DataError(hub_where(name, config), f"could not stream records: {type(err).__name__}: {err}") from None
