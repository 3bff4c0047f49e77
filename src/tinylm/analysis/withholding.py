"""Which task token types to keep out of pre-training so that the token overlap falls to a chosen level.

The overlap-control experiment (tinylm.experiments.overlap_control) sets the token overlap of a fixed
pre-training subset with a task by design. For a target level L, the token overlap (analysis.overlap's
`token` measure: the share of the task's token occurrences whose type occurs in the pre-training data) must
be at most L, so types carrying at least 1 - L of the task's token mass must be absent from pre-training.

The rule, greedy over one ranked list of candidate types:

- candidates: task types that occur in the subset, less the `protect` most frequent types of the subset (100
  by default: function words and punctuation). Those stay, so the openings remain sentences with their syntax
  and MLM keeps its context; types the subset lacks already count as absent without being withheld;
- ranking: by task frequency per subset frequency (task count / subset count), highest first, ties by task
  count, then by id. Taking types in this order withholds a given task mass while replacing the fewest subset
  tokens (the greedy answer to a fractional knapsack), so each level changes as little of the Wikipedia text as
  its target allows. The share of subset tokens replaced is reported per level: it is the intervention's side
  effect, and it grows as the level falls;
- a level withholds the shortest prefix of the list whose mass reaches 1 - L. The levels' sets are therefore
  nested (a lower level withholds everything a higher one does, and more). Level 1 withholds nothing.

Since the choice uses the very counts the overlap measure reads (the subset's tokens, the task's train + test
texts, specials excluded), the measured token overlap after withholding is 1 - the absent mass: at most L, and
below L by less than one type's mass (unless the candidates run out: `reached` is then False).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROTECT_TOP = 100  # the subset's most frequent types, never withheld


@dataclass(frozen=True)
class Withheld:
    """The types one level withholds, and what that does to either side."""

    level: float  # the target: token overlap at most this
    token_ids: tuple[int, ...]  # withheld, in rank order
    task_mass: float  # share of the task's token occurrences whose type is withheld
    token_overlap: float  # the token overlap left: 1 - (withheld + already absent) task mass
    pretrain_mass: float  # share of the subset's (non-special) tokens replaced
    reached: bool  # whether token_overlap <= level


def rank_candidates(task_counts: np.ndarray, pretrain_counts: np.ndarray, protect: int = PROTECT_TOP) -> np.ndarray:
    """Candidate type ids, in the order the rule withholds them (see the module docstring)."""
    task, pre = np.asarray(task_counts, dtype=np.int64), np.asarray(pretrain_counts, dtype=np.int64)
    if task.shape != pre.shape or task.ndim != 1:
        raise ValueError(f"count vectors must be 1-D and of equal length, got {task.shape} and {pre.shape}")
    protected = np.argsort(-pre, kind="stable")[:protect] if protect > 0 else np.empty(0, dtype=np.int64)
    ok = (task > 0) & (pre > 0)
    ok[protected] = False
    ids = np.flatnonzero(ok)
    ratio = task[ids] / pre[ids]
    return ids[np.lexsort((ids, -task[ids], -ratio))]


def withheld_levels(task_counts: np.ndarray, pretrain_counts: np.ndarray, levels: Sequence[float],
                    protect: int = PROTECT_TOP) -> dict[float, Withheld]:
    """The Withheld choice of every level (nested prefixes of one ranked list)."""
    task, pre = np.asarray(task_counts, dtype=np.int64), np.asarray(pretrain_counts, dtype=np.int64)
    total_task, total_pre = task.sum(), pre.sum()
    if total_task <= 0 or total_pre <= 0:
        raise ValueError("empty counts: no task or pre-training tokens to withhold from")
    order = rank_candidates(task, pre, protect)
    absent = task[pre == 0].sum() / total_task  # types the subset lacks: absent already
    cum_task = np.concatenate([[0.0], np.cumsum(task[order]) / total_task])
    cum_pre = np.concatenate([[0.0], np.cumsum(pre[order]) / total_pre])
    result = {}
    for level in levels:
        if not 0 < level <= 1:
            raise ValueError(f"a level is a token overlap in (0, 1], got {level}")
        need = (1 - level) - absent
        # the shortest prefix whose mass reaches `need` (1e-12: a level met exactly counts as met)
        k = 0 if need <= 1e-12 else int(min(np.searchsorted(cum_task, need - 1e-12), len(order)))
        overlap = float(1 - absent - cum_task[k])
        result[level] = Withheld(level, tuple(int(i) for i in order[:k]), float(cum_task[k]), overlap,
                                 float(cum_pre[k]), overlap <= level + 1e-12)
    return result
