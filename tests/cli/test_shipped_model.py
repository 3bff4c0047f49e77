"""The shipped pre-trained model (docs/pretrained_model.md): `tinylm finetune` starts from it unless told otherwise,
`--init scratch` is its twin, a shipped model that is not installed is a one-line error, `tinylm pretrain --init`
continues it on a corpus, scripts/build_shipped_model.py makes the folder and its card, and
scripts/shipped_evidence.py runs (--quick).

A tiny model, pre-trained here for 3 steps on the committed Wikipedia sample and built into a folder by the script,
stands in for the shipped one (monkeypatched into config.SHIPPED_MODELS); the last test checks the installed one.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tinylm.checkpoint import load_model, shipped_model, to_hf_state_dict
from tinylm.cli import build_parser, main
from tinylm.cli.finetune import finetune_config
from tinylm.config import FINETUNE_PRESETS, MODEL_PRESETS, PRETRAIN_PRESETS, SHIPPED_MODELS, PretrainConfig
from tinylm.data import load_task
from tinylm.tokenizer import load_tokenizer
from tinylm.train.finetune import build_classifier
from tinylm.train.pretrain import SHAPE, pretrain

REPO = Path(__file__).resolve().parents[2]
NAME = "tinylm-mini"
FT = ["finetune", "--preset", "demo", "--task", "ag_news", "--train-per-label", "4", "--test-per-label", "2",
      "--epochs", "1", "--max-length", "32"]
WORDS = "bert.embeddings.word_embeddings.weight"
POSITIONS = "bert.embeddings.position_embeddings.weight"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A finished 3-step pre-training of the demo architecture (seed 7, so no other seed-42 model shares its
    initial weights)."""
    cfg = PretrainConfig(model="demo", tokenizer="tinylm-wiki-4k", articles=48, seq_len=64, epochs=1, batch_size=16,
                         lr=1e-3, precision="fp32", seed=7)
    out = tmp_path_factory.mktemp("shipped") / "pt"
    pretrain(cfg, out, root=data_root)
    return out


@pytest.fixture(scope="module")
def built(pretrained_run: Path) -> tuple[Path, dict[str, Any]]:
    out = pretrained_run.parent / NAME
    return out, script("build_shipped_model").build(pretrained_run, out, hardware="the test machine")


