"""Every recipe setting is checked when its config is built (issue 19): an out-of-range value is a one-line
error naming the field, the value and what is allowed, before any file is written; and a run that would take
no optimizer step is an error, not a saved model.

The tables below state the allowed ranges independently of tinylm.config's rules, and
test_every_numeric_field_has_bad_values keeps them complete as configs gain fields.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinylm.cli import main
from tinylm.config import FINETUNE_PRESETS, MODEL_PRESETS, PRETRAIN_PRESETS, FinetuneConfig, ModelConfig, PretrainConfig
from tinylm.data import load_task
from tinylm.experiments.committee import COMMITTEE_SCALES, CommitteeScale
from tinylm.experiments.demo import DEMO_DATA
from tinylm.experiments.scales import SCALES, Scale
from tinylm.train.distill_config import DistillConfig
from tinylm.train.finetune import finetune
from tinylm.train.loop import LoopConfig, train_loop
from tinylm.train.pretrain import pretrain

NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def ints_outside(low: int, high: int | None = None) -> st.SearchStrategy[int]:
    below = st.integers(max_value=low - 1)
    return below if high is None else below | st.integers(min_value=high + 1)


def below(low: float, *, low_allowed: bool) -> st.SearchStrategy[float]:
    """Numbers below low (and low itself unless allowed); nextafter keeps -0.0, which equals 0, out."""
    return st.floats(max_value=math.nextafter(low, -math.inf) if low_allowed else low) | NOT_FINITE


def outside_unit(*, zero_allowed: bool) -> st.SearchStrategy[float]:
    """Numbers outside [0, 1) (zero_allowed) or (0, 1): 1 and above are out either way."""
    return below(0.0, low_allowed=zero_allowed) | st.floats(min_value=1.0)


SEED = ints_outside(0, 2**63 - 1)
TRAINING = {
    "epochs": ints_outside(1), "batch_size": ints_outside(1), "lr": below(0.0, low_allowed=False),
    "weight_decay": below(0.0, low_allowed=True), "warmup_ratio": outside_unit(zero_allowed=True),
    "grad_clip": below(0.0, low_allowed=True), "seed": SEED, "data_seed": SEED, "save_every": ints_outside(1),
}
DEMO_POSITIONS = MODEL_PRESETS["demo"].max_position_embeddings
PRETRAIN_BAD = {
    "articles": ints_outside(1), "seq_len": ints_outside(3, DEMO_POSITIONS),
    "mask_prob": outside_unit(zero_allowed=False), "snapshots": ints_outside(0), **TRAINING,
}
FINETUNE_BAD = {
    "train_per_label": ints_outside(1), "test_per_label": ints_outside(1), "max_length": ints_outside(3), **TRAINING,
    "test_fraction": outside_unit(zero_allowed=True), "validation_fraction": outside_unit(zero_allowed=True),
    "dropout": outside_unit(zero_allowed=True),
}
COUNTS = st.lists(ints_outside(1), min_size=1).map(tuple) | st.just(())  # a bad item, or none at all
SAMPLES = st.tuples(ints_outside(1), st.integers(1, 10)).map(lambda p: {"ag_news": p}) | st.tuples(
    st.integers(1, 10), ints_outside(1)).map(lambda p: {"fewrel": p})
SCALE_BAD = {"sizes": COUNTS, "samples": SAMPLES, "seeds": ints_outside(1), "finetune_seeds": ints_outside(1)}
COMMITTEE_BAD = {"members": ints_outside(1), "samples": SAMPLES, "seeds": ints_outside(1), "committee_sizes": COUNTS,
                 "compute_members": st.lists(ints_outside(1), min_size=1).map(tuple)}  # none at all is allowed
DROPOUT = outside_unit(zero_allowed=True)
MODEL_BAD = {
    **dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"), ints_outside(1)),
    "hidden_dropout_prob": DROPOUT, "attention_probs_dropout_prob": DROPOUT,
    "layer_norm_eps": below(0.0, low_allowed=False), "initializer_range": below(0.0, low_allowed=True),
    "pad_token_id": ints_outside(0), "conv_channels": ints_outside(0),
    "conv_kernels": st.lists(ints_outside(1), min_size=1).map(tuple),
}
DISTILL_BAD = {
    **TRAINING, "member": ints_outside(0), "temperature": below(0.0, low_allowed=False),
    "alpha": below(0.0, low_allowed=True) | st.floats(min_value=1.0, exclude_min=True),
    "unlabeled_texts": ints_outside(0), "train_per_label": ints_outside(1), "test_per_label": ints_outside(1),
    "max_length": ints_outside(3),
}
# Each config: a valid instance and its bad values per field.
CONFIGS: dict[type, tuple[Any, dict[str, st.SearchStrategy[Any]]]] = {
    PretrainConfig: (PRETRAIN_PRESETS["demo"], PRETRAIN_BAD),
    FinetuneConfig: (FINETUNE_PRESETS["demo"], FINETUNE_BAD),
    Scale: (SCALES["cpu"], SCALE_BAD),
    CommitteeScale: (COMMITTEE_SCALES["cpu"], COMMITTEE_BAD),
    ModelConfig: (MODEL_PRESETS["demo"], MODEL_BAD),
    DistillConfig: (DistillConfig(teacher="runs/committee-ft"), DISTILL_BAD),
}
FIELDS = [(cls, name) for cls, (_, bad) in CONFIGS.items() for name in bad]
ONE_EXAMPLE_FOLDER = settings(max_examples=40, deadline=None,
                              # the run folder must stay absent in every example, so one tmp_path serves all
                              suppress_health_check=[HealthCheck.function_scoped_fixture])


def _holds_numbers(hint: Any) -> bool:
    if hint in (int, float):
        return True
    return any(_holds_numbers(a) for a in typing.get_args(hint) if a is not Ellipsis)


@pytest.mark.parametrize("cls", list(CONFIGS))
def test_every_numeric_field_has_bad_values(cls: type) -> None:
    numeric = {name for name, hint in typing.get_type_hints(cls).items() if _holds_numbers(hint)}
    assert numeric == set(CONFIGS[cls][1]), "a new numeric field needs its rule and its bad values here"


def _assert_one_line(message: str, cls: type, field: str, value: Any) -> None:
    assert message.startswith(f"{cls.__name__}.{field}: {value!r} is not allowed; it must be "), message
    assert "\n" not in message


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_out_of_range_values_are_refused_when_a_config_is_built(data: st.DataObject) -> None:
    cls, field = data.draw(st.sampled_from(FIELDS))
    base, bad = CONFIGS[cls]
    value = data.draw(bad[field])
    with pytest.raises(ValueError) as err:
        dataclasses.replace(base, **{field: value})
    _assert_one_line(str(err.value), cls, field, value)
    stored = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    with pytest.raises(ValueError):  # a stored config read back is checked the same way
        cls(**{**stored, field: value})


def _flag_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # repr: nan, inf and 1e-300 as float() reads


@pytest.mark.parametrize(("command", "cls"), [("pretrain", PretrainConfig), ("finetune", FinetuneConfig)])
@given(data=st.data())
@ONE_EXAMPLE_FOLDER
def test_cli_refuses_out_of_range_flags_before_writing(tmp_path: Path, capsys: Any, command: str, cls: type,
                                                       data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(sorted(CONFIGS[cls][1])))
    value = data.draw(CONFIGS[cls][1][field])
    out = tmp_path / "run"
    # No data folder: a setting that slipped past the config would fail on the data instead, with another message.
    code = main(["--data", str(tmp_path / "no-data"), command, "--preset", "demo",
                 f"--{field.replace('_', '-')}={_flag_value(value)}", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("tinylm: error: ") and err.count("\n") == 1, err
    _assert_one_line(err.removeprefix("tinylm: error: ").strip(), cls, field, value)
    assert not out.exists()


@given(members=ints_outside(1))
@ONE_EXAMPLE_FOLDER
def test_cli_refuses_a_committee_without_members(tmp_path: Path, capsys: Any, members: int) -> None:
    out = tmp_path / "sweep"
    code = main(["reproduce", "committee", f"--members={members}", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"tinylm: error: CommitteeScale.members: {members} is not allowed; " \
                                "it must be an integer >= 1\n"
    assert not out.exists()


@pytest.mark.parametrize(
    ("cls", "field", "value", "expect"),
    [
        (PretrainConfig, "model", "bert-99", "unknown model preset 'bert-99'; choose from bert-6, "),
        (PretrainConfig, "tokenizer", "bert-base-uncasd", "unknown tokenizer 'bert-base-uncasd'; choose from train, "),
        (FinetuneConfig, "tokenizer", "train", "unknown tokenizer 'train'; choose from bert-base-uncased, "),
        (FinetuneConfig, "task", "imdb", "unknown task 'imdb'; choose from ag_news, dbpedia, fewrel"),
        (FinetuneConfig, "precision", "fp8", "unknown precision 'fp8'; choose from fp32, bf16, fp16"),
        (PretrainConfig, "schedule", "cosine", "unknown schedule 'cosine'; choose from step, epoch"),
        (PretrainConfig, "data_source", "web", "unknown data source 'web'; choose from local, hub"),
        (PretrainConfig, "compile", "yes", "'yes' is not allowed; it must be true or false"),
        (CommitteeScale, "member_model", "bert-2", "unknown model preset 'bert-2'"),
    ],
)
def test_unknown_names_are_refused(cls: type, field: str, value: Any, expect: str) -> None:
    base = CONFIGS[cls][0]
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{field}: ") as err:
        dataclasses.replace(base, **{field: value})
    assert expect in str(err.value)


def test_tokenizer_paths_are_left_to_load_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path need not exist yet (a scratch twin names its pre-training run before it is written)."""
    for spec in ("runs/pt", str(tmp_path / "later"), "tok/vocab.txt"):
        assert dataclasses.replace(PRETRAIN_PRESETS["demo"], tokenizer=spec).tokenizer == spec
        assert dataclasses.replace(FINETUNE_PRESETS["demo"], tokenizer=spec).tokenizer == spec
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mytok").mkdir()  # a bare word is fine when it names a folder here
    assert dataclasses.replace(FINETUNE_PRESETS["demo"], tokenizer="mytok").tokenizer == "mytok"


