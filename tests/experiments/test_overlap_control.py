"""`tinylm reproduce overlap-control` at a tiny scale: token overlap falls with the level while the subset's
sequences, tokens and steps stay the same, and the sweep writes its records and report."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tinylm.analysis.withholding import withheld_levels
from tinylm.cli import main
from tinylm.config import replace
from tinylm.experiments.overlap_control import OverlapControlScale, prepare_variants
from tinylm.experiments.pairs import load_task_samples
from tinylm.experiments.scales import SCALES, Scale

BASE = Scale(
    name="tiny",
    sizes=(64,),
    pretrain=replace(SCALES["cpu"].pretrain, model="demo", epochs=1, seq_len=64),
    finetune=replace(SCALES["cpu"].finetune, model="demo", epochs=1, max_length=64),
    samples={"ag_news": (8, 6), "dbpedia": (4, 3)},
    seeds=1,
    finetune_seeds=2,
)
# At 64 openings the sample's natural token overlap with AG News is about 75 %.
TINY = OverlapControlScale(name="tiny", base=BASE, articles=64, levels=(1.0, 0.6, 0.4), seeds=2, protect=20)


def test_the_rule_withholds_nested_sets_down_to_each_level() -> None:
    task = np.array([0, 50, 30, 10, 5, 5, 0])
    pre = np.array([9, 100, 1, 20, 0, 4, 3])  # type 4 is absent from pre-training already
    levels = withheld_levels(task, pre, (1.0, 0.9, 0.6, 0.2), protect=1)  # type 1, the most frequent, is kept
    assert levels[1.0].token_ids == () and levels[1.0].token_overlap == pytest.approx(0.95)
    assert levels[0.9].token_ids == (2,)  # task 30 per pre 1: the highest ratio
    assert levels[0.9].token_overlap == pytest.approx(0.65) and levels[0.9].pretrain_mass == pytest.approx(1 / 137)
    assert levels[0.6].token_ids == (2, 5) and levels[0.6].token_overlap == pytest.approx(0.6)  # 5/4 before 10/20
    assert levels[0.2].token_ids == (2, 5, 3)  # nested prefixes of one list
    assert all(c.reached for level, c in levels.items() if level > 0.2)
    assert not levels[0.2].reached and levels[0.2].token_overlap == pytest.approx(0.5)  # only type 1 is left


def test_token_overlap_falls_with_the_level_and_nothing_else_changes(tmp_path, data_root) -> None:
    task_data = load_task_samples(BASE, ("ag_news",), data_root)
    scale = replace(TINY, levels=(1.0, 0.7, 0.55, 0.4))
    variants = prepare_variants(scale, task_data, tmp_path / "runs", data_root)
    rows = [variants[("ag_news", level)] for level in scale.levels]
    overlaps = [v["token_overlap"] for v in rows]
    assert all(a > b for a, b in itertools.pairwise(overlaps))
    assert all(v["token_overlap"] <= v["level"] + 1e-9 and v["reached"] for v in rows)
    assert overlaps[0] - overlaps[-1] > 0.25
    assert len({(v["sequences"], v["tokens"]) for v in rows}) == 1 and all(v["rest_unchanged"] for v in rows)
    assert [v["withheld_types"] for v in rows] == sorted(v["withheld_types"] for v in rows)
    assert rows[0]["file"] is None and rows[-1]["replaced_positions"] > 0
    stored = json.loads((tmp_path / "runs" / "withhold" / rows[-1]["file"]).read_text())
    assert len(stored["token_ids"]) == rows[-1]["withheld_types"] and stored["replacement"] == "[UNK]"


def test_tiny_overlap_control_writes_records_and_report(tmp_path, data_root, monkeypatch) -> None:
    import tinylm.experiments.overlap_control as recipe

    monkeypatch.setitem(recipe.OVERLAP_CONTROL_SCALES, "cpu", TINY)
    out = tmp_path / "oc"
    assert main(["--data", str(data_root), "reproduce", "overlap-control", "--scale", "cpu", "--tasks", "ag_news",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    assert len(records) == 3 * 2 * 2  # levels x pre-training seeds x fine-tuning seeds
    for r in records:
        assert {"task", "seed", "finetune_seed", "level", "token_overlap", "pretrained_accuracy",
                "scratch_accuracy", "pretrain_quality"} <= set(r)
        assert 0 < r["token_overlap"] <= r["level"] + 1e-9
        assert ("withhold" in r["pretrain_config"]) == (r["level"] < 1)
    assert {(r["seed"], r["finetune_seed"]) for r in records} == {(42, 42), (42, 1042), (43, 43), (43, 1043)}
    # The scratch twins do not depend on the level; every level of a seed is pre-trained as many steps.
    for seed in (42, 43):
        assert len({r["runs"]["scratch"] for r in records if r["seed"] == seed}) == 2
        assert len({p["steps"] for p in results["pretraining"] if p["seed"] == seed}) == 1
    assert len({p["run"] for p in results["pretraining"]}) == 6
    assert all("mlm_accuracy" in p["quality"] for p in results["pretraining"])
    report = (out / "report.md").read_text()
    assert "token overlap set by design" in report and "one slope per pre-training seed" in report
    assert "the 3 levels have the same sequences, non-padding tokens, optimizer steps" in report
    assert (out / "report.html").is_file() and (out / "gap_vs_token_overlap_controlled.png").is_file()


def test_workers_share_the_cache_and_the_report_pass_trains_nothing(tmp_path, data_root, monkeypatch) -> None:
    import tinylm.experiments.overlap_control as recipe

    scale = replace(TINY, seeds=1, levels=(1.0, 0.4), base=replace(BASE, finetune_seeds=1))
    monkeypatch.setitem(recipe.OVERLAP_CONTROL_SCALES, "cpu", scale)
    out = tmp_path / "oc"
    args = ["--data", str(data_root), "reproduce", "overlap-control", "--scale", "cpu", "--tasks", "ag_news",
            "--pretrain-epochs", "2", "--out", str(out)]
    assert main([*args, "--shard", "1/2"]) == 0
    assert not (out / "results.json").exists()
    # Worker 1 takes its own model first, then the one nobody holds: the whole plan is done by it alone.
    runs = sorted(p.name for p in (out / "runs").iterdir() if p.name != "withhold")
    assert sum(name.startswith("pretrain") for name in runs) == 2
    assert main([*args, "--shard", "0/2"]) == 0
    assert main(args) == 0
    assert sorted(p.name for p in (out / "runs").iterdir() if p.name != "withhold") == runs
    results = json.loads((out / "results.json").read_text())
    assert len(results["records"]) == 2
    assert all(r["pretrain_config"]["epochs"] == 2 for r in results["records"])