@pytest.fixture
def shipped(built: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(SHIPPED_MODELS, NAME, built[0])
    return built[0]


def config_of(*argv: str) -> Any:
    return finetune_config(build_parser().parse_args([*FT, *argv, "--out", "unused"]))


def test_finetune_starts_from_the_shipped_model_unless_told_otherwise(shipped: Path) -> None:
    assert config_of().init == NAME
    assert config_of("--init", "shipped").init == NAME
    scratch = config_of("--init", "scratch")
    assert scratch.init is None and scratch.tokenizer == NAME
    old = config_of("--tokenizer", "tinylm-wiki-4k")  # the from-scratch flags of before keep their meaning
    assert old.init is None and old.tokenizer == "tinylm-wiki-4k"
    assert config_of("--init", "runs/pt").init == "runs/pt"
    assert "init" not in PRETRAIN_PRESETS["demo"].to_dict()  # the library's configs and their hashes: unchanged


def test_the_default_recipe_is_the_one_the_shipped_model_was_measured_with(shipped: Path) -> None:
    bare = finetune_config(build_parser().parse_args(["finetune", "--train-file", "f.csv", "--out", "unused"]))
    demo = FINETUNE_PRESETS["demo"]
    assert bare.init == NAME and (bare.epochs, bare.lr, bare.warmup_ratio) == (demo.epochs, demo.lr, demo.warmup_ratio)
    assert bare.train_per_label is None  # a user's file is used whole, not the preset's per-label sample


def test_the_default_start_is_the_shipped_weights_and_the_twin_is_not(shipped: Path) -> None:
    folder = load_file(str(shipped / "model.safetensors"))
    pre, pre_tokenizer = build_classifier(config_of(), 4)
    twin, twin_tokenizer = build_classifier(config_of("--init", "scratch"), 4)
    pre_state, twin_state = to_hf_state_dict(pre), to_hf_state_dict(twin)
    encoder = [k for k in folder if k in pre_state]
    assert len(encoder) > 20 and all(torch.equal(pre_state[k], folder[k]) for k in encoder)
    assert {k: v.shape for k, v in twin_state.items()} == {k: v.shape for k, v in pre_state.items()}
    assert not torch.equal(twin_state[WORDS], folder[WORDS])
    assert twin_tokenizer.get_vocab() == pre_tokenizer.get_vocab() == load_tokenizer(NAME).get_vocab()


def test_finetune_without_init_trains_from_the_shipped_model_and_predicts(shipped: Path, tmp_path: Path,
                                                                          data_root: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ft"
    assert main(["--data", str(data_root), *FT, "--out", str(out)]) == 0
    assert json.loads((out / "finetune_config.json").read_text())["init"] == NAME
    assert json.loads((out / "metrics.json").read_text())["init"] == NAME
    capsys.readouterr()
    assert main(["predict", str(out), "Oil prices rose sharply on Monday."]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in {"World", "Sports", "Business", "Sci/Tech"}


def test_demo_shipped_fine_tunes_the_shipped_model_and_its_twin_without_pre_training(
        shipped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    demo = FINETUNE_PRESETS["demo"]
    monkeypatch.setitem(FINETUNE_PRESETS, "demo", dataclasses.replace(demo, epochs=1, max_length=32,
                                                                      train_per_label=4, test_per_label=2))
    out = tmp_path / "demo"
    assert main(["demo", "--shipped", "--out", str(out)]) == 0
    assert "(shipped, " in capsys.readouterr().out and not (out / "pretrain").exists()
    pre = json.loads((out / "finetune-pretrained" / "finetune_config.json").read_text())
    twin = json.loads((out / "finetune-scratch" / "finetune_config.json").read_text())
    assert (pre["init"], twin.get("init"), twin["tokenizer"]) == (NAME, None, NAME)
    results = json.loads((out / "results.json").read_text())
    assert results["pretrain"]["model"] == NAME and results["pretrained"]["test_examples"] == 8


def test_a_shipped_model_that_is_not_installed_is_a_one_line_error(tmp_path: Path, data_root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(SHIPPED_MODELS, NAME, tmp_path / "absent")
    out = tmp_path / "run"
    for argv in (FT, [*FT, "--init", "scratch"], [*FT, "--init", "shipped"],
                 ["pretrain", "--preset", "demo", "--init", "shipped", "--articles", "8"]):
        code = main(["--data", str(data_root), *argv, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"the shipped model {NAME} is not installed" in err and not out.exists()


def test_pretrain_init_continues_the_shipped_model_on_a_corpus(shipped: Path, tmp_path: Path, data_root: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "news.txt"
    news = load_task("ag_news", data_root, train_per_label=6, test_per_label=0)
    corpus.write_text("".join(e.text + "\n" for e in news.train), encoding="utf-8")
    out = tmp_path / "domain"
    assert main(["--data", str(data_root), "pretrain", "--preset", "demo", "--init", "shipped", "--corpus",
                 str(corpus), "--epochs", "1", "--seq-len", "32", "--batch-size", "8", "--out", str(out)]) == 0
    recipe = json.loads((out / "pretrain_config.json").read_text())
    assert (recipe["init"], recipe["model"], recipe["tokenizer"], recipe["articles"]) == (NAME, "demo", NAME, 24)
    assert load_tokenizer(out / "model").get_vocab() == load_tokenizer(shipped).get_vocab()
    start, end = load_file(str(shipped / "model.safetensors")), load_file(str(out / "model" / "model.safetensors"))
    # 32-token windows never use positions 32 and up: those rows stay the shipped model's (weight decay aside),
    # while what the run does use has moved
    assert torch.allclose(end[POSITIONS][32:], start[POSITIONS][32:], rtol=1e-3, atol=1e-6)
    assert not torch.equal(end[WORDS], start[WORDS])

    capsys.readouterr()
    for extra, words in ((["--model", "cpu-1"], "is not the shape of"), (["--tokenizer", "train"], "own tokenizer")):
        code = main(["--data", str(data_root), "pretrain", "--preset", "demo", "--init", NAME, "--corpus",
                     str(corpus), *extra, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()


def test_build_shipped_model_writes_the_card_and_a_folder_transformers_loads(built: tuple[Path, dict[str, Any]],
                                                                             pretrained_run: Path) -> None:
    from transformers import AutoModelForMaskedLM

    folder, facts = built
    summary = json.loads((pretrained_run / "summary.json").read_text())
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert f"**{summary['steps']:,} optimizer steps**" in card
    assert f"**{summary['quality']['mlm_accuracy']:.1%}**" in card and "Cloze probe" in card
    assert "CC BY-SA 4.0" in card and "the test machine" in card and "## Limits" in card
    assert facts["dtype"] == "float32" and json.loads((folder / "config.json").read_text())["dtype"] == "float32"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in folder.iterdir()}

    ids = torch.tensor([[2, 100, 4, 200, 3]])
    ours = load_model(folder).eval()
    hf = AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        assert torch.allclose(ours(ids, torch.ones_like(ids)).logits, hf(input_ids=ids).logits, atol=1e-4)


def test_a_large_model_ships_in_bf16_measured_again(pretrained_run: Path, tmp_path: Path, data_root: Path) -> None:
    facts = script("build_shipped_model").build(pretrained_run, tmp_path / "big", hardware="x", max_fp32_mb=1,
                                                root=str(data_root))
    weights = load_file(str(tmp_path / "big" / "model.safetensors"))
    assert facts["dtype"] == "bfloat16" and weights[WORDS].dtype == torch.bfloat16
    assert "mlm_accuracy" in facts["quality"] and "bfloat16" in (tmp_path / "big" / "README.md").read_text()
    assert load_model(tmp_path / "big").cfg.hidden_size == 128


def test_shipped_evidence_runs_quick(built: tuple[Path, dict[str, Any]], tmp_path: Path, data_root: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    evidence = script("shipped_evidence")
    monkeypatch.setattr(evidence, "TASKS", ("ag_news",))  # one built-in task and the example CSV: enough here
    assert evidence.main(["--quick", "--model", str(built[0]), "--out", str(tmp_path / "ev"),
                          "--runs", str(tmp_path / "runs"), "--data", str(data_root)]) == 0
    result = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [(r["source"], r["seed"]) for r in result["records"]] == [
        ("ag_news", 42), ("ag_news", 43), ("examples/ag_news_sample.csv", 42), ("examples/ag_news_sample.csv", 43)]
    for record in result["records"]:
        assert 0 <= record["shipped_accuracy"] <= 1 and 0 <= record["scratch_accuracy"] <= 1
        assert record["shipped_train_seconds"] > 0 and record["scratch_train_seconds"] > 0
    assert result["timing"]["train_rows"] == 200 and result["timing"]["threads"] == 1
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "| examples/ag_news_sample.csv | 2 |" in report and "one thread" in report


@pytest.mark.skipif(not (SHIPPED_MODELS[NAME] / "config.json").is_file(),
                    reason="the shipped model is not installed (src/tinylm/pretrained/tinylm-mini)")
def test_the_installed_shipped_model_is_the_demo_architecture() -> None:
    from transformers import AutoModelForMaskedLM

    folder = shipped_model("shipped")
    assert folder == SHIPPED_MODELS[NAME]
    model = load_model(folder)
    demo = MODEL_PRESETS["demo"]
    assert all(getattr(model.cfg, f) == getattr(demo, f) for f in SHAPE) and model.cfg.vocab_size == demo.vocab_size
    assert load_tokenizer(NAME).get_vocab() == load_tokenizer("tinylm-wiki-4k").get_vocab()
    assert (folder / "model.safetensors").stat().st_size <= 8 * 2**20
    assert "optimizer steps" in (folder / "README.md").read_text(encoding="utf-8")
    assert AutoModelForMaskedLM.from_pretrained(str(folder)).config.num_hidden_layers == demo.num_hidden_layers
