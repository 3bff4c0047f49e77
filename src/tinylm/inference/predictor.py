"""Texts in, labels and class probabilities out, through PyTorch or ONNX Runtime: what `tinylm predict` and the
HTTP server answer with.

A runtime is a callable (input_ids, attention_mask) -> probabilities [B, C]; `Predictor` adds the tokenizer, the
labels and train.evaluate.by_length, the batching every prediction path shares, so the PyTorch path, the ONNX path, the
ONNX parity check and the server all feed a model exactly the same ids. Plain fine-tuned models and soft committees
are both handled (a committee answers with its soft vote).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerFast

from tinylm.checkpoint import label_names_of, read_model_config
from tinylm.committee import ClassifierModel, Committee, is_committee_folder, load_classifier
from tinylm.folders import classifier_folder
from tinylm.model import BertForClassification
from tinylm.tokenizer import load_tokenizer
from tinylm.train.evaluate import by_length, class_probabilities

RuntimeName = Literal["torch", "onnx"]
RUNTIMES: tuple[RuntimeName, ...] = ("torch", "onnx")
ONNX_FILE = "model.onnx"  # `tinylm export onnx` writes it into the model folder unless told otherwise
MAX_LENGTH = 128  # tokens per text, as in fine-tuning and evaluation (capped by the model's positions)


class Runtime(Protocol):
    name: str

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class ProbabilityGraph(nn.Module):
    """ids and mask in, class probabilities out: what both runtimes compute (the ONNX graph is this module, traced).

    A committee answers with its soft vote (train.evaluate.class_probabilities). Both run model.py's forward pass with
    the last layer at [CLS] only (queries, attention output and feed-forward), the same function (equal up to
    float rounding) with fewer FLOPs, as fine-tuning's evaluation does."""

    def __init__(self, model: ClassifierModel):
        super().__init__()
        if isinstance(model, Committee):
            model.require_classifier()
        elif not isinstance(model, BertForClassification):
            raise ValueError(f"not a classifier: {type(model).__name__}")
        self.model = model.eval()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return class_probabilities(self.model, input_ids, attention_mask)


class TorchRuntime:
    """A tinylm classifier or committee in PyTorch, fp32, on the device its weights are on."""

    name = "torch"

    def __init__(self, model: ClassifierModel):
        self.graph = ProbabilityGraph(model).eval()
        self.device = next(self.graph.parameters()).device

    @torch.inference_mode()
    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids, mask = torch.from_numpy(input_ids).to(self.device), torch.from_numpy(attention_mask).to(self.device)
        return self.graph(ids, mask).cpu().numpy()


class OnnxRuntime:
    """A graph written by tinylm.inference.onnx (inputs input_ids and attention_mask, output probabilities)."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort  # only this runtime needs it

        options = ort.SessionOptions()
        threads = threads or int(os.environ.get("TINYLM_THREADS") or 0)
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.session.run(["probabilities"], feeds)[0]


def format_predictions(probs: np.ndarray, label_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of class probabilities -> [{"label", "probabilities": {name: p rounded to 6 places}}]."""
    return [
        {"label": label_names[int(p.argmax())],
         "probabilities": {n: round(float(x), 6) for n, x in zip(label_names, p, strict=True)}}
        for p in probs
    ]


def describe_folder(folder: Path) -> dict[str, Any]:
    """What a client may want to know about a model folder: kind, members, labels, positions."""
    cfg, raw = read_model_config(folder)
    committee = is_committee_folder(folder)
    return {
        "kind": "committee" if committee else "model",
        "members": int(raw["num_members"]) if committee else None,
        "labels": label_names_of(folder),
        "max_length": min(MAX_LENGTH, cfg.max_position_embeddings),
    }


@dataclass
class Predictor:
    """A fine-tuned model folder (plain or committee) behind one runtime: texts in, labels and probabilities out.

    `model` is the PyTorch classifier behind the torch runtime (None behind an ONNX graph), for callers that
    evaluate it with train.evaluate.predict_proba at another precision or batch size."""

    runtime: Runtime
    tokenizer: PreTrainedTokenizerFast
    label_names: list[str]
    max_length: int
    source: Path
    info: dict[str, Any] = field(default_factory=dict)
    model: ClassifierModel | None = None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        runtime: RuntimeName = "torch",
        *,
        device: str | None = None,
        onnx_path: str | os.PathLike | None = None,
    ) -> Predictor:
        """A model, committee or run folder behind `runtime`; torch runs on `device` (default: CUDA when present),
        onnx on the CPU, from `onnx_path` (default: the folder's model.onnx)."""
        folder = classifier_folder(path)  # one line for a pre-trained (MLM) folder, before anything loads
        info = describe_folder(folder)
        model = None
        if runtime == "torch":
            model = load_classifier(folder, device)
            backend: Runtime = TorchRuntime(model)
        elif runtime == "onnx":
            graph = Path(onnx_path) if onnx_path else folder / ONNX_FILE
            if not graph.is_file():
                raise FileNotFoundError(f"{graph}: no ONNX graph; run `tinylm export onnx {path}` first")
            if device and device != "cpu":
                raise ValueError("the onnx runtime runs on the CPU only; leave out --device")
            backend = OnnxRuntime(graph)
            info["onnx_file"] = str(graph)
        else:
            raise ValueError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        return cls(backend, load_tokenizer(folder), info["labels"], info["max_length"], folder, info, model)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, float32 [len(texts), C]; texts are batched by length to keep padding small."""
        return by_length(self.runtime, self.tokenizer, texts, self.max_length, batch_size, len(self.label_names))

    def format(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """Rows of probabilities -> [{"label", "probabilities": {name: p}}]."""
        return format_predictions(probs, self.label_names)

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        return self.format(self.predict_proba(texts))

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.source), "runtime": self.runtime.name, **self.info}


__all__ = ["MAX_LENGTH", "ONNX_FILE", "RUNTIMES", "OnnxRuntime", "Predictor", "ProbabilityGraph", "Runtime",
           "RuntimeName", "TorchRuntime", "describe_folder", "format_predictions"]
