"""How a classifier (a model or a soft committee) is scored: class probabilities of texts, and metrics on labelled
examples (accuracy, macro-F1, per-class report, confusion matrix).

This is the one prediction path: fine-tuning's evaluation calls it, and so do `tinylm predict`, the server and the
ONNX export (inference/predictor.py's ProbabilityGraph is `class_probabilities`). A committee answers with its soft
vote, the mean of its members' softmaxes (or, with per_member=True, every member's softmax, from which the votes of
any subset follow). Texts become arrays in one place, data.encoding.encode, and are batched by length in one place,
`by_length`; a runtime maps one encoded batch to probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from tinylm.committee import Committee, soft_vote
from tinylm.config import Precision
from tinylm.data import Example
from tinylm.data.encoding import encode, map_by_length
from tinylm.model import BertForClassification
from tinylm.runtime import autocast, effective_precision

ClassifierModel = BertForClassification | Committee
# One encoded batch (input_ids, attention_mask, int64 [B, L]) -> probabilities [..., B, C].
BatchRuntime = Callable[[np.ndarray, np.ndarray], np.ndarray]


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


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: list[str]) -> dict[str, Any]:
    labels = list(range(len(label_names)))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": classification_report(
            y_true, y_pred, labels=labels, target_names=label_names, output_dict=True, zero_division=0
        ),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "label_names": label_names,
    }


def evaluate_model(
    model: ClassifierModel,
    tokenizer: PreTrainedTokenizerFast,
    examples: Sequence[Example],
    label_names: list[str],
    *,
    max_length: int = 128,
    precision: Precision = "fp32",
) -> dict[str, Any]:
    """Metrics of the model's argmax (a committee's soft vote) on the examples."""
    probs = predict_proba(model, tokenizer, [e.text for e in examples], max_length=max_length, precision=precision)
    return classification_metrics([e.label for e in examples], probs.argmax(1).tolist(), label_names)


__all__ = ["BatchRuntime", "ClassifierModel", "by_length", "class_probabilities", "classification_metrics",
           "evaluate_model", "predict_proba"]
