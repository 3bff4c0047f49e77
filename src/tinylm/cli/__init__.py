"""The `tinylm` command: one CLI over the recipes (pretrain, finetune, evaluate, predict, demo).

Every field of a recipe's config is a flag (`--lr 1e-4`, `--epochs 3`); a flag left out keeps the preset's value.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinylm.cli.deploy import add_deploy_parsers, add_runtime_flags, run_deploy
from tinylm.cli.selection import add_parsers as add_selection_parsers
from tinylm.cli.selection import run_estimate, run_select
from tinylm.cli.selection import run_reproduce as run_selection_reproduce
from tinylm.config import FINETUNE_PRESETS, MODEL_PRESETS, PRETRAIN_PRESETS, FinetuneConfig, PretrainConfig, replace
from tinylm.data import DataError
from tinylm.data.corpus import CORPUS_HELP
from tinylm.data.user_files import SOURCE_HELP, LabelledSource
from tinylm.train.distill_config import DISTILL_HELP, DistillConfig


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, only: Sequence[str] | None = None,
                     exclude: Sequence[str] = (), helps: dict[str, str] | None = None) -> None:
    """One `--field` flag per dataclass field (or per field in `only`, less `exclude`), typed from its annotation;
    default None = keep the preset's. `helps` gives some fields a help text of their own."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        hint = hints[f.name]
        args = typing.get_args(hint)
        choices = None
        if typing.get_origin(hint) is typing.Literal:
            kind: Any = type(args[0])
            choices = list(args)
        elif hint is bool:
            kind = _parse_bool
        elif hint in (int, float, str):
            kind = hint
        else:  # Optional[X] and other unions: take the first concrete type
            kind = next((a for a in args if a in (int, float, str)), str)
            if args and all(typing.get_origin(a) is typing.Literal for a in args if a is not type(None)):
                kind = str
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, dest=f.name, type=kind, choices=choices, default=None,
                            help=(helps or {}).get(f.name, "(preset: see `tinylm presets`)"))


def config_from_args(cls: type, presets: dict[str, Any], args: argparse.Namespace) -> Any:
    base = presets[args.preset]
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}  # a command may offer a few
    return replace(base, **overrides)


def pretrain_config(args: argparse.Namespace) -> PretrainConfig:
    """The pre-training config of `pretrain` or `overlap`: a --corpus is used whole unless --articles is given
    (a preset's article count is a Wikipedia subset's size)."""
    cfg = config_from_args(PretrainConfig, PRETRAIN_PRESETS, args)
    if cfg.corpus and args.articles is None:
        from tinylm.data.corpus import count_documents

        cfg = replace(cfg, articles=count_documents(cfg.corpus, cfg.text_field))
    return cfg


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The fine-tuning config of the arguments. With the user's own data a preset's per-label counts (its
    built-in tasks' samples) do not apply: every row is used unless --train-per-label/--test-per-label say."""
    cfg = config_from_args(FinetuneConfig, FINETUNE_PRESETS, args)
    if LabelledSource.of(cfg).given:
        if args.task is not None:
            raise ValueError("give --task or your own data (--train-file or --dataset), not both")
        cfg = dataclasses.replace(cfg, train_per_label=args.train_per_label, test_per_label=args.test_per_label)
    return cfg


def distill_config(args: argparse.Namespace) -> DistillConfig:
    """The distillation config of the flags given (no presets: the teacher's folder supplies the task sample)."""
    if not args.teacher:
        raise ValueError("distill needs --teacher (a fine-tuned committee folder or its run folder)")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(DistillConfig)}
    return DistillConfig(**{k: v for k, v in values.items() if v is not None})


