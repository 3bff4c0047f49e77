"""`tinylm export onnx`: a fine-tuned model or a whole soft committee as one ONNX graph, checked against PyTorch.

The graph takes input_ids and attention_mask (int64 [batch, sequence], both axes dynamic) and returns
probabilities (float32 [batch, labels]): inference.ProbabilityGraph traced, i.e. for a committee the mean of its
members' softmaxes (the soft vote) computed by committee.py's stacked, batched forward pass, so N members are one
graph with one op sequence, not N graphs; a plain model is exported as a committee of one (the same function,
with the last layer at [CLS] only).

Why the TorchScript exporter (dynamo=False): model.py and committee.py skip the attention mask when a batch has
no padding (`if not bool(attention_mask.all())`), a data-dependent branch that torch.export refuses. Tracing
records the branch taken by the example batch, so the example is padded: the graph always applies the mask, and a
mask of ones is exactly no mask. Other traced constants (the sequence-length check, committee chunking) are
either checked by the caller (encode truncates to the model's positions) or switched off for the export.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import tinylm.committee as committee_module
from tinylm.checkpoint import write_json
from tinylm.committee import Committee
from tinylm.inference import ONNX_FILE, Predictor, ProbabilityGraph, describe_folder, encode, load_classifier
from tinylm.tokenizer import load_tokenizer

OPSET = 17  # the first opset with LayerNormalization; onnxruntime >= 1.14 runs it
# Parity: the largest absolute difference between PyTorch's and ONNX Runtime's class probabilities (fp32 both) over
# the check texts. Measured differences are ~1e-7 (float rounding of a reordered but identical computation).
PARITY_TOLERANCE = 1e-5
CHECK_TEXTS = 64
CHECK_BATCH = 8  # parity batches of 8 mix lengths, so padding and the attention mask are exercised


class _StaticLayerNormShapes:
    """torch.nn.functional, except that layer_norm's normalized_shape is made of Python ints.

    committee.py passes (x.shape[-1],); under tracing that size is a graph value, which the ONNX LayerNormalization
    symbolic refuses. The hidden size is fixed, so turning it into a constant changes nothing else."""

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)

    @staticmethod
    def layer_norm(x: Tensor, normalized_shape: Sequence[Any], *args: Any, **kwargs: Any) -> Tensor:
        return F.layer_norm(x, tuple(int(s) for s in normalized_shape), *args, **kwargs)


@contextlib.contextmanager
def _exportable(committee: Committee) -> Iterator[None]:
    """Export-time settings: no committee chunking (a traced chunk count would be baked in for the example's
    shape), static layer-norm shapes in committee.py, and no tracer warnings about the traced branches."""
    chunking = committee.chunk_elements
    committee.chunk_elements = 0
    saved_f = committee_module.F
    committee_module.F = _StaticLayerNormShapes()  # type: ignore[assignment]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        committee_module.F = saved_f
        committee.chunk_elements = chunking


def default_check_texts(count: int = CHECK_TEXTS) -> list[str]:
    """Real AG News test texts from the sample the package ships (any English text would do for parity)."""
    from tinylm.data import load_task
    from tinylm.demo import DEMO_DATA

    task = load_task("ag_news", DEMO_DATA, train_per_label=0, test_per_label=max(1, count // 4), seed=42)
    return [e.text for e in task.test][:count]


def parity(folder: Path, graph: Path, texts: Sequence[str], batch_size: int = CHECK_BATCH) -> dict[str, Any]:
    """PyTorch vs ONNX Runtime probabilities on the same encoded batches: max |diff| and argmax agreement."""
    torch_side = Predictor.load(folder, "torch", device="cpu")
    onnx_side = Predictor.load(folder, "onnx", onnx_path=graph)
    p_torch = torch_side.predict_proba(texts, batch_size=batch_size)
    p_onnx = onnx_side.predict_proba(texts, batch_size=batch_size)
    return {
        "texts": len(texts),
        "batch_size": batch_size,
        "max_abs_diff": float(np.abs(p_torch - p_onnx).max()),
        "same_argmax": int((p_torch.argmax(1) == p_onnx.argmax(1)).sum()),
    }


def export_onnx(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    opset: int = OPSET,
    check_texts: Sequence[str] | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Export a fine-tuned model folder (plain or committee) to ONNX and check parity with PyTorch.

    Writes `out` (default MODEL_FOLDER/model.onnx) and beside it `model.onnx.json` with the export report. A graph
    whose probabilities differ from PyTorch's by more than `tolerance` is deleted and the call raises."""
    from tinylm.pretrain import model_folder

    started = time.perf_counter()
    folder = model_folder(path)
    graph = Path(out) if out else folder / ONNX_FILE
    graph.parent.mkdir(parents=True, exist_ok=True)
    info = describe_folder(folder)
    tokenizer = load_tokenizer(folder)
    # Two texts of different lengths: a padded example, so the traced graph keeps the attention mask.
    example = encode(tokenizer, ["a short text", "a somewhat longer text, so that the first one is padded"],
                     info["max_length"])
    graph_module = ProbabilityGraph(load_classifier(folder).cpu()).eval()
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "probabilities": {0: "batch"}}
    tmp = graph.with_name(f".{graph.name}.{os.getpid()}.tmp")
    with _exportable(graph_module.committee):
        torch.onnx.export(
            graph_module, (torch.from_numpy(example["input_ids"]), torch.from_numpy(example["attention_mask"])),
            str(tmp), input_names=["input_ids", "attention_mask"], output_names=["probabilities"],
            dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )
    graph_module.eval()  # the exporter restores the module's training flag onto every submodule
    check = parity(folder, tmp, check_texts if check_texts is not None else default_check_texts())
    report: dict[str, Any] = {
        "source": str(folder), "onnx": str(graph), "opset": opset, **info,
        "inputs": {"input_ids": "int64 [batch, sequence]", "attention_mask": "int64 [batch, sequence]"},
        "output": {"probabilities": "float32 [batch, labels]" + (", the soft vote" if info["members"] else "")},
        "parity": {**check, "tolerance": tolerance, "reference": "PyTorch fp32, same encoded batches"},
        "versions": _versions(),
        "seconds": 0.0,
    }
    if not check["max_abs_diff"] <= tolerance:  # also catches NaN
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX parity check failed: max |p_torch - p_onnx| = {check['max_abs_diff']:.3g} "
                           f"> tolerance {tolerance:g} on {check['texts']} texts")
    os.replace(tmp, graph)
    report["bytes"] = graph.stat().st_size
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_json(report_path(graph), report)
    return report


def report_path(graph: Path) -> Path:
    """model.onnx -> model.onnx.json: the export report lives beside its graph."""
    return graph.with_name(graph.name + ".json")


def _versions() -> dict[str, str]:
    import onnxruntime

    import tinylm

    return {"tinylm": tinylm.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


__all__ = [
    "OPSET", "PARITY_TOLERANCE", "ProbabilityGraph", "default_check_texts", "export_onnx", "parity", "report_path",
]
