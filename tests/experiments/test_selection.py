"""Data selection by overlap: greedy ranking on toy corpora, determinism, the stored fit and a tiny sweep."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from tinylm.analysis.gap_fit import GapFit, fit_gap_on_overlap, load_fit
from tinylm.analysis.overlap import OVERLAP_MEASURES, overlap_report
from tinylm.analysis.selection import SELECTION_MEASURES, count_matrix, greedy_select, objective
from tinylm.config import replace
from tinylm.data import Example, TaskData, load_articles, read_articles
from tinylm.tokenizer import from_vocab_file

REPO = Path(__file__).resolve().parents[2]
STORED = REPO / "docs" / "results" / "cpu-v1" / "results.json"  # the fit the committed selection report used


def matrix(rows: list[list[int]], vocab: int) -> sparse.csr_matrix:
    """Article x vocabulary counts from token lists (the toy pools below)."""
    counts = np.zeros((len(rows), vocab), dtype=np.int32)
    for i, row in enumerate(rows):
        np.add.at(counts[i], row, 1)
    return sparse.csr_matrix(counts)


# ---------------------------------------------------------------- counting and objectives


def test_count_matrix_counts_each_article_and_drops_specials() -> None:
    ids = np.array([[2, 5, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0, 0], [2, 3, 0, 0, 0, 0, 0]])
    m = count_matrix(ids, 8, exclude=[0, 2, 3])
    assert m.toarray().tolist() == [[0, 0, 0, 0, 0, 2, 1, 0], [0, 0, 0, 0, 0, 0, 0, 1], [0] * 8]
    with pytest.raises(ValueError, match="must lie in"):
        count_matrix(np.array([[9]]), 8)


def test_objective_coverage_is_the_overlap_measure() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        task = rng.integers(0, 4, size=30) * (rng.random(30) < 0.6)
        task[0] += 1  # at least one task token
        pre = rng.integers(0, 15, size=30) * (rng.random(30) < 0.5)
        for name in ("token", "type", "weighted"):
            assert objective(name, task).coverage(pre) == pytest.approx(OVERLAP_MEASURES[name](pre, task))
    # mass: a token is covered at its share of the budget; 10 task tokens, budget 20 -> caps 2 x task count.
    task = np.array([0, 4, 1, 5])
    obj = objective("mass", task, budget_tokens=20)
    assert obj.caps.tolist() == [1.0, 8.0, 2.0, 10.0]
    assert obj.coverage(np.array([0, 8, 2, 10])) == pytest.approx(1.0)
    assert obj.coverage(np.array([0, 4, 1, 0])) == pytest.approx((4 * 0.5 + 1 * 0.5) / 10)
    with pytest.raises(ValueError, match="budget_tokens"):
        objective("mass", task)
    with pytest.raises(ValueError, match="unknown selection measure"):
        objective("nope", task)


# ---------------------------------------------------------------- greedy ranking on toy corpora


# Task tokens: a(1) x5, b(2) x3, c(3) x1, d(4) x1; e(5) is not a task token.
TASK = np.array([0, 5, 3, 1, 1, 0])
POOL = [[3, 4], [1], [1, 2], [5, 5, 5], [2, 3, 4]]  # "c d", "a", "a b", "e e e", "b c d"


def test_greedy_token_coverage_known_answer() -> None:
    sel = greedy_select(matrix(POOL, 6), objective("token", TASK), 2, seed=0)
    # "a b" covers 8 of 10 task tokens; then "c d" and "b c d" both add the last 2: either completes the task.
    assert sel.indices[0] == 2
    assert sel.indices[1] in (0, 4)
    assert sel.gains.tolist() == pytest.approx([0.8, 0.2])
    assert sel.coverage == pytest.approx(1.0) and sel.saturated_at is None
    # A third pick adds nothing: the selection has saturated, the rest is a tie broken by the seed.
    full = greedy_select(matrix(POOL, 6), objective("token", TASK), 5, seed=0)
    assert full.saturated_at == 2 and full.gains[2:].tolist() == [0.0, 0.0, 0.0]


def test_greedy_weighted_prefers_repeated_rare_tokens() -> None:
    # Weighted with k = 2: one "c" covers half of c's occurrences, "c c" all of them.
    task = np.array([0, 1, 1])
    pool = [[1], [2, 2], [2]]
    sel = greedy_select(matrix(pool, 3), objective("weighted", task, min_count=2), 2, seed=0)
    assert sel.indices.tolist() == [1, 0]  # "c c" (gain 0.5) before "b" (0.25) and "c" (0 once c is full)
    assert sel.gains.tolist() == pytest.approx([0.5, 0.25])


def test_ties_are_broken_by_the_seed_and_reproducibly() -> None:
    pool = [[1], [1], [1], [1], [1], [1]]  # six identical articles: every order is a tie
    m, obj = matrix(pool, 2), objective("token", np.array([0, 3]))
    orders = {tuple(greedy_select(m, obj, 6, seed=s).indices) for s in range(8)}
    assert len(orders) > 1  # the seed decides
    for s in range(3):
        assert greedy_select(m, obj, 6, seed=s).indices.tolist() == greedy_select(m, obj, 6, seed=s).indices.tolist()
    assert sorted(next(iter(orders))) == list(range(6))


def _plain_greedy(m: sparse.csr_matrix, obj, n: int, seed: int) -> list[int]:
    """Greedy without laziness: every gain recomputed at every step (the definition lazy greedy must match)."""
    dense = m.toarray().astype(float)
    tie = np.random.default_rng(seed).permutation(len(dense))
    chosen, picks = np.zeros(dense.shape[1]), []
    for _ in range(n):
        base = obj.coverage(chosen)
        gains = np.array([obj.coverage(chosen + row) - base for row in dense])
        gains[picks] = -np.inf
        best = max((i for i in range(len(dense)) if i not in picks),
                   key=lambda i: (round(gains[i], 12), -tie[i]))
        picks.append(best)
        chosen += dense[best]
    return picks


@pytest.mark.parametrize("measure", SELECTION_MEASURES)
def test_lazy_greedy_picks_what_plain_greedy_picks(measure: str) -> None:
    rng = np.random.default_rng(1)
    for trial in range(4):
        m = sparse.csr_matrix(rng.integers(0, 3, size=(25, 12)) * (rng.random((25, 12)) < 0.3))
        task = rng.integers(0, 6, size=12) * (rng.random(12) < 0.7)
        task[0] += 1
        obj = objective(measure, task, budget_tokens=40, min_count=3)
        lazy = greedy_select(m, obj, 10, seed=trial)
        assert lazy.indices.tolist() == _plain_greedy(m, obj, 10, seed=trial)
        assert lazy.coverage == pytest.approx(obj.coverage(np.asarray(m[lazy.indices].sum(0)).ravel()))


# ---------------------------------------------------------------- a pool, a task, a written subset


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "stocks", "fell", "rates", "goal", "won", "match", "cell",
         "gene", "the"]
TEXTS = ["the stocks fell", "the match won", "the goal won the match", "the gene cell", "rates the stocks",
         "the the the", "cell gene gene", "stocks rates rates fell"]


@pytest.fixture()
def toy_pool(tmp_path: Path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    root = tmp_path / "data"
    (root / "wikipedia").mkdir(parents=True)
    with gzip.open(root / "wikipedia" / "articles.jsonl.gz", "wt") as f:
        for i, text in enumerate(TEXTS):
            f.write(json.dumps({"id": str(i), "title": f"T{i}", "text": text}) + "\n")
    return from_vocab_file(vocab), root


def test_choose_and_write_a_subset_that_pretraining_reads(toy_pool, tmp_path: Path) -> None:
    from tinylm.experiments.selection import Pool, choose_subset, write_subset

    tokenizer, root = toy_pool
    task = TaskData("toy", ["money", "sport"], train=[Example("stocks fell rates", 0), Example("rates rates", 0)],
                    test=[Example("goal match", 1)])
    pool = Pool.load(tokenizer, 16, root=root)
    assert pool.counts.shape == (len(TEXTS), len(VOCAB)) and pool.counts.sum() == sum(len(t.split()) for t in TEXTS)
    choice = choose_subset(pool, tokenizer, task, 2, measure="weighted", min_count=2, seq_len=16, random_seed=42)
    # Weighted, k = 2, train texts (stocks 1, fell 1, rates 3): "stocks rates rates fell" covers 4 of 5 weighted
    # occurrences (gain 0.8); then "the stocks fell" adds half of stocks and fell (0.2), "rates the stocks" 0.1.
    assert [a.title for a in choice.articles] == ["T7", "T0"]
    # Overlap is measured the experiments' way (train + test), for the selection and for the random subset.
    random_texts = [a.text for a in load_articles(2, seed=42, root=root)]
    task_texts = [e.text for e in (*task.train, *task.test)]
    assert choice.summary["random_overlap"] == pytest.approx(overlap_report(random_texts, task_texts, tokenizer, 16))
    assert choice.summary["overlap"] == pytest.approx(
        overlap_report([a.text for a in choice.articles], task_texts, tokenizer, 16))

    folder = write_subset(tmp_path / "subset", choice, root)
    assert [a.id for a in read_articles(folder / "wikipedia" / "articles.jsonl.gz")] == ["7", "0"]
    assert {a.id for a in load_articles(2, root=folder)} == {"7", "0"}  # what `pretrain --data folder` trains on
    meta = json.loads((folder / "selection.json").read_text())
    assert meta["id"] == choice.id and [p["title"] for p in meta["picks"]] == ["T7", "T0"]
    # Same inputs, same subset: the id (a content hash) is stable.
    again = choose_subset(pool, tokenizer, task, 2, measure="weighted", min_count=2, seq_len=16, random_seed=42)
    assert again.id == choice.id


# ---------------------------------------------------------------- the stored fit and estimate


def test_fit_reproduces_the_stored_cpu_report() -> None:
    """The fit estimate uses is the one docs/results/cpu-v1/report.md prints (r, CI of r, p, slope, points)."""
    report = (STORED.parent / "report.md").read_text()
    for measure in ("token", "type", "weighted"):
        row = re.search(rf"^\| {measure}(?: \(used\))? \| ([-\d.]+) \| ([-\d.]+) to ([-\d.]+) \| ([\d.e+-]+) \| "
                        rf"([+\-\d.]+) \| (\d+) \|$", report, re.M)
        assert row, measure
        fit = load_fit(STORED, measure)
        r, lo, hi, p, slope, n = row.groups()
        assert f"{fit.r:.2f}" == r and f"{fit.r_ci[0]:.2f}" == lo and f"{fit.r_ci[1]:.2f}" == hi
        assert f"{fit.p_value:.2g}" == p and f"{fit.slope:+.2f}" == slope and fit.n == int(n)
    assert GapFit.from_dict(load_fit(STORED).to_dict()) == load_fit(STORED)


def test_prediction_interval_matches_the_matrix_formula() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(99, 100, size=9)
    y = 20 * (x - 100) + rng.normal(0, 3, size=9)  # gap in points
    records = [{"experiment": "overlap", "task": f"t{i}", "articles": 1000, "seed": 42,
                "pretrained_accuracy": 0.5 + yi / 100, "scratch_accuracy": 0.5, "overlap": {"token": xi / 100}}
               for i, (xi, yi) in enumerate(zip(x, y, strict=True))]
    fit = fit_gap_on_overlap(records)
    design = np.column_stack([np.ones(9), x])
    beta, res, *_ = np.linalg.lstsq(design, y, rcond=None)
    s2 = res[0] / 7
    from scipy import stats

    for x0 in (99.5, 100.4):
        v = np.array([1, x0])
        half = stats.t.ppf(0.975, 7) * np.sqrt(s2 * (1 + v @ np.linalg.inv(design.T @ design) @ v))
        pred = fit.predict(x0)
        assert pred.gap == pytest.approx(beta @ v) and pred.high - pred.gap == pytest.approx(half)
        assert pred.extrapolation == (x0 > x.max())


def test_estimate_random_subset_reproduces_a_stored_point(full_data_root) -> None:
    """The experiments' random 2,000-article subset of the full Wikipedia file: estimate measures the stored overlap
    and reads the fit's line."""
    from tinylm.experiments.selection import estimate

    stored = next(r for r in json.loads(STORED.read_text())["records"]
                  if r["experiment"] == "overlap" and r["task"] == "ag_news" and r["articles"] == 2000)
    result = estimate("ag_news", STORED, random_articles=2000, root=full_data_root)
    assert result["overlap"] == pytest.approx(stored["overlap"], abs=1e-12)
    fit = load_fit(STORED)
    x = 100 * stored["overlap"]["token"]
    assert result["prediction"]["gap"] == pytest.approx(fit.slope * x + fit.intercept)
    assert result["prediction"]["low"] < result["prediction"]["gap"] < result["prediction"]["high"]
    with pytest.raises(ValueError, match="exactly one candidate"):
        estimate("ag_news", STORED, root=full_data_root)


