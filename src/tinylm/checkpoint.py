"""Model folders in Hugging Face's layout (config.json + model.safetensors + tokenizer files).

A plain BERT folder loads with `transformers.AutoModelForMaskedLM` / `AutoModelForSequenceClassification`;
a convolutional variant keeps the same layout but a model_type of its own, so transformers refuses it instead
of silently dropping the conv weights, and tinylm loads it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tinylm.config import SHIPPED_MODELS, ModelConfig
from tinylm.folders import looks_local
from tinylm.io import atomic_dir, write_json
from tinylm.model import BertForClassification, BertForMLM

CONV_MODEL_TYPE = "tinylm_conv_bert"
SHIPPED = "shipped"  # the name of the default shipped model (the first of config.SHIPPED_MODELS)

# (our name, Hugging Face name) for the encoder; {i} is the layer index.
_ENCODER_NAMES = [
    ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight"),
    ("embeddings.norm.", "embeddings.LayerNorm."),
    ("layers.{i}.query.", "encoder.layer.{i}.attention.self.query."),
    ("layers.{i}.key.", "encoder.layer.{i}.attention.self.key."),
    ("layers.{i}.value.", "encoder.layer.{i}.attention.self.value."),
    ("layers.{i}.attn_out.", "encoder.layer.{i}.attention.output.dense."),
    ("layers.{i}.attn_norm.", "encoder.layer.{i}.attention.output.LayerNorm."),
    ("layers.{i}.ffn_in.", "encoder.layer.{i}.intermediate.dense."),
    ("layers.{i}.ffn_out.", "encoder.layer.{i}.output.dense."),
    ("layers.{i}.ffn_norm.", "encoder.layer.{i}.output.LayerNorm."),
    ("conv.", "conv."),
]
_HEAD_NAMES = [
    ("head_dense.", "cls.predictions.transform.dense."),
    ("head_norm.", "cls.predictions.transform.LayerNorm."),
    ("head_bias", "cls.predictions.bias"),
    ("pooler.", "bert.pooler.dense."),
    ("classifier.", "classifier."),
]


def _rename(name: str, table: list[tuple[str, str]]) -> str | None:
    """Map `name` through the first matching prefix pair in `table` ((src, dst) with optional {i})."""
    for src, dst in table:
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)")
        m = re.match(pattern, name)
        if m:
            out = dst.replace("{i}", m.group(1)) if m.groups() else dst
            return out + name[m.end():]
    return None


def _to_hf_table() -> list[tuple[str, str]]:
    return [("bert." + a, "bert." + b) for a, b in _ENCODER_NAMES] + _HEAD_NAMES


def _from_hf_table() -> list[tuple[str, str]]:
    return [(b, a) for a, b in _to_hf_table()]


def hf_name(name: str) -> str:
    """The Hugging Face BERT name of a tinylm parameter or buffer name (KeyError when it has none)."""
    hf = _rename(name, _to_hf_table())
    if hf is None:
        raise KeyError(f"no Hugging Face name for parameter {name}")
    return hf


def to_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {hf_name(name): tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        ours = _rename(name, _from_hf_table())
        if ours is not None:  # drops HF-only entries (position_ids buffers, a tied decoder copy)
            out[ours] = tensor
    return out


def hf_config_dict(cfg: ModelConfig, model: nn.Module, label_names: list[str] | None = None) -> dict[str, Any]:
    """A BertConfig-compatible config.json, with tinylm's own config kept under "tinylm"."""
    is_cls = isinstance(model, BertForClassification)
    d: dict[str, Any] = {
        "architectures": ["BertForSequenceClassification" if is_cls else "BertForMaskedLM"],
        "model_type": "bert" if cfg.is_plain_bert else CONV_MODEL_TYPE,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": True,
        "tinylm": {"model": cfg.to_dict(), "head": "classification" if is_cls else "mlm"},
    }
    if is_cls:
        names = label_names or [f"LABEL_{i}" for i in range(model.num_labels)]
        d["id2label"] = dict(enumerate(names))
        d["label2id"] = {n: i for i, n in enumerate(names)}
    return d


