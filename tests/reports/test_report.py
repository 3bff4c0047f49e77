"""tinylm.analysis.stats and tinylm.reports.experiments: multi-seed intervals, and reports rendered from a stored
results.json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from tinylm.analysis.records import load_records
from tinylm.analysis.stats import mean_ci, paired_gap
from tinylm.reports.experiments import render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T975_2 = 4.302652729749462  # t quantile 0.975 with 2 degrees of freedom (3 seeds)


def run(experiment: str, task: str, articles: int, seed: int, pre: float, scratch: float, **extra: Any) -> dict:
    return {"experiment": experiment, "task": task, "articles": articles, "seed": seed,
            "pretrained_accuracy": pre, "scratch_accuracy": scratch, **extra}


# ag_news: gaps .40 .41 .42 -> mean .41, sd .01, half-width 4.3027 * .01 / sqrt(3) = .0248 -> "+41.0 ± 2.5".
#          pre-trained .80 .82 .84 -> sd .02 -> "82.0 ± 5.0"; scratch .40 .41 .42 -> "41.0 ± 2.5".
POSITIVE = [run("gap", "ag_news", 2000, s, pre, sc, seconds=100.0)
            for s, (pre, sc) in enumerate([(0.80, 0.40), (0.82, 0.41), (0.84, 0.42)])]
# dbpedia: gaps -.01 .02 -.02 -> mean -.0033, sd .0208, half-width .0517 -> "-0.3 ± 5.2" (CI includes 0).
#          pre-trained .50 .52 .48 -> "50.0 ± 5.0"; scratch .51 .50 .50 -> mean .5033, sd .00577 -> "50.3 ± 1.4".
NULL = [run("gap", "dbpedia", 2000, s, pre, sc)
        for s, (pre, sc) in enumerate([(0.50, 0.51), (0.52, 0.50), (0.48, 0.50)])]


def sizes(task: str, gaps: list[float]) -> list[dict]:
    """Two seeds per size at 1,000, 2,000, 4,000 articles with the given mean gaps (seed spread ±0.01)."""
    return [run("size", task, a, s, 0.5 + g + d, 0.5) for a, g in zip((1000, 2000, 4000), gaps, strict=True)
            for s, d in enumerate((-0.01, 0.01))]


def overlaps(points: list[tuple[str, int, float, float]]) -> list[dict]:
    """Two seeds per (task, articles, token overlap, mean gap) point."""
    return [run("overlap", t, a, s, 0.5 + g + d, 0.5, overlap={"token": o, "type": o / 2, "weighted": o / 3})
            for t, a, o, g in points for s, d in enumerate((-0.01, 0.01))]


def store(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"records": records}))
    return path


def bullets(md: str, prefix: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith(f"- {prefix}")]


# ---------------------------------------------------------------- stats


def test_mean_ci_is_the_t_interval() -> None:
    m = mean_ci([0.80, 0.82, 0.84])
    assert m.mean == pytest.approx(0.82) and m.n == 3
    assert m.half_width == pytest.approx(T975_2 * 0.02 / math.sqrt(3))
    low, high = stats.t.interval(0.95, 2, loc=0.82, scale=0.02 / math.sqrt(3))
    assert (m.low, m.high) == (pytest.approx(low), pytest.approx(high))
    assert mean_ci([1.0, 2.0, 3.0, 4.0], confidence=0.9).half_width == pytest.approx(
        stats.t.ppf(0.95, 3) * stats.sem([1.0, 2.0, 3.0, 4.0]))


def test_mean_ci_single_and_bad_values() -> None:
    one = mean_ci([0.7])
    assert one.mean == 0.7 and one.n == 1 and math.isnan(one.half_width)
    assert not one.has_ci and not one.excludes(0.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([0.5, float("nan")])


def test_paired_gap() -> None:
    gap = paired_gap([0.80, 0.82, 0.84], [0.40, 0.41, 0.42])
    assert gap.mean == pytest.approx(0.41)
    assert gap.half_width == pytest.approx(T975_2 * 0.01 / math.sqrt(3))
    assert gap.excludes(0.0)
    assert not paired_gap([0.50, 0.52, 0.48], [0.51, 0.50, 0.50]).excludes(0.0)
    with pytest.raises(ValueError, match="one scratch run"):
        paired_gap([0.5, 0.6], [0.5])


# ---------------------------------------------------------------- report


def test_render_writes_valid_files(tmp_path: Path) -> None:
    records = POSITIVE + NULL + sizes("ag_news", [0.10, 0.20, 0.30]) + overlaps(
        [("ag_news", 1000, 0.80, 0.10), ("ag_news", 2000, 0.90, 0.20), ("dbpedia", 1000, 0.85, 0.15),
         ("dbpedia", 2000, 0.95, 0.25)])
    out = tmp_path / "report"
    written = render_report(store(tmp_path, records), out)
    names = sorted(p.name for p in written)
    assert names == ["gap_vs_overlap.png", "gap_vs_size.png", "report.html", "report.md"]
    for path in written:
        assert path.is_file() and path.parent == out
    for name in ("gap_vs_size.png", "gap_vs_overlap.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    md = (out / "report.md").read_text()
    assert "| ag_news | 2,000 | 82.0 ± 5.0 (3 seeds) | 41.0 ± 2.5 (3 seeds) | +41.0 ± 2.5 (3 seeds) |" in md
    assert "| dbpedia | 2,000 | 50.0 ± 5.0 (3 seeds) | 50.3 ± 1.4 (3 seeds) | -0.3 ± 5.2 (3 seeds) |" in md
    assert "![gap vs pre-training size](gap_vs_size.png)" in md

    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page)
    assert len(refs) == 2 and all(ref.startswith("data:image/png;base64,") for ref in refs)
    assert "<link" not in page and "<script" not in page and "://" not in page  # base64 has no colon
    assert "<td class=\"num\">+41.0 ± 2.5 (3 seeds)</td>" in page


def test_gap_verdicts_follow_the_numbers(tmp_path: Path) -> None:
    md = (render_report(POSITIVE, tmp_path / "pos")[0]).read_text()
    assert "does not show" not in md
    assert bullets(md, "ag_news")[0].startswith("- ag_news: pre-training helps: the gap is +41.0 ± 2.5 accuracy points")

    md = (render_report(POSITIVE + NULL, tmp_path / "mixed")[0]).read_text()
    [line] = bullets(md, "dbpedia")
    assert "the effect does not show" in line and "CI includes 0" in line
    assert "Claim 1, pre-trained beats from scratch: shows for ag_news; does not show for dbpedia." in md

    # A gap of exactly 0 in every seed does not show either.
    zero = [run("gap", "fewrel", 2000, s, 0.6, 0.6) for s in range(3)]
    md = (render_report(zero, tmp_path / "zero")[0]).read_text()
    assert "does not show" in bullets(md, "fewrel")[0]


def test_single_seed_is_not_called_an_effect(tmp_path: Path) -> None:
    md = render_report(POSITIVE[:1], tmp_path)[0].read_text()
    assert "| ag_news | 2,000 | 80.0 (1 seed) | 40.0 (1 seed) | +40.0 (1 seed) |" in md
    assert "not established" in bullets(md, "ag_news")[0]


def test_size_trend_verdicts(tmp_path: Path) -> None:
    md = render_report(sizes("ag_news", [0.10, 0.20, 0.30]) + sizes("dbpedia", [0.30, 0.20, 0.10]), tmp_path)[0]
    md = md.read_text()
    [rising] = bullets(md, "ag_news")
    assert "rises at every step" in rising and "The gap grows with pre-training size." in rising
    assert "does not show" not in rising
    [falling] = bullets(md, "dbpedia")
    assert "The effect does not show: the gap does not grow with pre-training size here." in falling


def test_overlap_verdicts(tmp_path: Path) -> None:
    # Mean gap = overlap - 0.7 exactly over four points: r = 1, the effect shows.
    rising = overlaps([("ag_news", 1000, 0.80, 0.10), ("ag_news", 2000, 0.90, 0.20),
                       ("dbpedia", 1000, 0.85, 0.15), ("dbpedia", 2000, 0.95, 0.25)])
    md = render_report(rising, tmp_path / "up")[0].read_text()
    assert "- The gap grows with token overlap (r = 1.00" in md
    assert "does not show" not in md
    assert "| token (used) | 1.00 |" in md

    falling = overlaps([("ag_news", 1000, 0.80, 0.25), ("ag_news", 2000, 0.90, 0.20),
                        ("dbpedia", 1000, 0.85, 0.15), ("dbpedia", 2000, 0.95, 0.10)])
    md = render_report(falling, tmp_path / "down")[0].read_text()
    assert "- The effect does not show: the gap does not grow with token overlap (r = -" in md
    assert "Claim 3, the gap grows with token overlap: does not show." in md


def test_paper_column(tmp_path: Path) -> None:
    paper = {"ag_news": "> 40 (approx.)", "dbpedia": 0.25}
    md = render_report(POSITIVE + NULL, tmp_path, paper_numbers=paper)[0].read_text()
    assert "| Paper |" in md
    assert md.count("> 40 (approx.)") == 1 and "| gap +25.0 |" in md
    assert "| Paper |" not in render_report(POSITIVE, tmp_path / "none")[0].read_text()


def test_load_records_checks_its_input(tmp_path: Path) -> None:
    assert load_records(store(tmp_path, POSITIVE)) == POSITIVE
    (tmp_path / "list.json").write_text(json.dumps(POSITIVE))
    assert load_records(tmp_path / "list.json") == POSITIVE
    with pytest.raises(ValueError, match="duplicate"):
        load_records(POSITIVE + POSITIVE[:1])
    with pytest.raises(ValueError, match=r"record 0: pretrained_accuracy must be a fraction"):
        load_records([run("gap", "ag_news", 2000, 0, 82.0, 41.0)])  # percent, not a fraction
    with pytest.raises(ValueError, match="experiment must be one of"):
        load_records([run("committee", "ag_news", 2000, 0, 0.8, 0.4)])
    with pytest.raises(ValueError, match="missing field"):
        load_records([{"experiment": "gap", "task": "ag_news"}])
    with pytest.raises(ValueError, match="no run records"):
        load_records([])


def test_compute_counts_each_run_once_even_when_experiments_share_it() -> None:
    from tinylm.reports.experiments import compute_text

    shared = {"runs": {"pretrain": "pretrain-a", "finetune": "finetune-b", "scratch": "finetune-c"},
              "timings": {"pretrain": 3600.0, "finetune": 360.0, "scratch": 360.0}}
    gap = {"experiment": "gap", "seconds": 4320.0, **shared}
    size = {"experiment": "size", "seconds": 4320.0, **shared}
    assert compute_text([gap, size]) == "compute 1.20 h over 3 timed runs"
    assert compute_text([{"seconds": 1800.0}]) == "compute 0.50 h over 1 timed runs"
    assert compute_text([{}]) == "no run times recorded"


def test_size_trend_is_tested_over_pretraining_seeds(tmp_path: Path) -> None:
    """Claim 2 is one slope per pre-training seed, tested over the seeds: five fine-tuning seeds of each model
    (each with its own scratch twin) are averaged first, not counted as 15 independent runs per size."""
    slopes = {42: 0.10, 43: 0.12, 44: -0.02}  # gap change from the first to the last size, per pre-training seed
    records = [
        {**run("size", "ag_news", a, seed, 0.6 + i * slope / 2 + 0.002 * ft, 0.5), "finetune_seed": seed + 1000 * ft}
        for seed, slope in slopes.items() for i, a in enumerate((1000, 2000, 4000)) for ft in range(5)]
    md = render_report(records, tmp_path)[0].read_text()
    [trend] = bullets(md, "ag_news")
    assert "over 3 pre-training seeds" in trend and "not statistically clear" in trend
    assert "| Fine-tuning seed |" in md  # the runs table names every fine-tuning run
    assert "each pre-trained model fine-tuned with 5 seeds" in md


def test_gap_interval_is_over_pretraining_seeds_of_per_seed_means() -> None:
    from tinylm.analysis.records import summarise
    from tinylm.analysis.stats import mean_ci

    gaps = {42: [0.10, 0.12, 0.14], 43: [0.05, 0.07, 0.09], 44: [0.20, 0.20, 0.20]}  # per fine-tuning seed
    records = [{**run("gap", "ag_news", 2000, seed, 0.5 + g, 0.5), "finetune_seed": seed + 1000 * j}
               for seed, gs in gaps.items() for j, g in enumerate(gs)]
    [cell] = summarise(records)
    expected = mean_ci([0.12, 0.07, 0.20])
    assert cell.gap.n == 3 and cell.finetune_seeds == 3 and cell.seeds == (42, 43, 44)
    assert abs(cell.gap.mean - expected.mean) < 1e-12 and abs(cell.gap.half_width - expected.half_width) < 1e-12
    assert abs(cell.pretraining_sd - np.std([0.12, 0.07, 0.20], ddof=1)) < 1e-12
    assert abs(cell.finetuning_sd - np.sqrt((0.02**2 * 2 + 0.02**2 * 2 + 0) / 6)) < 1e-12


def test_overlap_that_barely_varies_is_not_claim_3(tmp_path: Path) -> None:
    """Nested subsets with a small vocabulary: overlap 99.8-100 % rising with size. A perfect correlation over
    0.2 points of overlap is the size effect, so claim 3 is not established by it."""
    nested = overlaps([("ag_news", 1000, 0.998, 0.10), ("ag_news", 2000, 0.999, 0.20),
                       ("dbpedia", 1000, 0.9985, 0.15), ("dbpedia", 2000, 0.9995, 0.25)])
    md = render_report(nested, tmp_path)[0].read_text()
    assert "Claim 3, the gap grows with token overlap: not established." in md
    assert "this fit measures the size effect" in md


def test_arms_with_several_seeds_fit_one_slope_per_seed_and_judge_by_the_interval(tmp_path: Path) -> None:
    from tinylm.reports.arms import render_arms_report

    # Seed s's arms: mass overlap 10 / 20 / 30 %, gap = slope_s * overlap + 5 points, one shared scratch twin.
    slopes = {0: 0.9, 1: 1.0, 2: 1.1}  # mean 1.0, sd 0.1, half-width 4.3027 * 0.1 / sqrt(3) = 0.248
    records = [{"task": "ag_news", "arm": arm, "seed": seed, "articles": 100,
                "overlap": {"token": 0.999, "type": 0.9, "weighted": 0.8, "mass": m / 100},
                "tokens_per_article": 120.0, "scratch_accuracy": 0.5,
                "pretrained_accuracy": 0.5 + (slope * m + 5) / 100}
               for seed, slope in slopes.items()
               for arm, m in zip(("low", "random", "high"), (10, 20, 30), strict=True)]
    render_arms_report({"scale": "tiny", "articles": 100, "seeds": 3, "records": records}, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "+0.90, +1.00, +1.10" in text and "+1.00 [+0.75, +1.25]" in text
    assert "ag_news: the gap grows with mass overlap (the interval lies above 0)" in text
    # A seed whose slope has the other sign widens the interval past 0: a null result, stated as such.
    flipped = [dict(r, pretrained_accuracy=0.5 + (-3 * m + 5) / 100) if r["seed"] == 2 else r
               for r, m in zip(records, [10, 20, 30] * 3, strict=True)]
    render_arms_report({"scale": "tiny", "articles": 100, "seeds": 3, "records": flipped}, tmp_path)
    assert "ag_news: null result: the interval includes 0" in (tmp_path / "report.md").read_text()
