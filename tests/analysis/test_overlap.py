"""tinylm.analysis.overlap on toy corpora whose overlap fractions are worked out by hand."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tinylm.analysis.overlap import (
    OVERLAP_MEASURES,
    count_ids,
    count_tokens,
    fit_line,
    overlap_report,
    token_overlap,
    type_overlap,
    weighted_overlap,
)
from tinylm.tokenizer import from_vocab_file

# Toy vocabulary: id = position. Specials 0-4, then words 5-13.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "ran", "a", "##s"]
ID = {token: i for i, token in enumerate(VOCAB)}
SPECIALS = [0, 1, 2, 3, 4]

PRETRAIN = ["The cat sat on the mat"]  # the:2 cat:1 sat:1 on:1 mat:1
TASK = ["the dog sat", "a dog ran on the mat"]  # the:2 dog:2 sat:1 a:1 ran:1 on:1 mat:1 -> 9 tokens, 7 types


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    path: Path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return from_vocab_file(path)


def counts(words: dict[str, int]) -> np.ndarray:
    vec = np.zeros(len(VOCAB), dtype=np.int64)
    for word, n in words.items():
        vec[ID[word]] = n
    return vec


PRE = counts({"the": 2, "cat": 1, "sat": 1, "on": 1, "mat": 1})
TASK_COUNTS = counts({"the": 2, "dog": 2, "sat": 1, "a": 1, "ran": 1, "on": 1, "mat": 1})


def test_count_tokens_matches_hand_counts_and_drops_specials(tokenizer) -> None:
    # [CLS] and [SEP] wrap every text but are not counted.
    assert count_tokens(tokenizer, PRETRAIN).tolist() == PRE.tolist()
    assert count_tokens(tokenizer, TASK).tolist() == TASK_COUNTS.tolist()
    # "zebra" is [UNK] (not counted); "cats" is cat + ##s.
    assert count_tokens(tokenizer, ["zebra cats"]).tolist() == counts({"cat": 1, "##s": 1}).tolist()


def test_count_tokens_truncates_like_pretraining(tokenizer) -> None:
    # max_length 4 = [CLS] the cat [SEP]: only the first two words count.
    assert count_tokens(tokenizer, PRETRAIN, max_length=4).tolist() == counts({"the": 1, "cat": 1}).tolist()
    # Batching does not change the counts.
    assert count_tokens(tokenizer, TASK * 3, batch_size=2).tolist() == (3 * TASK_COUNTS).tolist()


def test_count_ids_equals_a_naive_counter() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 50, size=int(n)).tolist() for n in rng.integers(0, 20, size=30)]  # ragged
    naive = Counter(t for row in rows for t in row if t not in (0, 3))
    got = count_ids(rows, 50, exclude=[0, 3])
    assert got.tolist() == [naive.get(i, 0) for i in range(50)]
    # A padded 2-D array (pad id 0 excluded) and a flat 1-D list give the same counts.
    padded = np.zeros((len(rows), 20), dtype=np.int32)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    assert count_ids(padded, 50, exclude=[0, 3]).tolist() == got.tolist()
    assert count_ids([t for row in rows for t in row], 50, exclude=[0, 3]).tolist() == got.tolist()


def test_count_ids_rejects_out_of_range_ids() -> None:
    with pytest.raises(ValueError, match="token ids"):
        count_ids([[1, 2, 50]], 50)


def test_measures_on_hand_checked_toy_counts() -> None:
    # token: covered task occurrences the 2 + sat 1 + on 1 + mat 1 = 5 of 9.
    assert token_overlap(PRE, TASK_COUNTS) == pytest.approx(5 / 9)
    # type: covered types {the, sat, on, mat} = 4 of {the, dog, sat, a, ran, on, mat} = 7.
    assert type_overlap(PRE, TASK_COUNTS) == pytest.approx(4 / 7)
    # weighted, min_count 2: the 2 * min(1, 2/2) + (sat + on + mat) * 1 * min(1, 1/2) = 2 + 1.5 = 3.5 of 9.
    assert weighted_overlap(PRE, TASK_COUNTS, min_count=2) == pytest.approx(3.5 / 9)
    # min_count 1 is the token measure; the default 10: (2 * 0.2 + 3 * 0.1) / 9 = 0.7 / 9.
    assert weighted_overlap(PRE, TASK_COUNTS, min_count=1) == pytest.approx(5 / 9)
    assert weighted_overlap(PRE, TASK_COUNTS) == pytest.approx(0.7 / 9)
    # Identical corpora overlap fully, disjoint ones not at all.
    assert token_overlap(TASK_COUNTS, TASK_COUNTS) == type_overlap(TASK_COUNTS, TASK_COUNTS) == 1.0
    disjoint = counts({"cat": 5})
    assert token_overlap(disjoint, TASK_COUNTS) == type_overlap(disjoint, TASK_COUNTS) == 0.0


def test_overlap_report_on_texts(tokenizer) -> None:
    report = overlap_report(PRETRAIN, TASK, tokenizer)
    assert set(report) == set(OVERLAP_MEASURES) == {"token", "type", "weighted"}
    assert report["token"] == pytest.approx(5 / 9)
    assert report["type"] == pytest.approx(4 / 7)
    assert report["weighted"] == pytest.approx(0.7 / 9)


def test_special_tokens_are_no_shared_tokens(tokenizer) -> None:
    # Both sides hold [CLS], [SEP] and an [UNK] (zebra, giraffe) but share no word: the overlap is 0.
    # Counting specials would give 3 of 4 task tokens (CLS, SEP, UNK shared; dog not).
    report = overlap_report(["giraffe cat"], ["zebra dog"], tokenizer)
    assert report == {"token": 0.0, "type": 0.0, "weighted": 0.0}


def test_measures_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        token_overlap(PRE, np.zeros_like(PRE))
    with pytest.raises(ValueError, match="equal length"):
        type_overlap(PRE, TASK_COUNTS[:-1])
    with pytest.raises(ValueError, match="min_count"):
        weighted_overlap(PRE, TASK_COUNTS, min_count=0)


def test_fit_line_on_exact_linear_data() -> None:
    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    fit = fit_line(x, [3 * v - 2 for v in x])  # y = 3x - 2 exactly
    assert fit.slope == pytest.approx(3.0)
    assert fit.intercept == pytest.approx(-2.0)
    assert fit.r == pytest.approx(1.0)
    assert fit.n == 5
    assert fit.p_value == pytest.approx(0.0, abs=1e-9)
    assert fit.r_ci is not None and fit.r_ci[0] == pytest.approx(1.0)
    falling = fit_line(x, [-v for v in x])
    assert falling.slope == pytest.approx(-1.0) and falling.r == pytest.approx(-1.0)


def test_fit_line_small_and_degenerate_inputs() -> None:
    assert fit_line([1, 2, 3], [1, 3, 2]).r_ci is None  # n < 4: no CI for r
    noisy = fit_line([1, 2, 3, 4, 5, 6], [1, 3, 2, 5, 4, 6])
    assert noisy.r_ci is not None and noisy.r_ci[0] < noisy.r < noisy.r_ci[1]
    flat = fit_line([1, 2, 3, 4], [5, 5, 5, 5])  # constant y: slope 0, r undefined
    assert flat.slope == 0.0 and math.isnan(flat.r) and flat.r_ci is None
    with pytest.raises(ValueError, match="at least 2"):
        fit_line([1.0], [2.0])
    with pytest.raises(ValueError, match="constant"):
        fit_line([1, 1, 1], [1, 2, 3])