def task_or_own_data(args: argparse.Namespace) -> LabelledSource:
    """The data flags of `evaluate` and `overlap`: --task NAME or the user's own data, exactly one of them."""
    source = LabelledSource.of(args)
    if bool(args.task) == source.given:
        raise ValueError("give --task NAME or your own data (--train-file, --test-file or --dataset), one of them")
    return source


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinylm", description="Tiny BERT language models on modest hardware.")
    parser.add_argument("--data", default=None, help="data folder (default: $TINYLM_DATA or ../shared/data)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="MLM pre-training on Wikipedia openings or your own corpus (--corpus)")
    p.add_argument("--preset", choices=list(PRETRAIN_PRESETS), default="cpu")
    p.add_argument("--out", required=True, help="run folder; the model lands in OUT/model; re-run to resume")
    add_config_flags(p, PretrainConfig, helps=CORPUS_HELP)

    f = sub.add_parser("finetune", help="fine-tune a classifier (from --init, or from scratch) on a built-in "
                                        "task or your own data (--train-file)")
    f.add_argument("--preset", choices=list(FINETUNE_PRESETS), default="cpu")
    f.add_argument("--out", required=True, help="run folder; the model lands in OUT/model; re-run to resume")
    add_config_flags(f, FinetuneConfig, helps=SOURCE_HELP)

    k = sub.add_parser("distill", help="train one student to match a fine-tuned committee's soft votes "
                                       "(knowledge distillation); the student is an ordinary model folder")
    k.add_argument("--out", required=True, help="run folder; the student lands in OUT/model; re-run to resume")
    add_config_flags(k, DistillConfig, helps=DISTILL_HELP)

    e = sub.add_parser("evaluate", help="evaluate a fine-tuned model on a task's test sample or your own data")
    e.add_argument("model", help="a fine-tuned model folder (or its run folder)")
    e.add_argument("--task", default=None, help="a built-in task (or your own data: --test-file, ...)")
    add_config_flags(e, LabelledSource, exclude=("validation_fraction",), helps=SOURCE_HELP)
    e.add_argument("--test-per-label", type=int, default=None)
    e.add_argument("--data-seed", type=int, default=42)
    e.add_argument("--out", default=None, help="write the metrics JSON here (default: print)")

    r = sub.add_parser("predict", help="classify texts (arguments, or one per line on stdin)")
    r.add_argument("model", help="a fine-tuned model folder (or its run folder)")
    r.add_argument("texts", nargs="*")
    add_runtime_flags(r)

    o = sub.add_parser("overlap", help="token overlap between a pre-training corpus and labelled data, before "
                                       "training (the tokenizer, documents and windows `pretrain` would use)")
    o.add_argument("--preset", choices=list(PRETRAIN_PRESETS), default="cpu", help="the pre-training preset")
    add_config_flags(o, PretrainConfig, only=("corpus", "text_field", "articles", "tokenizer", "model", "seq_len",
                                              "data_seed", "data_source"), helps=CORPUS_HELP)
    o.add_argument("--task", default=None, help="a built-in task (or your own data: --train-file, ...)")
    add_config_flags(o, LabelledSource, exclude=("validation_fraction",), helps=SOURCE_HELP)
    o.add_argument("--train-per-label", type=int, default=None)
    o.add_argument("--test-per-label", type=int, default=None)

    d = sub.add_parser("demo", help="pre-train, fine-tune and compare to a from-scratch twin on shipped data")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--seed", type=int, default=42)

    x = sub.add_parser("reproduce", help="run one of the paper's experiments and write its report")
    x.add_argument("experiment", choices=["gap", "size", "overlap", "all", "committee", "selection", "curve", "arms",
                                          "deploy"])
    x.add_argument("--scale", choices=["cpu", "paper"], default="cpu")
    x.add_argument("--seeds", type=int, default=None, help="seeds per point (default: the scale's)")
    x.add_argument("--tasks", nargs="+", default=None, help="subset of fewrel ag_news dbpedia (default: all)")
    x.add_argument("--members", type=int, default=None, help="committee: members (default: the scale's, 32)")
    x.add_argument("--from", dest="source", default=None,
                   help="deploy: the OUT folder of a finished `reproduce committee` (its models are measured)")
    x.add_argument("--out", required=True, help="results, report and plots; OUT/runs caches every run")
    add_selection_parsers(sub, x)  # select, estimate, and the flags of `reproduce selection`

    sub.add_parser("presets", help="list model and recipe presets")
    add_deploy_parsers(sub)  # serve, export onnx
    return parser


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `predict MODEL --runtime onnx "a text"`: argparse ends the texts at the first option; take the rest too.
        if args.command == "predict" and not any(e.startswith("-") for e in extra):
            args.texts = [*args.texts, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "pretrain":
        from tinylm.train.pretrain import pretrain

        _print_json(pretrain(pretrain_config(args), args.out, root=args.data, device=args.device))
    elif args.command == "finetune":
        from tinylm.train.finetune import finetune

        result = finetune(finetune_config(args), args.out, root=args.data, device=args.device)
        _print_json({k: v for k, v in result.items() if k not in ("per_class", "confusion_matrix")})
    elif args.command == "distill":
        from tinylm.train.distill import distill

        result = distill(distill_config(args), args.out, root=args.data, device=args.device)
        _print_json({k: v for k, v in result.items() if k not in ("per_class", "confusion_matrix")})
    elif args.command == "evaluate":
        from tinylm.checkpoint import write_json
        from tinylm.data.user_files import load_task_data
        from tinylm.inference.evaluate import Classifier, evaluate_model

        source = task_or_own_data(args)
        if source.given:
            source.require(train=False)
        clf = Classifier.load(args.model, device=args.device)
        # The user's test labels are checked against the model's own; a built-in task's must equal them.
        task = load_task_data(source, args.task, args.data, train_per_label=0, test_per_label=args.test_per_label,
                              seed=args.data_seed, label_names=clf.label_names if source.given else None)
        if task.label_names != clf.label_names:
            raise DataError(args.model, f"model labels {clf.label_names} differ from {args.task}'s {task.label_names}")
        metrics = evaluate_model(clf.model, clf.tokenizer, task.test, task.label_names, **trained_scoring(args.model))
        if args.out:
            write_json(args.out, metrics)
        _print_json(metrics if not args.out else {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]})
    elif args.command == "predict":
        from tinylm.inference.predictor import Predictor

        texts = args.texts or [line.strip() for line in sys.stdin if line.strip()]
        if not texts:
            raise ValueError("no text given: pass texts as arguments or one per line on stdin")
        predictor = Predictor.load(args.model, args.runtime, device=args.device, onnx_path=args.onnx)
        for text, pred in zip(texts, predictor.predict(texts), strict=True):
            print(json.dumps({"text": text, **pred}))
    elif args.command == "overlap":
        _print_json(run_overlap(args))
    elif args.command in ("serve", "export"):
        run_deploy(args)
    elif args.command == "demo":
        from tinylm.experiments.demo import run_demo

        _print_demo(run_demo(args.out, seed=args.seed, device=args.device), Path(args.out))
    elif args.command == "reproduce":
        from tinylm.experiments.paper import EXPERIMENTS, reproduce
        from tinylm.experiments.scales import SCALES, TASK_ORDER

        experiments = EXPERIMENTS if args.experiment == "all" else (args.experiment,)
        tasks = tuple(args.tasks) if args.tasks else TASK_ORDER
        unknown = [t for t in tasks if t not in TASK_ORDER]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASK_ORDER)}")
        if args.seeds is not None and args.seeds < 1:
            raise ValueError("--seeds must be at least 1")
        if args.experiment == "selection":
            return run_selection_reproduce(args, tasks)
        if args.experiment == "arms":
            from tinylm.experiments.overlap_arms import reproduce_arms

            results = reproduce_arms(SCALES[args.scale], args.out, seeds=args.seeds, tasks=tasks, runs=args.runs,
                                     root=args.data, device=args.device)
            print(f"{len(results['records'])} records in {results['seconds']:.0f} s; "
                  f"report: {Path(args.out) / 'report.md'} (and report.html, results.json, PNG plot)")
            return 0
        if args.experiment == "curve":
            from tinylm.experiments.curve import reproduce_curve

            results = reproduce_curve(SCALES[args.scale], args.out, seeds=args.seeds, tasks=tasks, root=args.data,
                                      device=args.device, runs=args.runs)
            print(f"{len(results['records'])} records in {results['seconds']:.0f} s; "
                  f"report: {Path(args.out) / 'report.md'} (and report.html, results.json, PNG plot)")
            return 0
        if args.experiment == "deploy":
            from tinylm.experiments.deploy import DEPLOY_SCALES, reproduce_deploy

            if not args.source:
                raise ValueError("reproduce deploy needs --from, the folder of a finished `reproduce committee`")
            results = reproduce_deploy(DEPLOY_SCALES[args.scale], args.source, args.out, tasks=args.tasks,
                                       root=args.data, device=args.device)
            print(f"{len(results['rows'])} rows in {results['seconds']:.0f} s; "
                  f"report: {Path(args.out) / 'report.md'} (and report.html, results.json, frontier.png)")
            return 0
        if args.experiment == "committee":
            from tinylm.experiments.committee import COMMITTEE_SCALES, reproduce_committee

            results = reproduce_committee(COMMITTEE_SCALES[args.scale], args.out, seeds=args.seeds,
                                          members=args.members, tasks=tasks, root=args.data, device=args.device)
            print(f"{len(results['records'])} records in {results['seconds']:.0f} s; "
                  f"report: {Path(args.out) / 'report.md'} (and report.html, results.json, PNG plot)")
            return 0
        results = reproduce(experiments, SCALES[args.scale], args.out, seeds=args.seeds, tasks=tasks,
                            root=args.data, device=args.device)
        print(f"{len(results['records'])} records in {results['seconds']:.0f} s; "
              f"report: {Path(args.out) / 'report.md'} (and report.html, results.json, PNG plots)")
    elif args.command == "select":
        return run_select(args)
    elif args.command == "estimate":
        return run_estimate(args)
    elif args.command == "presets":
        _print_json({
            "models": {k: v.to_dict() for k, v in MODEL_PRESETS.items()},
            "pretrain": {k: v.to_dict() for k, v in PRETRAIN_PRESETS.items()},
            "finetune": {k: v.to_dict() for k, v in FINETUNE_PRESETS.items()},
        })
    return 0


