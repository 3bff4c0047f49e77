"""Which ONNX Runtime dynamic-int8 recipe pays at batch 1 for a committee member's shape and for the deep model.

    TINYLM_THREADS=1 python benchmarks/int8_recipes.py COMMITTEE_MODEL_FOLDER DEEP_MODEL_FOLDER

Member 0 of the committee is extracted as a plain model; each model is exported to fp32 ONNX (tinylm's graph)
and quantized with several `quantize_dynamic` settings, optionally after ONNX Runtime's `quant_pre_process`.
Each graph answers 60 AG News texts one at a time, the graphs taking turns for 5 rounds in one process; p50
latency, speed-up over fp32 and agreement of the predicted class with fp32 go to
benchmarks/results/int8_recipes.json. Per-channel weights do not apply: the graph's matrix products carry the
committee's member axis.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from tinylm.committee import extract_member
from tinylm.data.encoding import encode
from tinylm.inference.onnx import export_onnx
from tinylm.inference.predictor import OnnxRuntime
from tinylm.tokenizer import load_tokenizer

AG_NEWS = Path(__file__).resolve().parents[1] / "src" / "tinylm" / "demo_data" / "ag_news" / "test.csv"
RECIPES: dict[str, tuple[bool, dict[str, Any]]] = {  # name: (pre-process first, quantize_dynamic settings)
    "default": (False, {}),
    "matmul-only": (False, {"op_types_to_quantize": ["MatMul"]}),
    "reduce-range": (False, {"reduce_range": True}),
    "pre+default": (True, {}),
    "pre+matmul-only": (True, {"op_types_to_quantize": ["MatMul"]}),
}


def graphs_of(folder: Path, work: Path, texts: list[str]) -> dict[str, Path]:
    fp32, pre = work / "fp32.onnx", work / "pre.onnx"
    export_onnx(folder, fp32, check_texts=texts[:4], accuracy_tolerance=None)
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    graphs = {"fp32": fp32}
    for name, (pre_process, settings) in RECIPES.items():
        graphs[name] = work / f"{name}.onnx"
        quantize_dynamic(str(pre if pre_process else fp32), str(graphs[name]), weight_type=QuantType.QInt8,
                         **settings)
    return graphs


def time_graphs(graphs: dict[str, Path], folder: Path, texts: list[str], rounds: int = 5) -> dict[str, Any]:
    tokenizer = load_tokenizer(folder)
    batches = [encode(tokenizer, [t], 128) for t in texts]
    runtimes = {name: OnnxRuntime(path, threads=1) for name, path in graphs.items()}
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(rounds):
        for name, runtime in runtimes.items():
            for b in batches:
                start = time.perf_counter()
                runtime(b["input_ids"], b["attention_mask"])
                times[name].append(time.perf_counter() - start)
    answers = {name: np.concatenate([rt(b["input_ids"], b["attention_mask"]) for b in batches])
               for name, rt in runtimes.items()}
    p50 = {name: 1000 * float(np.median(t)) for name, t in times.items()}
    return {name: {"p50_ms": round(p50[name], 3), "speedup_vs_fp32": round(p50["fp32"] / p50[name], 2),
                   "class_agreement_with_fp32": float((answers[name].argmax(1) == answers["fp32"].argmax(1)).mean())}
            for name in runtimes}


def main() -> None:
    committee, deep = Path(sys.argv[1]), Path(sys.argv[2])
    texts = [row[1] + " " + row[2] for row in csv.reader(AG_NEWS.open(encoding="utf-8"))][:60]
    results: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "texts": len(texts), "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {"member (committee's shape)": extract_member(committee, 0, work / "member"), "deep": deep}
        for name, folder in models.items():
            (work / name).mkdir()
            results[name] = time_graphs(graphs_of(folder, work / name, texts), folder, texts)
            print(name, json.dumps(results[name]), flush=True)
    out = Path(__file__).resolve().parent / "results" / "int8_recipes.json"
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
