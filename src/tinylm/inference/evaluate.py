"""Evaluation (accuracy, macro-F1, per-class report, confusion matrix) and prediction for classifiers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from transformers import PreTrainedTokenizerFast

from tinylm.checkpoint import label_names_of, load_model
from tinylm.committee import SoftVote, is_committee_folder, load_committee
from tinylm.config import Precision
from tinylm.data import Example
from tinylm.data.encoding import encode, map_by_length
from tinylm.model import BertForClassification
from tinylm.runtime import autocast, effective_precision, pick_device
from tinylm.tokenizer import load_tokenizer


@torch.inference_mode()
def predict_proba(
    model: BertForClassification,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    precision: Precision = "fp32",
    device: torch.device | None = None,
) -> np.ndarray:
    """Class probabilities, (len(texts), num_labels). Texts are batched by length to avoid padding."""
    device = device or next(model.parameters()).device
    precision = effective_precision(precision, device)
    model.eval()
    max_length = min(max_length, model.cfg.max_position_embeddings)

    def run(batch: list[str]) -> np.ndarray:
        enc = {k: torch.from_numpy(v).to(device) for k, v in encode(tokenizer, batch, max_length).items()}
        with autocast(device, precision):
            logits = model(enc["input_ids"], enc["attention_mask"]).logits
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    return map_by_length(texts, run, batch_size, (), model.num_labels)


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
    model: BertForClassification,
    tokenizer: PreTrainedTokenizerFast,
    examples: Sequence[Example],
    label_names: list[str],
    *,
    max_length: int = 128,
    precision: Precision = "fp32",
) -> dict[str, Any]:
    probs = predict_proba(model, tokenizer, [e.text for e in examples], max_length=max_length, precision=precision)
    return classification_metrics([e.label for e in examples], probs.argmax(1).tolist(), label_names)


@dataclass
class Classifier:
    """A fine-tuned model folder ready to answer: text in, label and probabilities out."""

    model: BertForClassification | SoftVote
    tokenizer: PreTrainedTokenizerFast
    label_names: list[str]

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> Classifier:
        from tinylm.train.pretrain import model_folder

        folder = model_folder(path)
        if is_committee_folder(folder):  # a soft committee (tinylm.committee) answers with its soft vote
            model = SoftVote(load_committee(folder))
        else:
            model = load_model(folder, head="classification")
        if not isinstance(model, BertForClassification | SoftVote):
            raise ValueError(f"{path}: not a classification model")
        model.to(pick_device(device))
        return cls(model, load_tokenizer(folder), label_names_of(folder))

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        return format_predictions(predict_proba(self.model, self.tokenizer, texts), self.label_names)


def format_predictions(probs: np.ndarray, label_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of class probabilities -> [{"label", "probabilities": {name: p rounded to 6 places}}]."""
    return [
        {"label": label_names[int(p.argmax())],
         "probabilities": {n: round(float(x), 6) for n, x in zip(label_names, p, strict=True)}}
        for p in probs
    ]
