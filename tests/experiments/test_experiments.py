"""The experiment recipes: a tiny sweep end to end, run caching, and the paper scale against the paper notes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tinylm.config import MODEL_PRESETS, replace
from tinylm.experiments import run_cache as runs_module
from tinylm.experiments.paper import EXPERIMENTS, reproduce
from tinylm.experiments.scales import SCALES, Scale

TINY = Scale(
    name="tiny",
    sizes=(32, 64),
    pretrain=replace(SCALES["cpu"].pretrain, model="demo", epochs=1, seq_len=64, batch_size=32),
    finetune=replace(SCALES["cpu"].finetune, model="demo", epochs=1, max_length=64),
    samples={"ag_news": (8, 6), "dbpedia": (4, 3)},
    seeds=2,
)


def test_tiny_sweep_writes_results_report_and_plots_then_reuses_every_run(tmp_path, data_root, monkeypatch) -> None:
    out = tmp_path / "sweep"
    first = reproduce(EXPERIMENTS, TINY, out, tasks=("ag_news", "dbpedia"), root=data_root)
    # 3 experiments; gap at the largest size only: (1 + 2 + 2 sizes) x 2 tasks x 2 seeds records.
    assert len(first["records"]) == 5 * 2 * 2
    for name in ("results.json", "report.md", "report.html", "gap_vs_size.png", "gap_vs_overlap.png"):
        assert (out / name).is_file(), name
    stored = json.loads((out / "results.json").read_text())
    rec = next(r for r in stored["records"] if r["experiment"] == "overlap")
    assert set(rec["overlap"]) >= {"token", "type"} and 0 < rec["overlap"]["token"] <= 1
    assert rec["pretrain_config"]["articles"] == rec["articles"] and rec["timings"]["pretrain"] > 0
    # Overlap grows with the (nested) pre-training subset.
    ov = {r["articles"]: r["overlap"]["token"] for r in stored["records"]
          if r["experiment"] == "overlap" and r["task"] == "ag_news" and r["seed"] == 42}
    assert ov[64] >= ov[32]
    report = (out / "report.md").read_text()
    assert "Experiment 3" in report or "overlap" in report.lower()

    # A second call trains nothing: every run is found by its config hash.
    def refuse(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(runs_module, "pretrain", refuse)
    monkeypatch.setattr(runs_module, "finetune", refuse)
    again = reproduce(EXPERIMENTS, TINY, out, tasks=("ag_news", "dbpedia"), root=data_root)
    assert again["records"] == first["records"]

    # Extending the sweep with a third seed trains only that seed's runs.
    import tinylm.train.finetune
    import tinylm.train.pretrain

    calls: list[str] = []
    monkeypatch.setattr(runs_module, "pretrain",
                        lambda *a, **k: calls.append("pretrain") or tinylm.train.pretrain.pretrain(*a, **k))
    monkeypatch.setattr(runs_module, "finetune",
                        lambda *a, **k: calls.append("finetune") or tinylm.train.finetune.finetune(*a, **k))
    reproduce(("gap",), TINY, out, seeds=3, tasks=("ag_news",), root=data_root)
    assert calls == ["pretrain", "finetune", "finetune"]  # seed 44: its model, fine-tuned and its scratch twin


def _paper_notes(full_data_root: Path) -> str:
    """The paper notes kept beside the shared data folder (shared/docs/paper.md), not in the repository."""
    path = full_data_root.parent / "docs" / "paper.md"
    if not path.is_file():
        pytest.skip(f"paper notes not found at {path}: set TINYLM_DATA to a shared/data folder with ../docs/paper.md")
    return path.read_text()


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_paper_scale_matches_the_paper_notes(full_data_root) -> None:
    notes = _paper_notes(full_data_root)
    paper = SCALES["paper"]
    sizes = re.search(r"Sizes: ([\d,]+), ([\d,]+), ([\d,]+) articles", notes)
    assert sizes and paper.sizes == tuple(_number(s) for s in sizes.groups())
    assert re.search(r"AdamW lr 5e-5, weight decay 0\.01, batch 32, 50 epochs", notes)
    for cfg in (paper.pretrain, paper.finetune):
        assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.schedule) == (5e-5, 0.01, 32, 50, "epoch")
        assert cfg.grad_clip == 0 and cfg.data_seed == 42
    assert "MLM: 15 %" in notes and paper.pretrain.mask_prob == 0.15 and paper.pretrain.seq_len == 128
    assert paper.pretrain.tokenizer == "bert-base-uncased" and paper.pretrain.data_seed == 42
    assert paper.pretrain.model == paper.finetune.model == "bert-6"
    m = MODEL_PRESETS["bert-6"]
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads, m.intermediate_size,
            m.max_position_embeddings, m.vocab_size) == (6, 768, 12, 3072, 128, 30522)
    samples = {
        "ag_news": re.search(r"AGNews ([\d,]+) train / ([\d,]+) test per label", notes),
        "dbpedia": re.search(r"DBPedia-14 (\d+) / (\d+) per label", notes),
        "fewrel": re.search(r"FewRel (\d+) / (\d+) per relation", notes),
    }
    for task, match in samples.items():
        assert match, task
        assert paper.samples[task] == tuple(_number(g) for g in match.groups()), task


def test_shards_share_one_cache_then_the_report_trains_nothing(tmp_path, data_root, monkeypatch) -> None:
    """Two shards train disjoint halves of the models, each with two fine-tuning seeds per model and its own
    scratch twin per fine-tuning seed; the call without --shard then finds every run and reports."""
    scale = replace(TINY, finetune_seeds=2)
    out = tmp_path / "sweep"
    done = [reproduce(("gap", "size"), scale, out, tasks=("ag_news",), root=data_root, shard=(i, 2))["pairs"]
            for i in range(2)]
    assert done == [2 * 2, 2 * 2]  # 4 models (2 seeds x 2 sizes), two each, x 2 fine-tuning seeds
    assert not (out / "results.json").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("a run the shards trained was trained again")

    monkeypatch.setattr(runs_module, "pretrain", refuse)
    monkeypatch.setattr(runs_module, "finetune", refuse)
    results = reproduce(("gap", "size"), scale, out, tasks=("ag_news",), root=data_root)
    records = results["records"]
    assert {(r["seed"], r["finetune_seed"]) for r in records} == {(42, 42), (42, 1042), (43, 43), (43, 1043)}
    scratch_runs = {r["runs"]["scratch"] for r in records}
    assert len(scratch_runs) == 4  # one twin per (pre-training seed, fine-tuning seed), shared across sizes only
    assert results["finetune_seeds"] == 2 and (out / "report.md").is_file()


def test_cpu_scale_covers_every_task_and_keeps_the_paper_design() -> None:
    cpu = SCALES["cpu"]
    assert set(cpu.samples) == {"fewrel", "ag_news", "dbpedia"} and cpu.seeds >= 3
    assert cpu.pretrain.tokenizer == "tinylm-wiki-4k"  # one vocabulary for every run and scratch twin
    assert cpu.pretrain.model == cpu.finetune.model and list(cpu.sizes) == sorted(cpu.sizes)


def test_curve_fine_tunes_every_snapshot_and_reuses_experiment_one(tmp_path, data_root) -> None:
    from tinylm.experiments.curve import reproduce_curve

    scale = replace(TINY, pretrain=replace(TINY.pretrain, snapshots=2, epochs=2), seeds=1)
    runs = tmp_path / "runs"
    reproduce(("gap",), scale, tmp_path / "exp", tasks=("ag_news",), root=data_root)
    made = set((tmp_path / "exp" / "runs").iterdir())
    result = reproduce_curve(scale, tmp_path / "curve", tasks=("ag_news",), root=data_root,
                             runs=tmp_path / "exp" / "runs")
    steps = [r["step"] for r in result["records"]]
    assert steps == [0, 1, 2, 4]  # scratch, T/4, T/2 and the finished model (64 articles x 2 epochs)
    new = set((tmp_path / "exp" / "runs").iterdir()) - made
    assert len(new) == 2  # only the two snapshots were fine-tuned; scratch and final came from experiment 1
    final = result["records"][-1]
    assert final["quality"]["mlm_accuracy"] >= 0 and final["scratch_accuracy"] == result["records"][0][
        "pretrained_accuracy"]
    for name in ("results.json", "report.md", "report.html", "gap_vs_steps.png"):
        assert (tmp_path / "curve" / name).is_file()
    assert "Held-out MLM acc." in (tmp_path / "curve" / "report.md").read_text()
    assert not runs.exists()


def test_arms_push_overlap_apart_at_one_size(tmp_path, data_root) -> None:
    from tinylm.experiments.overlap_arms import reproduce_arms

    scale = replace(TINY, seeds=1)
    result = reproduce_arms(scale, tmp_path / "arms", tasks=("ag_news",), root=data_root)
    by_arm = {r["arm"]: r for r in result["records"]}
    assert set(by_arm) == {"low", "random", "high"}
    assert {r["articles"] for r in result["records"]} == {32}
    mass = {arm: r["overlap"]["mass"] for arm, r in by_arm.items()}
    assert mass["low"] < mass["random"] < mass["high"]
    # Length-matched: every arm the same tokens per opening (the least typical openings are shorter otherwise).
    assert len({r["tokens_per_article"] for r in result["records"]}) == 1
    # The arms share the scratch twin and differ only in their articles.
    assert len({r["scratch_accuracy"] for r in result["records"]}) == 1
    assert len({r["runs"]["pretrain"] for r in result["records"]}) == 3
    assert "fixed pre-training size" in (tmp_path / "arms" / "report.md").read_text()


def test_arms_workers_share_the_cache_and_the_report_pass_trains_nothing(tmp_path, data_root, monkeypatch) -> None:
    from tinylm.experiments.overlap_arms import reproduce_arms

    scale, out = replace(TINY, seeds=1), tmp_path / "arms"
    assert reproduce_arms(scale, out, tasks=("ag_news",), root=data_root, shard=(1, 2)) == {"shard": [1, 2],
                                                                                          "models": 3}
    assert not (out / "results.json").exists()
    pretrained = sorted(p.name for p in (out / "runs").iterdir() if p.name.startswith("pretrain"))
    assert len(pretrained) == 3  # the one worker took its share, then the rest nobody held
    monkeypatch.setattr(runs_module, "pretrain", _refuse)
    monkeypatch.setattr(runs_module, "finetune", _refuse)
    result = reproduce_arms(scale, out, tasks=("ag_news",), root=data_root)
    assert {r["arm"] for r in result["records"]} == {"low", "random", "high"}
    assert sorted(r["runs"]["pretrain"] for r in result["records"]) == pretrained


def _refuse(*args, **kwargs):
    raise AssertionError("a cached run was trained again")
