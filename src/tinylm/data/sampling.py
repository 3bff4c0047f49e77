"""Seeded, label-balanced samples and disjoint train/test splits.

Everything draws from numpy.random.default_rng(seed), so the same pool and seed give the same sample on every
machine. Outputs are shuffled (not grouped by label) so callers can batch them in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tinylm.data.errors import DataError

if TYPE_CHECKING:
    from tinylm.data.examples import Example


def balanced_sample(
    examples: Sequence[Example],
    per_label: int,
    num_labels: int,
    seed: int,
    *,
    source: str = "",
    label_names: Sequence[str] | None = None,
) -> list[Example]:
    """per_label examples of each label 0..num_labels-1, drawn without replacement, in shuffled order.

    Raises DataError (naming `source`, the label and both counts) when a label has too few examples.
    """
    _check_counts(num_labels, per_label)
    rng = np.random.default_rng(seed)
    picked: list[Example] = []
    for label, pool in enumerate(_indices_by_label(examples, num_labels, source)):
        _require(len(pool), per_label, label, source, label_names)
        order = rng.permutation(len(pool))[:per_label]
        picked.extend(examples[pool[i]] for i in order)
    return _shuffled(picked, rng)


def balanced_split(
    examples: Sequence[Example],
    train_per_label: int,
    test_per_label: int,
    num_labels: int,
    seed: int,
    *,
    source: str = "",
    label_names: Sequence[str] | None = None,
) -> tuple[list[Example], list[Example]]:
    """Disjoint (train, test) balanced samples from one pool.

    Disjoint by row: no pool row lands in both, but two rows with the same text can (dedupe the pool first if
    that matters). The test rows are drawn first, so the test sample depends only on the pool, the seed and
    test_per_label — evaluating with train_per_label=0 sees the same test set as the training run did.
    """
    _check_counts(num_labels, train_per_label, test_per_label)
    rng = np.random.default_rng(seed)
    train: list[Example] = []
    test: list[Example] = []
    for label, pool in enumerate(_indices_by_label(examples, num_labels, source)):
        need = train_per_label + test_per_label
        _require(len(pool), need, label, source, label_names, f" ({train_per_label} train + {test_per_label} test)")
        order = rng.permutation(len(pool))
        test.extend(examples[pool[i]] for i in order[:test_per_label])
        train.extend(examples[pool[i]] for i in order[test_per_label:need])
    test = _shuffled(test, rng)  # test before train: its order must not depend on train_per_label either
    return _shuffled(train, rng), test


def stratified_split(
    examples: Sequence[Example],
    fraction: float,
    num_labels: int,
    seed: int,
    *,
    source: str = "",
    label_names: Sequence[str] | None = None,
) -> tuple[list[Example], list[Example]]:
    """(rest, held out): round(fraction x its count) rows of each label held out (at least one, and at least one
    left), in pool order, so both parts keep the labels' proportions. A label with a single row is a DataError.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for label, pool in enumerate(_indices_by_label(examples, num_labels, source)):
        if len(pool) == 1:
            name = f" ({label_names[label]})" if label_names is not None and label < len(label_names) else ""
            raise DataError(source or "<examples>", f"label {label}{name} has 1 example: too few to hold out "
                                                    f"{fraction:g} of them and keep the rest")
        take = min(max(round(fraction * len(pool)), 1), len(pool) - 1) if pool else 0
        held.update(pool[i] for i in rng.permutation(len(pool))[:take])
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def _check_counts(num_labels: int, *counts: int) -> None:
    """Programming errors (not data errors): a label count below 1 or a negative sample size."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    for count in counts:
        if count < 0:
            raise ValueError(f"examples per label must be >= 0, got {count}")


def _indices_by_label(examples: Sequence[Example], num_labels: int, source: str) -> list[list[int]]:
    """Row indices of each label, in pool order; a label outside 0..num_labels-1 is a DataError."""
    pools: list[list[int]] = [[] for _ in range(num_labels)]
    for i, example in enumerate(examples):
        if not 0 <= example.label < num_labels:
            raise DataError(source or "<examples>", f"example {i} has label {example.label}, "
                                                    f"outside 0..{num_labels - 1}")
        pools[example.label].append(i)
    return pools


def _require(
    have: int, need: int, label: int, source: str, label_names: Sequence[str] | None, detail: str = ""
) -> None:
    """DataError when a label's pool is smaller than the sample asked of it."""
    if have < need:
        name = f" ({label_names[label]})" if label_names is not None and label < len(label_names) else ""
        raise DataError(source or "<examples>",
                        f"label {label}{name} has {have} examples, {need} needed{detail}")


def _shuffled(items: list[Example], rng: np.random.Generator) -> list[Example]:
    """A seeded permutation of items (so samples are not grouped by label)."""
    return [items[i] for i in rng.permutation(len(items))]
