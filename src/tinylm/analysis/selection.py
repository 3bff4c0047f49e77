"""Choose pre-training articles by their contribution to token overlap with a task (beyond the paper).

Every overlap measure of tinylm.analysis.overlap is a *coverage* value of the pre-training token counts c:

    coverage(c) = sum_t w_t * min(1, c_t / k_t) / sum_t w_t

with w the task's token weights and k the count at which a token counts as covered:

- token (the paper's reading): w = task occurrences, k = 1
- type: w = 1 for every task type, k = 1
- weighted: w = task occurrences, k = min_count (10 by default, as in tinylm.analysis.overlap)
- mass: w = task occurrences, k_t = the count t would have if the subset's B token budget were spread in
  the task's proportions, k_t = max(1, B * task_t / sum(task)). Each occurrence of a still-needed task token
  then adds the same amount, so greedy coverage fills the subset's token histogram towards the task's.

An article's *contribution* is the rise of coverage when it joins the articles chosen so far (its marginal
gain), and the subset is built greedily: always add the article with the largest gain. coverage is monotone
and submodular (a sum of concave, saturating functions of counts), so greedy is within 1 - 1/e of the best
subset of that size, and "lazy" greedy (re-scoring only the article on top of a heap of stale gains) picks
exactly what plain greedy picks.

Why the choice matters: with a small vocabulary, token and type coverage saturate after about 150 articles
(a random 1k-article subset already covers 99.7-100 % of the CPU tasks' tokens), after which every article
gains 0 and the rest of the subset is a seeded random draw. weighted (the default) saturates later (about
800-1,050 articles on the CPU tasks' train texts) and raises all three overlap measures above a random
subset's, the paper's token measure included, so it is the one that tests "more overlap, larger gap".
mass never saturates before its budget is spent and moves the subset's token distribution towards the
task's (lower task cross-entropy), but it trades rare tokens for frequent ones, so its token and type
overlap can fall *below* a random subset's. Ties (equal gains, including all the zero gains after
saturation) are broken by a random order drawn from `seed`, so a selection is a function of
(pool, task, measure, size, seed).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tinylm.analysis.overlap import WEIGHTED_MIN_COUNT

if TYPE_CHECKING:
    from scipy import sparse

SELECTION_MEASURES: tuple[str, ...] = ("weighted", "mass", "token", "type")
DEFAULT_SELECTION_MEASURE = "weighted"
_DECIMALS = 12  # gains (fractions of the task's weight) are compared at this precision


def count_matrix(ids: np.ndarray, vocab_size: int, exclude: Iterable[int] = ()) -> sparse.csr_matrix:
    """Article x vocabulary token counts (CSR, int32) of a padded 2-D id array; ids in `exclude` are dropped.

    Pass tokenizer.all_special_ids as `exclude`, as the overlap measures do (pad included).
    """
    from scipy import sparse  # here, not at import: the CLI imports this module to build its parser

    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"expected a 2-D (articles x positions) id array, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got {ids.min()}..{ids.max()}")
    keep = ~np.isin(ids, np.asarray(list(exclude), dtype=ids.dtype))
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)[keep]
    cols = ids[keep].astype(np.int64)
    counts = sparse.csr_matrix((np.ones(len(cols), dtype=np.int32), (rows, cols)),
                               shape=(ids.shape[0], vocab_size))
    counts.sum_duplicates()  # one stored entry per (article, token): the count
    return counts


@dataclass(frozen=True)
class Objective:
    """coverage(c) = weights @ min(1, c / caps) / weights.sum(), over the vocabulary."""

    measure: str
    weights: np.ndarray
    caps: np.ndarray

    def coverage(self, counts: np.ndarray) -> float:
        """The measure's value for pre-training token counts `counts` (equals tinylm.analysis.overlap's measure)."""
        return float(self.weights @ np.minimum(1.0, np.asarray(counts) / self.caps) / self.weights.sum())


def objective(measure: str, task_counts: np.ndarray, *, budget_tokens: float | None = None,
              min_count: int = WEIGHTED_MIN_COUNT) -> Objective:
    """The coverage objective of `measure` for a task's token counts (see the module docstring).

    budget_tokens: the subset's expected number of (non-special) tokens, needed by `mass` only.
    """
    task = np.asarray(task_counts, dtype=float)
    if task.ndim != 1 or task.sum() <= 0:
        raise ValueError("task_counts must be a 1-D vector with at least one (non-special) task token")
    ones = np.ones_like(task)
    if measure == "token":
        return Objective(measure, task, ones)
    if measure == "type":
        return Objective(measure, (task > 0).astype(float), ones)
    if measure == "weighted":
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        return Objective(measure, task, ones * min_count)
    if measure == "mass":
        if budget_tokens is None or budget_tokens <= 0:
            raise ValueError("the mass measure needs a positive budget_tokens (subset size x tokens per article)")
        return Objective(measure, task, np.maximum(1.0, budget_tokens * task / task.sum()))
    raise ValueError(f"unknown selection measure {measure!r}; choose from {', '.join(SELECTION_MEASURES)}")


@dataclass(frozen=True)
class Selection:
    """Chosen rows of the pool in pick order, each with its marginal gain (a fraction of the task weight)."""

    indices: np.ndarray  # int64, pick order
    gains: np.ndarray  # float64, non-increasing up to float rounding
    coverage: float  # the objective's value for the whole selection
    saturated_at: int | None  # picks made before every remaining gain was 0 (None: never saturated)
    evaluations: int  # exact gain computations (a cost measure for lazy greedy)


def greedy_select(counts: sparse.csr_matrix, obj: Objective, n: int, seed: int = 42) -> Selection:
    """Greedily pick `n` rows of `counts` maximising obj's coverage; ties go to a seeded random order.

    Lazy greedy: a heap holds each row's last known gain, an upper bound of its current gain by
    submodularity. The top row is re-scored; if it still beats the next bound it is picked, else pushed back.
    """
    from scipy import sparse

    counts = sparse.csr_matrix(counts)
    n_rows, vocab = counts.shape
    if vocab != len(obj.weights):
        raise ValueError(f"the count matrix has {vocab} columns but the objective {len(obj.weights)} tokens")
    if not 0 <= n <= n_rows:
        raise ValueError(f"cannot select {n} articles from a pool of {n_rows}")
    scale = 1.0 / obj.weights.sum()
    w, inv_cap = obj.weights * scale, 1.0 / obj.caps
    indptr, indices, data = counts.indptr, counts.indices, counts.data.astype(float)
    # First gains of every row at once: nothing chosen yet, so the gain is w @ min(1, row / cap).
    first = counts.astype(float).multiply(inv_cap[None, :]).tocsr()
    first.data = np.minimum(1.0, first.data)
    # Gains are rounded to 1e-12 so that mathematically equal gains tie (and go to the seed) whatever the float
    # summation order; rounding is monotone, so stale gains stay upper bounds.
    gains0 = np.round(np.asarray(first @ w).ravel(), _DECIMALS)
    tie = np.random.default_rng(seed).permutation(n_rows)  # tie-break rank of each row
    heap = [(-g, int(tie[i]), i) for i, g in enumerate(gains0.tolist())]
    heapq.heapify(heap)
    chosen = np.zeros(vocab)  # running token counts of the selection
    picks: list[int] = []
    picked_gains: list[float] = []
    evaluations, saturated_at = 0, None
    while len(picks) < n:
        _, rank, row = heapq.heappop(heap)
        lo, hi = indptr[row], indptr[row + 1]
        cols = indices[lo:hi]
        before = np.minimum(1.0, chosen[cols] * inv_cap[cols])
        after = np.minimum(1.0, (chosen[cols] + data[lo:hi]) * inv_cap[cols])
        gain = round(float(w[cols] @ (after - before)), _DECIMALS)
        evaluations += 1
        if heap and (-gain, rank) > heap[0][:2]:  # a stale bound may still beat it: re-queue with the true gain
            heapq.heappush(heap, (-gain, rank, row))
            continue
        if gain <= 0 and saturated_at is None:
            saturated_at = len(picks)
        picks.append(row)
        picked_gains.append(gain)
        chosen[cols] += data[lo:hi]
    coverage = float(w @ np.minimum(1.0, chosen * inv_cap))
    return Selection(np.asarray(picks, dtype=np.int64), np.asarray(picked_gains), coverage, saturated_at,
                     evaluations)


def rank_by_task_likeness(counts: sparse.csr_matrix, task_counts: np.ndarray, n: int, *, lowest: bool = False,
                          candidates: np.ndarray | None = None) -> Selection:
    """The n rows whose token distribution is most (or, with lowest=True, least) like the task's.

    A row's score is the intersection of its token distribution q with the task's p, sum_t min(p_t, q_t)
    (1 minus their total-variation distance): the mass overlap one article has on its own. One static ranking
    (no greedy): it pushes a fixed-size subset's overlap with the task up or down, for the experiment that
    varies overlap at a fixed pre-training size. `candidates` limits the rows considered.
    """
    from scipy import sparse

    counts = sparse.csr_matrix(counts, dtype=float)
    task = np.asarray(task_counts, dtype=float)
    p = task / task.sum()
    rows = np.arange(counts.shape[0]) if candidates is None else np.asarray(candidates)
    if not 0 <= n <= len(rows):
        raise ValueError(f"cannot select {n} articles from {len(rows)} candidates")
    sub = counts[rows].tocsr()
    totals = np.maximum(1.0, np.asarray(sub.sum(axis=1)).ravel())
    q = sparse.diags(1.0 / totals) @ sub  # each row's token distribution
    q.data = np.minimum(q.data, p[q.indices])
    scores = np.round(np.asarray(q.sum(axis=1)).ravel(), _DECIMALS)
    order = np.argsort(scores if lowest else -scores, kind="stable")[:n]
    return Selection(rows[order].astype(np.int64), scores[order], float("nan"), None, 0)