def run_overlap(args: argparse.Namespace) -> dict[str, Any]:
    """`tinylm overlap`: the overlap measures (tinylm.analysis.overlap) between the documents and tokenizer a `pretrain`
    with the same flags would use and the labelled texts (training and test examples)."""
    from tinylm.analysis.overlap import overlap_report
    from tinylm.config import resolve_model_config
    from tinylm.data.user_files import load_task_data
    from tinylm.train.pretrain import pretraining_texts, pretraining_tokenizer

    source = task_or_own_data(args)
    cfg = pretrain_config(args)
    task = load_task_data(source, args.task, args.data, train_per_label=args.train_per_label,
                          test_per_label=args.test_per_label, seed=cfg.data_seed)
    texts = pretraining_texts(cfg, args.data)
    tokenizer = pretraining_tokenizer(cfg, texts, resolve_model_config(cfg.model).vocab_size, args.data)
    labelled = [e.text for e in (*task.train, *task.validation, *task.test)]
    return {"corpus": cfg.corpus or f"wikipedia ({cfg.data_source})", "documents": len(texts), "data": task.name,
            "texts": len(labelled), "tokenizer": cfg.tokenizer, "vocab_size": len(tokenizer), "seq_len": cfg.seq_len,
            "overlap": overlap_report(texts, labelled, tokenizer, cfg.seq_len)}


