"""`tinylm export onnx`: a fine-tuned model or a whole soft committee as one ONNX graph, checked against PyTorch.

The graph takes input_ids and attention_mask (int64 [batch, sequence], both axes dynamic) and returns
probabilities (float32 [batch, labels]): inference.predictor.ProbabilityGraph traced, i.e. for a committee the mean of
its members' softmaxes (the soft vote) computed by model.py's forward pass over the stacked members, so N members are
one graph with one op sequence, not N graphs; a plain model runs the same forward pass (both with the last layer
at [CLS] only).

Why the TorchScript exporter (dynamo=False): model.encode skips the attention mask when a batch has
no padding (`if not bool(attention_mask.all())`), a data-dependent branch that torch.export refuses. Tracing
records the branch taken by the example batch, so the example is padded: the graph always applies the mask, and a
mask of ones is exactly no mask. Other traced constants (the sequence-length check, committee chunking) are
either checked by the caller (encode truncates to the model's positions) or switched off for the export, and
the layer norms pass their size as a Python int, which the ONNX LayerNormalization symbolic needs.

int8 (`quantize="int8"`): the checked fp32 graph through ONNX Runtime's dynamic quantization (weights stored as int8,
activations quantized per batch at run time; no calibration data needed). Its probabilities differ from PyTorch's by
far more than the fp32 tolerance, so an int8 graph is judged by what matters, accuracy: the report compares PyTorch
fp32 and the graph on the task's test sample (the one named by the folder's stored fine-tuning config, or given) and
refuses a graph that loses more than `accuracy_tolerance` points. fp32 exports get the same accuracy check.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.committee import ClassifierModel, Committee, load_classifier
from tinylm.data import DataError, Example, TaskData
from tinylm.data.encoding import encode
from tinylm.folders import classifier_folder
from tinylm.inference.predictor import ONNX_FILE, Predictor, ProbabilityGraph, describe_folder
from tinylm.io import write_json
from tinylm.tokenizer import load_tokenizer

OPSET = 17  # the first opset with LayerNormalization; onnxruntime >= 1.14 runs it
# Parity: the largest absolute difference between PyTorch's and ONNX Runtime's class probabilities (fp32 both) over
# the check texts; float rounding of a reordered but identical computation stays far below it.
PARITY_TOLERANCE = 1e-5
CHECK_TEXTS = 64
CHECK_BATCH = 8  # parity batches of 8 mix lengths, so padding and the attention mask are exercised
INT8_FILE = "model.int8.onnx"  # `--quantize int8` writes it into the model folder unless told otherwise
QUANTIZE = ("int8",)
ACCURACY_TOLERANCE = 0.5  # accuracy points on the test sample a graph may lose against PyTorch fp32


@contextlib.contextmanager
def _exportable(model: ClassifierModel) -> Iterator[None]:
    """Export-time settings: no committee chunking (a traced chunk count would be baked in for the example's
    shape), and no tracer warnings about the traced branches."""
    committee = model if isinstance(model, Committee) else None
    chunking = committee.chunk_elements if committee else 0
    if committee:
        committee.chunk_elements = 0
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        if committee:
            committee.chunk_elements = chunking


def default_check_texts(count: int = CHECK_TEXTS) -> list[str]:
    """Real AG News test texts from the sample the package ships (any English text would do for parity)."""
    from tinylm.data import load_task
    from tinylm.data.paths import DEMO_DATA

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
    quantize: str | None = None,
    accuracy_tolerance: float | None = ACCURACY_TOLERANCE,
    task_data: TaskData | None = None,
    root: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export a fine-tuned model folder (plain or committee) to ONNX and check it against PyTorch.

    Writes `out` (default MODEL_FOLDER/model.onnx, or model.int8.onnx with quantize="int8") and beside it
    `<out>.json` with the export report. The fp32 graph's probabilities must match PyTorch's within `tolerance`;
    the written graph's test accuracy (task_data's test sample, else the one the folder's fine-tuning config
    names, loaded from `root`) may trail PyTorch fp32's by at most `accuracy_tolerance` points (None: report
    only). A graph failing either check is deleted and the call raises. Without a test sample an fp32 export
    reports why and goes on; an int8 export, which only the accuracy check vouches for, is refused."""
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if accuracy_tolerance is not None and not accuracy_tolerance >= 0:
        raise ValueError(f"accuracy tolerance must be >= 0 points, got {accuracy_tolerance}")
    started = time.perf_counter()
    folder = classifier_folder(path)  # checked before anything is written
    graph = Path(out) if out else folder / (INT8_FILE if quantize else ONNX_FILE)
    info = describe_folder(folder)
    graph.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(graph)
    tmp = graph.with_name(f".{graph.name}.{os.getpid()}.tmp")
    trace(folder, tmp, info["max_length"], opset)
    texts = check_texts if check_texts is not None else default_check_texts()
    report: dict[str, Any] = {
        "source": str(folder), "onnx": str(graph), "opset": opset, **info, "quantize": quantize,
        "inputs": {"input_ids": "int64 [batch, sequence]", "attention_mask": "int64 [batch, sequence]"},
        "output": {"probabilities": "float32 [batch, labels]" + (", the soft vote" if info["members"] else "")},
    }
    written = _checked(report, folder, tmp, texts, tolerance, quantize, accuracy_tolerance, task_data, root)
    os.replace(written, graph)
    report["bytes"] = graph.stat().st_size
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_json(report_path(graph), report)
    return report


