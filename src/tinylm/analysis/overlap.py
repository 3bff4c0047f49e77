"""Token overlap between a pre-training subset and a classification dataset (the paper's claim 3).

The paper says only "the overlap between the tokens of the pre-training data and those of the classification
dataset". Three readings are computed from two token-count vectors (index = token id, value = occurrences):

- token (the default, used in reports): the fraction of the task's token *occurrences* whose token type also
  occurs in the pre-training subset. Frequent task tokens weigh more, like they do in fine-tuning.
- type: the fraction of the task's distinct token *types* that also occur in the pre-training subset.
- weighted: like token, but a type counts as covered only in proportion to how often pre-training saw it,
  saturating at k = WEIGHTED_MIN_COUNT = 10 occurrences: sum_t task(t) * min(1, pre(t) / k) / sum_t task(t).
  A type seen once in MLM pre-training has a barely trained embedding; one seen k times or more counts fully.
  With k = 1 it equals the token measure. The 10 is a judgement call, not the paper's: the measure is an
  alternative reading, reported next to the default, never instead of it.

Special tokens ([PAD], [UNK], [CLS], [SEP], [MASK], and any other special token of the tokenizer) are not
counted: [PAD]/[CLS]/[SEP]/[MASK] occur in every sample by construction and would inflate every measure, and
two [UNK]s do not stand for the same word, so a shared [UNK] is no shared token.

Texts are tokenised the way the models see them: the first `max_length` tokens of each text, special tokens
included in that budget ([CLS] + 126 WordPieces + [SEP] for 128), as in pre-training and fine-tuning.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only a type here; importing transformers would slow down report-only users
    from transformers import PreTrainedTokenizerFast

TokenIds = np.ndarray | Sequence[Sequence[int]] | Sequence[int]
WEIGHTED_MIN_COUNT = 10  # pre-training occurrences at which the weighted measure counts a type as fully covered


# ---------------------------------------------------------------- counting


def count_ids(ids: TokenIds, vocab_size: int, exclude: Iterable[int] = ()) -> np.ndarray:
    """Occurrences of every token id (length vocab_size, int64) in a 1-D/2-D id array or a list of id lists.

    Padded arrays are fine when the pad id is in `exclude` (pass tokenizer.all_special_ids).
    """
    if isinstance(ids, np.ndarray):
        flat = ids.astype(np.int64, copy=False).ravel()
    elif len(ids) and not np.isscalar(ids[0]):  # ragged rows: chain them in C, not in a Python token loop
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64)
    else:
        flat = np.asarray(ids, dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got {flat.min()}..{flat.max()}")
    counts = np.bincount(flat, minlength=vocab_size)
    counts[np.asarray(list(exclude), dtype=np.int64)] = 0  # zeroing after counting = never counting them
    return counts


def count_tokens(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int | None = 128, batch_size: int = 1000
) -> np.ndarray:
    """Token counts of `texts` (each cut to its first max_length tokens; None = whole text), specials excluded."""
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for start in range(0, len(texts), batch_size):  # batches bound the memory of the id lists
        batch = list(texts[start : start + batch_size])
        ids = tokenizer(batch, truncation=max_length is not None, max_length=max_length)["input_ids"]
        counts += count_ids(ids, len(tokenizer))
    counts[tokenizer.all_special_ids] = 0
    return counts


# ---------------------------------------------------------------- measures


def _check(pretrain_counts: np.ndarray, task_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pre, task = np.asarray(pretrain_counts), np.asarray(task_counts)
    if pre.shape != task.shape or pre.ndim != 1:
        raise ValueError(f"count vectors must be 1-D and of equal length, got {pre.shape} and {task.shape}")
    if task.sum() <= 0:
        raise ValueError("the task counts are empty: no (non-special) task tokens to measure overlap on")
    return pre, task


def token_overlap(pretrain_counts: np.ndarray, task_counts: np.ndarray) -> float:
    """Fraction of task token occurrences whose type occurs in the pre-training data (the reports' default)."""
    pre, task = _check(pretrain_counts, task_counts)
    return float(task[pre > 0].sum() / task.sum())


def type_overlap(pretrain_counts: np.ndarray, task_counts: np.ndarray) -> float:
    """Fraction of distinct task token types that occur in the pre-training data."""
    pre, task = _check(pretrain_counts, task_counts)
    return float(((task > 0) & (pre > 0)).sum() / (task > 0).sum())


def weighted_overlap(
    pretrain_counts: np.ndarray, task_counts: np.ndarray, min_count: int = WEIGHTED_MIN_COUNT
) -> float:
    """Token overlap where a type seen c times in pre-training covers min(1, c / min_count) of its occurrences."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    pre, task = _check(pretrain_counts, task_counts)
    coverage = np.minimum(1.0, pre / min_count)
    return float(task @ coverage / task.sum())


OVERLAP_MEASURES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "token": token_overlap,
    "type": type_overlap,
    "weighted": weighted_overlap,
}
DEFAULT_MEASURE = "token"


def overlap_report(
    pretrain_texts: Sequence[str],
    task_texts: Sequence[str],
    tokenizer: PreTrainedTokenizerFast,
    max_length: int | None = 128,
) -> dict[str, float]:
    """Every measure of OVERLAP_MEASURES between two text collections, keyed by measure name.

    pretrain_texts: the articles of the pre-training subset; task_texts: the task texts the overlap is about
    (which split(s) is the caller's choice; the fine-tuning train + test sample is the plain reading).
    """
    pre = count_tokens(tokenizer, pretrain_texts, max_length)
    task = count_tokens(tokenizer, task_texts, max_length)
    return {name: fn(pre, task) for name, fn in OVERLAP_MEASURES.items()}


# ---------------------------------------------------------------- gap vs overlap


@dataclass(frozen=True)
class LineFit:
    """Least-squares line y = slope * x + intercept and Pearson's r with its p-value and CI (95% by default)."""

    slope: float
    intercept: float
    r: float
    r_ci: tuple[float, float] | None  # None when n < 4 (Fisher's z needs n > 3) or r is undefined
    p_value: float
    n: int


def fit_line(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, confidence: float = 0.95) -> LineFit:
    """Fit y on x (scipy.stats.linregress) and correlate them (scipy.stats.pearsonr; r_ci at `confidence`).

    Needs at least 2 points and x not all equal. A constant y gives r = NaN (no correlation defined).
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got {xs.shape} and {ys.shape}")
    if len(xs) < 2:
        raise ValueError(f"a line needs at least 2 points, got {len(xs)}")
    if np.all(xs == xs[0]):
        raise ValueError("x is constant: no line can be fitted")
    from scipy import stats  # here, not at import: the CLI imports this module to build its parser

    line = stats.linregress(xs, ys)
    if np.all(ys == ys[0]):  # pearsonr would warn and return NaN; say so without the warning
        return LineFit(float(line.slope), float(line.intercept), float("nan"), None, float("nan"), len(xs))
    corr = stats.pearsonr(xs, ys)
    r_ci = None
    if len(xs) >= 4:
        ci = corr.confidence_interval(confidence_level=confidence)
        r_ci = (float(ci.low), float(ci.high))
    return LineFit(float(line.slope), float(line.intercept), float(corr.statistic), r_ci, float(corr.pvalue), len(xs))