def trained_scoring(path: str) -> dict[str, Any]:
    """The precision and truncation a fine-tuned folder was scored with when it was trained (its recipe's), else
    fp32 and 128 tokens: so `tinylm evaluate` repeats the fine-tuning's own test score instead of a near-tie
    flipped by rounding or by texts cut at another length."""
    from tinylm.train.pretrain import model_folder

    meta = model_folder(path) / "tinylm_meta.json"
    recipe = (json.loads(meta.read_text()).get("finetune") or {}) if meta.is_file() else {}
    return {"precision": recipe.get("precision", "fp32"), "max_length": recipe.get("max_length", 128)}


def _print_demo(r: dict[str, Any], out: Path) -> None:
    pre, scratch = r["pretrained"], r["scratch"]
    print(f"AG News test accuracy on {pre['test_examples']} texts (same fine-tuning recipe for both):")
    print(f"  pre-trained on {r['pretrain']['articles']} Wikipedia openings  {pre['accuracy']:.3f}")
    print(f"  from scratch                               {scratch['accuracy']:.3f}")
    print(f"  gap                                        {100 * r['gap']:+.1f} points")
    print(f"{r['seconds']:.0f} s in all; details in {out / 'results.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2, never a traceback.

    Under torchrun (docs/gpu_runbook.md) every rank runs the same command and computes the same results; only
    rank 0 prints them, and each rank leaves the process group that pretrain/finetune joined."""
    if os.environ.get("RANK", "0") != "0":
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    try:
        return run(argv)
    except (DataError, ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        if os.environ.get("TINYLM_DEBUG"):
            raise
        print(f"tinylm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinylm: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # only a run that trained can have joined a process group
            from tinylm.distributed import shutdown_distributed

            shutdown_distributed()