def remove_stale_temporaries(graph: Path) -> list[Path]:
    """Delete the temporary files an earlier export of `graph` left behind when it was killed
    (.NAME.PID.tmp and .NAME.PID.tmp.int8, PID no longer running); a running export's are kept."""
    removed = []
    for tmp in graph.parent.glob(f".{glob.escape(graph.name)}.*.tmp*"):
        pid = tmp.name[len(graph.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def trace(folder: Path, out: Path, max_length: int, opset: int) -> None:
    """Trace the folder's ProbabilityGraph (on the CPU) into the ONNX file `out`, batch and sequence dynamic."""
    # Two texts of different lengths: a padded example, so the traced graph keeps the attention mask.
    texts = ["a short text", "a somewhat longer text, so that the first one is padded"]
    example = encode(load_tokenizer(folder), texts, max_length)
    graph_module = ProbabilityGraph(load_classifier(folder, "cpu")).eval()
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "probabilities": {0: "batch"}}
    with _exportable(graph_module.model):
        torch.onnx.export(
            graph_module, (torch.from_numpy(example["input_ids"]), torch.from_numpy(example["attention_mask"])),
            str(out), input_names=["input_ids", "attention_mask"], output_names=["probabilities"],
            dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )


def _checked(report: dict[str, Any], folder: Path, tmp: Path, texts: Sequence[str], tolerance: float,
             quantize: str | None, accuracy_tolerance: float | None, task_data: TaskData | None,
             root: str | os.PathLike | None) -> Path:
    """Check the traced fp32 graph `tmp` (parity), quantize it if asked, check the result's accuracy; fills in the
    report and returns the graph to keep. Every temporary graph is deleted; a failing one too, and the call raises."""
    written = tmp
    try:
        check = parity(folder, tmp, texts)
        report.update(parity={**check, "tolerance": tolerance, "reference": "PyTorch fp32, same encoded batches"},
                      versions=_versions(), seconds=0.0)
        if not check["max_abs_diff"] <= tolerance:  # also catches NaN
            raise RuntimeError(f"ONNX parity check failed: max |p_torch - p_onnx| = {check['max_abs_diff']:.3g} "
                               f"> tolerance {tolerance:g} on {check['texts']} texts")
        if quantize:
            written = tmp.with_name(tmp.name + ".int8")
            report["quantization"] = quantize_int8(tmp, written)
            # The fp32 graph passed the parity check above; the int8 graph's differences are reported, and its
            # accuracy below is what decides.
            report["fp32_parity"], report["parity"] = report["parity"], {
                **parity(folder, written, texts), "tolerance": None,
                "reference": "PyTorch fp32, same encoded batches (int8: reported, judged by accuracy)"}
        report["accuracy"] = graph_accuracy(folder, written, quantize, accuracy_tolerance, task_data, root)
    except BaseException:
        written.unlink(missing_ok=True)
        raise
    finally:
        if written != tmp:  # the fp32 graph that was quantized
            tmp.unlink(missing_ok=True)
    return written


def quantize_int8(graph: Path, out: Path) -> dict[str, Any]:
    """ONNX Runtime's dynamic quantization of `graph` into `out`: MatMul weights and the embedding tables (Gather)
    stored as int8 with one scale per tensor, activations quantized to uint8 per batch at run time. Dynamic, not
    static: it needs no calibration texts, and a text's activation range is its own."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(graph), str(out), weight_type=QuantType.QInt8)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weights": "int8, per tensor",
            "activations": "uint8, dynamic per batch"}


def stored_test_sample(folder: Path, root: str | os.PathLike | None = None, task: str | None = None,
                       test_per_label: int | None = None) -> TaskData:
    """The test sample of the task a model folder was fine-tuned (or distilled) on, from the fine-tuning config it
    stores, through fine-tuning's own data path; `task` (a built-in task) overrides what the folder stores."""
    from tinylm.config import FinetuneConfig
    from tinylm.data.sample import task_sample
    from tinylm.train.distill import stored_finetune_config

    cfg = FinetuneConfig(task=task) if task else stored_finetune_config(folder)
    if cfg is None:
        raise ValueError(f"{folder} stores no fine-tuning config naming its task; give the task (--task)")
    return task_sample(cfg, root, test_only=True, test_per_label=test_per_label)  # as `tinylm evaluate` loads it


def graph_accuracy(folder: Path, graph: Path, quantize: str | None, tolerance: float | None,
                   task_data: TaskData | None, root: str | os.PathLike | None) -> dict[str, Any]:
    """Test accuracy of PyTorch fp32 and of the graph on the same texts; raises when the graph loses more than
    `tolerance` points. Without a test sample: the reason, or for an int8 graph (with a tolerance) an error."""
    try:
        data = task_data or stored_test_sample(folder, root)
    except (DataError, ValueError, OSError) as err:
        if quantize and tolerance is not None:
            raise ValueError(f"an int8 graph is checked on the task's test sample, and there is none: {err}") from None
        return {"skipped": str(err)}
    torch_acc, graph_acc = sample_accuracy(folder, graph, data.test)
    loss = round(100 * (torch_acc - graph_acc), 4)
    result = {"task": data.name, "texts": len(data.test), "torch_fp32": torch_acc, "onnx": graph_acc,
              "loss_points": loss, "tolerance_points": tolerance}
    if tolerance is not None and loss > tolerance:
        raise RuntimeError(f"ONNX accuracy check failed: the {quantize or 'fp32'} graph's test accuracy on "
                           f"{data.name} ({len(data.test)} texts) is {100 * graph_acc:.2f} %, PyTorch fp32's "
                           f"{100 * torch_acc:.2f} %: it loses {loss:.2f} points > tolerance {tolerance:g}")
    return result


def sample_accuracy(folder: Path, graph: Path, examples: Sequence[Example]) -> tuple[float, float]:
    """(PyTorch fp32 accuracy, graph accuracy) on the examples, each runtime through Predictor as served."""
    texts, labels = [e.text for e in examples], np.array([e.label for e in examples])
    if not texts:
        raise ValueError("no test examples to measure accuracy on")
    torch_probs = Predictor.load(folder, "torch", device="cpu").predict_proba(texts)
    graph_probs = Predictor.load(folder, "onnx", onnx_path=graph).predict_proba(texts)
    return float(np.mean(torch_probs.argmax(1) == labels)), float(np.mean(graph_probs.argmax(1) == labels))


def report_path(graph: Path) -> Path:
    """model.onnx -> model.onnx.json: the export report lives beside its graph."""
    return graph.with_name(graph.name + ".json")


def _versions() -> dict[str, str]:
    import onnxruntime

    import tinylm

    return {"tinylm": tinylm.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


__all__ = [
    "ACCURACY_TOLERANCE", "INT8_FILE", "OPSET", "PARITY_TOLERANCE", "ProbabilityGraph", "default_check_texts",
    "export_onnx", "graph_accuracy", "parity", "quantize_int8", "report_path", "stored_test_sample", "trace",
]