def save_model(
    model: BertForMLM | BertForClassification,
    path: str | os.PathLike,
    tokenizer: Any = None,
    label_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a model folder atomically. `extra` is stored in tinylm_meta.json (training config, metrics)."""
    config = hf_config_dict(model.cfg, model, label_names)
    return write_model_folder(path, to_hf_state_dict(model), config, tokenizer, extra)


def write_model_folder(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    tokenizer: Any = None,
    extra: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """The one folder layout of every tinylm model (single or committee), written atomically:
    model.safetensors, config.json, the tokenizer's files and `extra` as tinylm_meta.json."""
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", **(metadata or {})})
        write_json(tmp / "config.json", config)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if extra:
            write_json(tmp / "tinylm_meta.json", extra)
    return Path(path)


def shipped_name(name: str | os.PathLike) -> str | None:
    """The shipped model a name means ('shipped': the default one), or None when it names none."""
    name = str(name)
    if name == SHIPPED:
        return next(iter(SHIPPED_MODELS))
    return name if name in SHIPPED_MODELS else None


def shipped_model(name: str | os.PathLike) -> Path | None:
    """The installed folder of the shipped model `name` means (shipped_name), or None when it names none: the one
    resolver of model names, which every flag that takes a model folder goes through (model_folder,
    resolve_model_dir, tokenizer.load_tokenizer). A shipped model that is not installed is a one-line error."""
    key = shipped_name(name)
    if key is None:
        return None
    folder = SHIPPED_MODELS[key]
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the shipped model {key} is not installed ({folder} has no config.json): "
                                "reinstall tinylm, or give a model folder")
    return folder


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A shipped model's name (shipped_model), a local folder, or a Hugging Face hub repo id downloaded to the local
    cache."""
    if (shipped := shipped_model(name_or_path)) is not None:
        return shipped
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{name_or_path}: a file, not a model folder")
    if looks_local(name_or_path):  # a missing local path, not a hub repo id to download
        raise FileNotFoundError(f"{name_or_path}: not found")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as err:  # offline, no such repo, ...: one line, not the hub client's paragraph
        raise FileNotFoundError(f"{name_or_path}: no such folder here, and the Hugging Face hub does not serve it "
                                f"({type(err).__name__})") from None


def read_model_config(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json, so this is not a model folder")
    raw = json.loads(cfg_file.read_text())
    ours = raw.get("tinylm", {}).get("model")
    return ModelConfig.from_dict(ours if ours else raw), raw


def load_model(
    name_or_path: str | os.PathLike, head: str | None = None, num_labels: int | None = None,
    dropout: float | None = None,
) -> BertForMLM | BertForClassification:
    """Load a model folder written by tinylm or any Hugging Face BERT checkpoint.

    head="mlm" or "classification" picks the head (default: the folder's own). Loading an MLM checkpoint with
    head="classification" keeps the encoder and initialises pooler and classifier, as fine-tuning expects.
    dropout, when given, replaces the folder's hidden and attention dropout (fine-tuning's own regulariser).
    """
    path = resolve_model_dir(name_or_path)
    cfg, raw = read_model_config(path)
    cfg = cfg.with_dropout(dropout)
    saved_head = raw.get("tinylm", {}).get("head")
    if saved_head is None:
        saved_head = "classification" if "id2label" in raw and "ForSequence" in str(raw.get("architectures")) else "mlm"
    head = head or saved_head
    if head == "classification":
        n = num_labels or len(raw.get("id2label", {})) or 2
        model: BertForMLM | BertForClassification = BertForClassification(cfg, n)
    elif head == "mlm":
        model = BertForMLM(cfg)
    else:
        raise ValueError(f"unknown head {head!r}; use 'mlm' or 'classification'")
    state = from_hf_state_dict(load_file(str(path / "model.safetensors")))
    expected = set(model.state_dict())
    if head != saved_head:  # encoder only: the other head's weights are fresh
        state = {k: v for k, v in state.items() if k.startswith("bert.")}
    missing = {k for k in expected - set(state) if k.startswith("bert.") or head == saved_head}
    if missing:
        raise KeyError(f"{path}: checkpoint lacks {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=False)
    return model.eval()  # like from_pretrained: ready for inference; training loops call .train()


def label_names_of(path: str | os.PathLike) -> list[str]:
    raw = json.loads((Path(path) / "config.json").read_text())
    id2label = raw.get("id2label", {})
    return [id2label[k] for k in sorted(id2label, key=int)]


def model_folder(path: str | os.PathLike) -> Path:
    """A shipped model's folder (by name, shipped_model), a run folder's model/ subfolder, or the folder itself when
    it is a model folder."""
    if (shipped := shipped_model(path)) is not None:
        return shipped
    path = Path(path)
    if (path / "model" / "config.json").is_file():
        return path / "model"
    return path
