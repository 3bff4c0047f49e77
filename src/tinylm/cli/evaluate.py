"""`tinylm evaluate` (a fine-tuned model's metrics on a test sample) and `tinylm predict` (its labels for texts)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tinylm.cli.common import add_config_flags, add_runtime_flags, print_json, task_or_own_data
from tinylm.data import DataError
from tinylm.data.user_files import SOURCE_HELP, LabelledSource


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="evaluate a fine-tuned model on a task's test sample or your own data")
    e.add_argument("model", help="a fine-tuned model folder (or its run folder)")
    e.add_argument("--task", default=None, help="a built-in task (or your own data: --test-file, ...)")
    add_config_flags(e, LabelledSource, exclude=("validation_fraction",), helps=SOURCE_HELP)
    e.add_argument("--test-per-label", type=int, default=None)
    e.add_argument("--data-seed", type=int, default=None,
                   help="the seed of the test sample and of a --test-fraction split (default: the run's own, else 42)")
    e.add_argument("--out", default=None, help="write the metrics JSON here (default: print)")

    r = sub.add_parser("predict", help="classify texts (arguments, or one per line on stdin)")
    r.add_argument("model", help="a fine-tuned model folder (or its run folder)")
    r.add_argument("texts", nargs="*")
    add_runtime_flags(r)


def run_evaluate(args: argparse.Namespace) -> int:
    from tinylm.data.sample import task_sample
    from tinylm.folders import classifier_folder
    from tinylm.inference.predictor import Predictor
    from tinylm.io import write_json
    from tinylm.train.evaluate import evaluate_model
    from tinylm.train.rows import check_held_out

    source = task_or_own_data(args)
    folder = classifier_folder(args.model)  # a missing or pre-trained (MLM) folder: one line before any data is read
    the_runs_split(args, folder)
    if source.given:
        LabelledSource.of(args).require(train=False)
    clf = Predictor.load(folder, device=args.device)
    # The user's test labels are checked against the model's own; a built-in task's must equal them.
    task = task_sample(args, args.data, test_only=True, label_names=clf.label_names if source.given else None)
    if task.label_names != clf.label_names:
        raise DataError(args.model, f"model labels {clf.label_names} differ from {args.task}'s {task.label_names}")
    check_held_out(args.model, task.test, "; score held-out rows (a --test-file of them, or the run's own split: "
                                          "leave out --test-fraction and --data-seed)")
    metrics = evaluate_model(clf.model, clf.tokenizer, task.test, task.label_names, **trained_scoring(args.model))
    if args.out:
        write_json(args.out, metrics)
    print_json(metrics if not args.out else {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]})
    return 0


def the_runs_split(args: argparse.Namespace, folder: Path) -> None:
    """Set evaluate's --data-seed and --test-fraction to the run's own (the fine-tuning config its folder stores)
    where they are left out, and refuse another split of the very data the run split (its training file or hub
    dataset): its test rows would be rows the run trained on. Without a stored config: seed 42."""
    from tinylm.train.distill import stored_finetune_config

    stored = stored_finetune_config(folder)
    if args.data_seed is None:
        args.data_seed = stored.data_seed if stored is not None else 42
    if stored is None or not LabelledSource.of(args).given:
        return  # a built-in task's test sample comes from its test pool; check_held_out guards the rest
    run = LabelledSource.of(stored)
    if not (run.test_fraction and same_data(LabelledSource.of(args), run)) or args.test_file or args.test_split:
        return
    fraction = run.test_fraction if args.test_fraction is None else args.test_fraction
    if (fraction, args.data_seed) != (run.test_fraction, stored.data_seed):
        raise ValueError(f"{args.model} was fine-tuned on {run.name} split with --test-fraction {run.test_fraction} "
                         f"--data-seed {stored.data_seed}; --test-fraction {fraction} --data-seed {args.data_seed} "
                         "would score rows it trained on: leave both out to score its own test rows")
    args.test_fraction = fraction


def same_data(asked: LabelledSource, run: LabelledSource) -> bool:
    """Whether `asked` names the training data of `run`: the same hub dataset, or the same training file."""
    if asked.dataset or run.dataset:
        return asked.dataset == run.dataset
    if not (asked.train_file and run.train_file):
        return False
    a, b = Path(asked.train_file), Path(run.train_file)
    return a.samefile(b) if a.exists() and b.exists() else a.resolve() == b.resolve()


def trained_scoring(path: str) -> dict[str, Any]:
    """The precision and truncation a fine-tuned folder was scored with when it was trained (its recipe's), else
    fp32 and 128 tokens: so `tinylm evaluate` repeats the fine-tuning's own test score instead of a near-tie
    flipped by rounding or by texts cut at another length."""
    from tinylm.checkpoint import model_folder

    meta = model_folder(path) / "tinylm_meta.json"
    recipe = (json.loads(meta.read_text()).get("finetune") or {}) if meta.is_file() else {}
    return {"precision": recipe.get("precision", "fp32"), "max_length": recipe.get("max_length", 128)}


def run_predict(args: argparse.Namespace) -> int:
    from tinylm.inference.predictor import Predictor

    texts = args.texts or [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise ValueError("no text given: pass texts as arguments or one per line on stdin")
    predictor = Predictor.load(args.model, args.runtime, device=args.device, onnx_path=args.onnx)
    for text, pred in zip(texts, predictor.predict(texts), strict=True):
        print(json.dumps({"text": text, **pred}))
    return 0
