"""folders.py: what a folder holds (folder_kind, classifier_folder, looks_local) and one writer per run folder
(one_writer), with real processes holding and dying with the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinylm.checkpoint import resolve_model_dir, save_model
from tinylm.committee import Committee, save_committee
from tinylm.config import ModelConfig
from tinylm.folders import WRITER_LOCK, FolderInUse, classifier_folder, folder_kind, looks_local, one_writer
from tinylm.model import BertForClassification, BertForMLM

TINY = ModelConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                   max_position_embeddings=32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder of each kind (random tiny weights, no tokenizer: only the config files are read)."""
    root = tmp_path_factory.mktemp("kinds")
    torch.manual_seed(0)
    made = {
        "classifier": save_model(BertForClassification(TINY, 2), root / "run" / "model", label_names=["a", "b"]),
        "student": save_model(BertForClassification(TINY, 2), root / "student", label_names=["a", "b"],
                              extra={"distill": {"teacher": "t"}}),
        "mlm": save_model(BertForMLM(TINY), root / "mlm"),
        "committee": save_committee(Committee.init(TINY, 2, [1, 2], num_labels=2, label_names=["a", "b"]),
                                    root / "committee"),
        "mlm_committee": save_committee(Committee.init(TINY, 2, [1, 2], head="mlm"), root / "mlm-committee"),
    }
    (root / "run" / "finetune_config.json").write_text("{}")
    return made


def test_every_kind_is_told_from_its_config_files(folders: dict[str, Path]) -> None:
    for kind, folder in folders.items():
        assert folder_kind(folder) == kind
    run = folders["classifier"].parent
    assert folder_kind(run) == "classifier" and classifier_folder(run) == folders["classifier"]


def test_a_pretrained_folder_is_not_a_classifier(folders: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"is a pre-trained \(MLM\) folder, not a classifier; fine-tune it first "
                                         r"\(tinylm finetune --init .*mlm \.\.\.\)$"):
        classifier_folder(folders["mlm"])
    with pytest.raises(ValueError, match=r"is a pre-trained \(MLM\) committee, not a classifier"):
        classifier_folder(folders["mlm_committee"])
    for kind in ("classifier", "student", "committee"):
        assert classifier_folder(folders[kind]) == folders[kind]


def test_missing_and_empty_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^runs/nope: not found$"):
        folder_kind("runs/nope")
    with pytest.raises(FileNotFoundError, match=r"no config\.json, so this is not a model folder"):
        folder_kind("runs")
    (tmp_path / "runs" / "half").mkdir()
    (tmp_path / "runs" / "half" / "finetune_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="without a finished model yet"):
        classifier_folder("runs/half")


def test_local_looking_names_are_never_sent_to_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("runs/nope", "./nope", "/no/such/folder", "a/b/c", "nope/"):
        assert looks_local(name), name
    for name in ("bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2"):
        assert not looks_local(name), name

    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match=r"^runs/nope: not found$"):
        resolve_model_dir("runs/nope")
    with pytest.raises(FileNotFoundError) as err:  # a hub id: one line, whatever the hub client says
        resolve_model_dir("someone/model")
    assert str(err.value) == "someone/model: no such folder here, and the Hugging Face hub does not serve it (OSError)"


# ---------------------------------------------------------------- one writer per run folder

HOLD = """
import sys, time
from tinylm.folders import one_writer
with one_writer(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def hold(folder: Path) -> subprocess.Popen:
    """A process that holds `folder`'s writer lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_free(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = hold(out)
    try:
        said = rf"^{out}: another tinylm run \(pid {proc.pid}\) is writing this run folder; wait for it to end, or "
        with pytest.raises(FolderInUse, match=said + "give another --out$"), one_writer(out):
            pytest.fail("the lock was taken twice")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / WRITER_LOCK).is_file()  # a killed writer leaves its lock file behind, but not its lock
    with one_writer(out):
        assert (out / WRITER_LOCK).read_text().strip() == str(os.getpid())
        with one_writer(out):  # the same process may re-enter (a trainer calling a trainer)
            pass
    assert os.listdir(out) == []  # released: the lock file goes too


def test_a_failed_first_writer_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="bad input"), one_writer(out):
        raise ValueError("bad input")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError), one_writer(tmp_path / "kept"):
        (tmp_path / "kept" / "log.jsonl").write_text(json.dumps({"step": 1}))
        raise ValueError("after writing")
    assert os.listdir(tmp_path / "kept") == ["log.jsonl"]


def test_every_trainer_refuses_a_folder_another_process_writes(tmp_path: Path) -> None:
    """pretrain, finetune, distill and the committee recipes take the lock before reading anything."""
    from tinylm.config import FINETUNE_PRESETS, PRETRAIN_PRESETS
    from tinylm.train.committee import finetune_committee, pretrain_committee
    from tinylm.train.distill import distill
    from tinylm.train.distill_config import DistillConfig
    from tinylm.train.finetune import finetune
    from tinylm.train.pretrain import pretrain

    out = tmp_path / "run"
    calls = [lambda: pretrain(PRETRAIN_PRESETS["demo"], out), lambda: finetune(FINETUNE_PRESETS["demo"], out),
             lambda: distill(DistillConfig(teacher="t"), out),
             lambda: pretrain_committee(PRETRAIN_PRESETS["demo"], 2, out),
             lambda: finetune_committee(FINETUNE_PRESETS["demo"], 2, out=out)]
    proc = hold(out)
    try:
        for call in calls:
            with pytest.raises(FolderInUse, match="another tinylm run"):
                call()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert os.listdir(out) == [WRITER_LOCK]
