"""Committee folders: one folder per committee, read and written with checkpoint.py's conventions.

A committee folder holds config.json (model_type "tinylm_committee", the member count, the member config and the
labels), model.safetensors (the stacked tensors under Hugging Face BERT names, member axis first) and the tokenizer
files. `extract_member` writes one member as an ordinary model folder (checkpoint.save_model), which tinylm's
load_model and, for plain BERTs, transformers load. `load_classifier` loads a fine-tuned model or committee alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from tinylm.checkpoint import (
    CONV_MODEL_TYPE,
    from_hf_state_dict,
    hf_config_dict,
    hf_name,
    label_names_of,
    load_model,
    read_model_config,
    save_model,
    write_model_folder,
)
from tinylm.committee.model import ClassifierModel, Committee, build_member
from tinylm.config import ModelConfig
from tinylm.folders import COMMITTEE_MODEL_TYPE, classifier_folder
from tinylm.runtime import pick_device

FORMAT_VERSION = 1


def save_committee(
    committee: Committee,
    folder: str | os.PathLike,
    tokenizer: Any = None,
    label_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the committee to one folder, atomically: config.json, model.safetensors (stacked, member axis first,
    Hugging Face BERT names), tokenizer files, and `extra` in tinylm_meta.json."""
    label_names = label_names or committee.label_names
    if committee.head == "classification" and label_names and len(label_names) != committee.num_labels:
        raise ValueError(f"{len(label_names)} label names for {committee.num_labels} labels")
    with torch.device("meta"):
        template = build_member(committee.cfg, committee.head, committee.num_labels)
    config = hf_config_dict(committee.cfg, template, label_names)
    config["architectures"] = ["TinylmCommittee"]
    config["model_type"] = COMMITTEE_MODEL_TYPE
    config["num_members"] = committee.n
    config["tinylm"]["committee"] = {"format": FORMAT_VERSION, "members": committee.n,
                                     "member_model_type": "bert" if committee.cfg.is_plain_bert else CONV_MODEL_TYPE}
    # checkpoint.py's renaming, so a committee folder and a member's model folder use the same names.
    state = {hf_name(k): v.detach().contiguous().cpu() for k, v in committee.stacked().items()}
    return write_model_folder(folder, state, config, tokenizer, extra,
                              metadata={"tinylm_committee_members": str(committee.n)})


def is_committee_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a committee (config.json's model_type), as opposed to one model."""
    cfg_file = Path(folder) / "config.json"
    if not cfg_file.is_file():
        return False
    return json.loads(cfg_file.read_text()).get("model_type") == COMMITTEE_MODEL_TYPE


def _read_committee_config(folder: Path) -> tuple[ModelConfig, dict[str, Any], int, str, list[str] | None]:
    if not is_committee_folder(folder):
        raise ValueError(f"{folder}: not a committee folder (config.json model_type is not {COMMITTEE_MODEL_TYPE})")
    cfg, raw = read_model_config(folder)
    info = raw["tinylm"]["committee"]
    if info.get("format", 1) > FORMAT_VERSION:
        raise ValueError(f"{folder}: committee format {info['format']} is newer than this tinylm reads")
    head = raw["tinylm"]["head"]
    labels = label_names_of(folder) if head == "classification" else None
    return cfg, raw, int(info["members"]), head, labels


def load_committee(folder: str | os.PathLike, device: str | torch.device | None = None) -> Committee:
    """Load a folder written by save_committee (eval mode)."""
    folder = Path(folder)
    cfg, _, n, head, labels = _read_committee_config(folder)
    state: dict[str, Tensor] = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt", device=str(device or "cpu")) as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            state[name] = f.get_tensor(name)
    state = from_hf_state_dict(state)
    with torch.device("meta"):
        template = build_member(cfg, head, len(labels) if labels else None)
    param_names = {k for k, _ in template.named_parameters()}
    params = {k: v.requires_grad_(True) for k, v in state.items() if k in param_names}
    buffers = {k: v for k, v in state.items() if k not in param_names}
    committee = Committee(cfg, n, params, buffers, head=head, num_labels=len(labels) if labels else None,
                          label_names=labels)
    return committee.eval()


def extract_member(folder: str | os.PathLike, i: int, out_folder: str | os.PathLike) -> Path:
    """Write member i of a committee folder as an ordinary model folder (checkpoint.save_model), reading only
    that member's slice of each tensor. tinylm's load_model loads it, and transformers too for plain BERTs."""
    folder = Path(folder)
    cfg, _, n, head, labels = _read_committee_config(folder)
    if not 0 <= i < n:
        raise IndexError(f"member {i} of a committee of {n}")
    state: dict[str, Tensor] = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt", device="cpu") as f:
        for name in f.keys():  # noqa: SIM118
            state[name] = f.get_slice(name)[i:i + 1][0].clone()
    with torch.device("meta"):
        model = build_member(cfg, head, len(labels) if labels else None)
    model.load_state_dict(from_hf_state_dict(state), assign=True)
    tokenizer = None
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
        from tinylm.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(folder)
    meta: dict[str, Any] = {"committee": {"source": str(folder), "member": i, "members": n}}
    if (folder / "tinylm_meta.json").is_file():
        meta["committee_meta"] = json.loads((folder / "tinylm_meta.json").read_text())
    return save_model(model, out_folder, tokenizer, label_names=labels, extra=meta)


def load_classifier(path: str | os.PathLike, device: str | torch.device | None = None) -> ClassifierModel:
    """The classifier of a model folder, a committee folder, or a run folder (its model/), in eval mode, on
    `device` (runtime.pick_device: CUDA when present unless told otherwise)."""
    folder = classifier_folder(path)  # a one-line error for a pre-trained (MLM) folder or a missing one
    model: Any = load_committee(folder) if is_committee_folder(folder) else load_model(folder, head="classification")
    return model.to(pick_device(str(device) if device is not None else None)).eval()
