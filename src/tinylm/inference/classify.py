"""Texts in, class probabilities out: the one prediction path of tinylm's classifiers.

A classifier is a fine-tuned model.BertForClassification or a classification committee.Committee, whose answer is
the soft vote: the mean of its members' softmaxes (or, with per_member=True, every member's softmax, from which the
votes of any subset follow). `load_classifier` loads either from a model, committee or run folder.

Texts become arrays in one place, `encode`, and are batched by length in one place, `by_length`; a runtime maps
one encoded batch to probabilities. `class_probabilities` is the PyTorch runtime's computation; Predictor
(predictor.py) also runs ONNX graphs through `by_length`, so every runtime sees exactly the same ids.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tinylm.checkpoint import load_model, model_folder
from tinylm.committee import Committee, is_committee_folder, load_committee, soft_vote
from tinylm.config import Precision
from tinylm.data.encoding import encode, map_by_length
from tinylm.model import BertForClassification
from tinylm.runtime import autocast, effective_precision, pick_device

ClassifierModel = BertForClassification | Committee
# One encoded batch (input_ids, attention_mask, int64 [B, L]) -> probabilities [..., B, C].
BatchRuntime = Callable[[np.ndarray, np.ndarray], np.ndarray]


def load_classifier(path: str | os.PathLike, device: str | torch.device | None = None) -> ClassifierModel:
    """The classifier of a model folder, a committee folder, or a run folder (its model/), in eval mode, on
    `device` (runtime.pick_device: CUDA when present unless told otherwise)."""
    folder = model_folder(path)
    if is_committee_folder(folder):
        model: Any = load_committee(folder)
        if model.head != "classification":
            raise ValueError(f"{path}: an MLM committee gives no class probabilities")
    else:
        model = load_model(folder, head="classification")
        if not isinstance(model, BertForClassification):
            raise ValueError(f"{path}: not a classification model")
    return model.to(pick_device(str(device) if device is not None else None)).eval()


def class_probabilities(
    model: ClassifierModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    precision: Precision = "fp32",
    members: Sequence[int] | None = None,
    per_member: bool = False,
    temperature: float = 1.0,
) -> Tensor:
    """fp32 class probabilities of one encoded batch: softmax(logits / temperature), [B, C]; for a committee the
    soft vote over `members` (default all), or with per_member=True each member's, [n_members, B, C]."""
    if isinstance(model, Committee):
        model.require_classifier()
        with autocast(input_ids.device, precision):
            logits = model(input_ids, attention_mask, members=members).logits
    else:
        if members is not None or per_member:
            raise ValueError("members and per_member apply to a committee only")
        with autocast(input_ids.device, precision):
            logits = model(input_ids, attention_mask, cls_only=True).logits
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    probs = torch.softmax(logits, dim=-1)
    return soft_vote(probs) if isinstance(model, Committee) and not per_member else probs


def by_length(runtime: BatchRuntime, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int,
              num_labels: int, lead: tuple[int, ...] = ()) -> np.ndarray:
    """float32 [*lead, len(texts), num_labels]: texts encoded (cut at max_length tokens) in batches of similar
    length, each batch through `runtime`; rows come back in input order."""
    def run(batch: list[str]) -> np.ndarray:
        enc = encode(tokenizer, batch, max_length)
        return runtime(enc["input_ids"], enc["attention_mask"])

    return map_by_length(texts, run, batch_size, lead, num_labels)


@torch.inference_mode()
def predict_proba(
    model: ClassifierModel,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    precision: Precision = "fp32",
    device: torch.device | None = None,
    members: Sequence[int] | None = None,
    per_member: bool = False,
    temperature: float = 1.0,
) -> np.ndarray:
    """Class probabilities of texts, float32 [len(texts), C], or [n_members, len(texts), C] for a committee with
    per_member=True (see class_probabilities). Runs on `device` (default: the model's) at `precision` (fp16 on a
    CPU becomes bf16; bf16 on a GPU without it becomes fp16)."""
    device = device or next(model.parameters()).device
    precision = effective_precision(precision, device)
    model.eval()
    max_length = min(max_length, model.cfg.max_position_embeddings)
    lead: tuple[int, ...] = ()
    if isinstance(model, Committee):
        model.require_classifier()
        if per_member:
            lead = (model.n if members is None else len(members),)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids, mask = torch.from_numpy(input_ids).to(device), torch.from_numpy(attention_mask).to(device)
        return class_probabilities(model, ids, mask, precision=precision, members=members, per_member=per_member,
                                   temperature=temperature).cpu().numpy()

    return by_length(run, tokenizer, texts, max_length, batch_size, model.num_labels or 0, lead)


def format_predictions(probs: np.ndarray, label_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of class probabilities -> [{"label", "probabilities": {name: p rounded to 6 places}}]."""
    return [
        {"label": label_names[int(p.argmax())],
         "probabilities": {n: round(float(x), 6) for n, x in zip(label_names, p, strict=True)}}
        for p in probs
    ]


__all__ = ["ClassifierModel", "by_length", "class_probabilities", "format_predictions", "load_classifier",
           "predict_proba"]
