"""Evaluation of a classifier (a model or a committee) on labelled examples: accuracy, macro-F1, per-class report
and confusion matrix, from the probabilities of classify.predict_proba."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from transformers import PreTrainedTokenizerFast

from tinylm.config import Precision
from tinylm.data import Example
from tinylm.inference.classify import ClassifierModel, predict_proba


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


# predict_proba is re-exported: benchmarks/train_speed.py reads it from here.
__all__ = ["classification_metrics", "evaluate_model", "predict_proba"]