def test_presets_and_stored_configs_stay_valid() -> None:
    for cfg in [*PRETRAIN_PRESETS.values(), *FINETUNE_PRESETS.values()]:
        assert type(cfg)(**cfg.to_dict()) == cfg
    assert "snapshots" not in PRETRAIN_PRESETS["demo"].to_dict()  # config hashes of older runs stay the same


def test_a_config_changed_after_it_was_built_is_checked_before_writing(tmp_path: Path) -> None:
    pre = dataclasses.replace(PRETRAIN_PRESETS["demo"])
    pre.epochs = 0
    with pytest.raises(ValueError, match=r"^PretrainConfig\.epochs: 0 is not allowed"):
        pretrain(pre, tmp_path / "pt", root=tmp_path / "no-data")
    ft = dataclasses.replace(FINETUNE_PRESETS["demo"])
    ft.lr = -1e-3
    with pytest.raises(ValueError, match=r"^FinetuneConfig\.lr: -0\.001 is not allowed"):
        finetune(ft, tmp_path / "ft", root=tmp_path / "no-data")
    assert not any(tmp_path.iterdir())


def test_no_batches_is_an_error_not_a_saved_model(tmp_path: Path) -> None:
    task = load_task("ag_news", DEMO_DATA, train_per_label=0, test_per_label=2, seed=3)  # no training examples
    cfg = dataclasses.replace(FINETUNE_PRESETS["demo"], tokenizer="tinylm-wiki-4k", epochs=1)
    with pytest.raises(ValueError, match="no optimizer step"):
        finetune(cfg, tmp_path / "ft", task_data=task, device="cpu")
    assert not (tmp_path / "ft" / "model").exists() and not (tmp_path / "ft" / "metrics.json").exists()


def test_train_loop_refuses_zero_epochs(tmp_path: Path) -> None:
    """A LoopConfig is built by code, not users, and is not checked on build; the loop itself refuses."""
    loop = LoopConfig(epochs=0, lr=1e-3, weight_decay=0.0, warmup_ratio=0.0, schedule="step", precision="fp32",
                      seed=0, save_every=1)
    with pytest.raises(ValueError, match="0 epochs of 1 batches is no optimizer step"):
        train_loop(torch.nn.Linear(2, 2), lambda e: [{}], loop, tmp_path, torch.device("cpu"), {})
    assert not any(tmp_path.iterdir())