# ---------------------------------------------------------------- the sweep, tiny


def test_tiny_selection_sweep_writes_a_report_and_reuses_its_runs(tmp_path, data_root, monkeypatch) -> None:
    from tinylm.experiments import run_cache as runs_module
    from tinylm.experiments.scales import SCALES, Scale
    from tinylm.experiments.selection_sweep import reproduce_selection

    tiny = Scale(name="tiny", sizes=(24,), samples={"ag_news": (6, 4)}, seeds=2,
                 pretrain=replace(SCALES["cpu"].pretrain, epochs=1, seq_len=32),
                 finetune=replace(SCALES["cpu"].finetune, epochs=1, max_length=32))
    pool = tmp_path / "pool.jsonl"
    with pool.open("w") as f:
        for a in load_articles(200, seed=7, root=data_root):
            f.write(json.dumps({"id": a.id, "title": a.title, "text": a.text}) + "\n")
    out = tmp_path / "sel"
    kwargs = dict(sizes=(24,), measures=("weighted",), tasks=("ag_news",), root=data_root, pool_path=pool)
    first = reproduce_selection(tiny, out, STORED, **kwargs)
    assert len(first["records"]) == 2 * 2  # (random + selected) x 2 seeds
    for name in ("results.json", "report.md", "report.html", "selection_gap_vs_overlap.png", "selection_accuracy.png"):
        assert (out / name).is_file(), name
    by_arm = {(r["arm"], r["seed"]): r for r in first["records"]}
    # Both arms of a seed share the scratch twin and differ in the pre-training run.
    assert by_arm[("random", 42)]["runs"]["scratch"] == by_arm[("selected", 42)]["runs"]["scratch"]
    assert by_arm[("random", 42)]["runs"]["pretrain"] != by_arm[("selected", 42)]["runs"]["pretrain"]
    report = (out / "report.md").read_text()
    assert "Predicted vs measured gap" in report and "Selected − random" in report

    def refuse(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(runs_module, "pretrain", refuse)
    monkeypatch.setattr(runs_module, "finetune", refuse)
    again = reproduce_selection(tiny, out, STORED, **kwargs)
    assert [r["pretrained_accuracy"] for r in again["records"]] == [r["pretrained_accuracy"] for r in first["records"]]


def test_cli_select_is_deterministic_and_estimate_reads_its_folder(tmp_path, data_root, capsys) -> None:
    from tinylm.cli import main

    pool = tmp_path / "pool.jsonl"
    with pool.open("w") as f:
        for a in load_articles(60, seed=3, root=data_root):
            f.write(json.dumps({"id": a.id, "title": a.title, "text": a.text}) + "\n")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        args = ["--data", str(data_root), "select", "--task", "ag_news", "--articles", "12", "--pool", str(pool),
                "--seed", "5", "--out", str(out)]
        assert main(args) == 0
    capsys.readouterr()
    files = [(o / "wikipedia" / "articles.jsonl.gz").read_bytes() for o in outs]
    assert files[0] == files[1]  # same seed, same bytes
    meta = json.loads((outs[0] / "selection.json").read_text())
    assert meta["articles"] == 12 and meta["measure"] == "weighted" and len(meta["picks"]) == 12
    assert main(["--data", str(data_root), "estimate", "--task", "ag_news", "--subset", str(outs[0]),
                 "--fit", str(STORED)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["articles"] == 12 and result["overlap"]["token"] == pytest.approx(meta["overlap"]["token"])
    assert main(["--data", str(data_root), "select", "--task", "nope", "--articles", "3", "--pool", str(pool),
                 "--out", str(tmp_path / "c")]) == 2
