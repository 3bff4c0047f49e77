"""The deployment sub-commands of `tinylm`:

    tinylm serve MODEL_DIR [--runtime torch|onnx] [--host 127.0.0.1] [--port 8000] [limits and batching flags]
    tinylm export onnx MODEL_DIR [--out FILE] [--opset 17] [--tolerance 1e-5] [--check-texts FILE]
                       [--quantize int8] [--accuracy-tolerance 0.5] [--task NAME] [--test-per-label N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tinylm.cli.common import add_runtime_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    from tinylm.serving.settings import ServeSettings

    s = sub.add_parser("serve", help="serve a fine-tuned model or committee over HTTP (POST /predict)")
    s.add_argument("model", help="a fine-tuned model folder or committee folder (or its run folder)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=port_number, default=8000, help="TCP port, 1-65535 (default 8000)")
    s.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    add_runtime_flags(s)
    defaults = ServeSettings()
    for f in dataclasses.fields(ServeSettings):
        s.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name), help=f"(default {getattr(defaults, f.name)})")

    x = sub.add_parser("export", help="export a model for other runtimes")
    formats = x.add_subparsers(dest="format", required=True)
    o = formats.add_parser("onnx", help="one ONNX graph (a committee too), checked against PyTorch")
    o.add_argument("model", help="a fine-tuned model folder or committee folder (or its run folder)")
    o.add_argument("--out", default=None, help="the .onnx file (default: MODEL_DIR/model.onnx)")
    o.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    o.add_argument("--tolerance", type=float, default=None,
                   help="largest allowed |p_torch - p_onnx| on the check texts (default 1e-5)")
    o.add_argument("--check-texts", default=None,
                   help="a file of texts, one a line, for the parity check (default: 64 shipped AG News texts)")
    o.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8: ONNX Runtime's dynamic quantization of the checked graph (default file "
                        "MODEL_DIR/model.int8.onnx)")
    o.add_argument("--accuracy-tolerance", type=float, default=None,
                   help="most test-accuracy points the graph may lose against PyTorch fp32 (default 0.5)")
    o.add_argument("--task", default=None,
                   help="the built-in task whose test sample measures accuracy (default: the one the model folder's "
                        "fine-tuning config names)")
    o.add_argument("--test-per-label", type=int, default=None, help="test examples per label (default: the stored "
                                                                       "config's, or the task's paper sample)")


def port_number(text: str) -> int:
    """--port's type: an integer from 1 to 65535, checked when the arguments are parsed."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return port


def run_serve(args: argparse.Namespace) -> int:
    from tinylm.serving.server import serve
    from tinylm.serving.settings import ServeSettings

    settings = ServeSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeSettings)})
    serve(args.model, host=args.host, port=args.port, runtime=args.runtime, device=args.device,
          onnx_path=args.onnx, settings=settings, access_log=args.access_log)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """`tinylm export onnx` (the one format)."""
    from tinylm.folders import classifier_folder
    from tinylm.inference.onnx import ACCURACY_TOLERANCE, OPSET, PARITY_TOLERANCE, export_onnx, stored_test_sample

    folder = classifier_folder(args.model)  # a missing or pre-trained (MLM) folder: one line, nothing written
    texts = None
    if args.check_texts:
        texts = [line.strip() for line in Path(args.check_texts).read_text().splitlines() if line.strip()]
        if not texts:
            raise ValueError(f"{args.check_texts}: no texts for the parity check")
    task_data = None
    if args.task or args.test_per_label:  # else export_onnx finds the sample the folder's config names
        task_data = stored_test_sample(folder, args.data, args.task, args.test_per_label)
    accuracy_tolerance = ACCURACY_TOLERANCE if args.accuracy_tolerance is None else args.accuracy_tolerance
    report = export_onnx(args.model, args.out, opset=args.opset or OPSET, check_texts=texts,
                         tolerance=args.tolerance if args.tolerance is not None else PARITY_TOLERANCE,
                         quantize=args.quantize, accuracy_tolerance=accuracy_tolerance, task_data=task_data,
                         root=args.data)
    keys = ("onnx", "kind", "members", "labels", "quantize", "parity", "accuracy", "bytes", "seconds")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    return 0
