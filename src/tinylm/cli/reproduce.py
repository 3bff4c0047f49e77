"""`tinylm reproduce EXPERIMENT`: run one of the paper's experiments (or one beyond it) and write its report.

Each experiment has a runner here that calls its recipe in tinylm.experiments; every run is cached under
OUT/runs (or --runs), so an interrupted command resumes when run again.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tinylm.cli import selection
from tinylm.config import replace

PAPER_EXPERIMENTS = ("gap", "size", "overlap", "all")  # one sweep, tinylm.experiments.paper
EXPERIMENT_CHOICES = [*PAPER_EXPERIMENTS, "committee", "selection", "curve", "arms", "overlap-control", "deploy"]
EXPERIMENT_HELP = ("gap, size, overlap or all: the paper's claims 1-3 over pre-training sizes; committee; selection; "
                   "curve: the gap over pre-training steps; arms: the gap against topic similarity (articles more "
                   "or less typical of the task) at one size; overlap-control: the gap against token overlap set "
                   "by withholding task token types from pre-training; deploy")


def add_parser(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("reproduce", help="run one of the paper's experiments and write its report")
    x.add_argument("experiment", choices=EXPERIMENT_CHOICES, help=EXPERIMENT_HELP)
    x.add_argument("--scale", choices=["cpu", "paper"], default="cpu")
    x.add_argument("--seeds", type=int, default=None, help="seeds per point (default: the scale's)")
    x.add_argument("--finetune-seeds", type=int, default=None,
                   help="gap/size/overlap/all/overlap-control: fine-tuning seeds per pre-trained model (default: "
                        "the scale's)")
    x.add_argument("--shard", type=shard_arg, default=None, metavar="I/N",
                   help="gap/size/overlap/all: train only share I of N of the models; overlap-control, arms and "
                        "committee: be worker I of N, taking any model nobody trains yet (run N processes, "
                        "I = 0..N-1, on one OUT), then run once more without --shard to write the report")
    x.add_argument("--pretrain-epochs", type=int, default=None,
                   help="overlap-control: MLM epochs of every variant (default: the scale's)")
    x.add_argument("--tasks", nargs="+", default=None, help="subset of fewrel ag_news dbpedia (default: all)")
    x.add_argument("--members", type=int, default=None, help="committee: members (default: the scale's, 32)")
    x.add_argument("--from", dest="source", default=None,
                   help="deploy: the OUT folder of a finished `reproduce committee` (its models are measured)")
    x.add_argument("--levels", type=float, nargs="+", default=None,
                   help="overlap-control: target token overlaps, fractions in (0, 1] (default: 1 0.9 0.75 0.5)")
    x.add_argument("--out", required=True, help="results, report and plots; OUT/runs caches every run")
    selection.add_reproduce_flags(x)


def shard_arg(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text}: I must be in 0..N-1")
    return index, count


def chosen_tasks(args: argparse.Namespace) -> tuple[str, ...]:
    """--tasks (default: every task), checked together with --seeds before anything runs."""
    from tinylm.experiments.scales import TASK_ORDER

    tasks = tuple(args.tasks) if args.tasks else TASK_ORDER
    unknown = [t for t in tasks if t not in TASK_ORDER]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASK_ORDER)}")
    for flag in ("seeds", "finetune_seeds"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
    return tasks


def report_line(results: Mapping[str, Any], out: str, *, items: str = "records", extras: str = "PNG plot") -> str:
    """What a finished experiment prints: its size, its time and where its report is."""
    return (f"{len(results[items])} {items} in {results['seconds']:.0f} s; "
            f"report: {Path(out) / 'report.md'} (and report.html, results.json, {extras})")


def run_paper(args: argparse.Namespace, tasks: tuple[str, ...]) -> int:
    from tinylm.experiments.paper import EXPERIMENTS, reproduce
    from tinylm.experiments.scales import SCALES

    experiments = EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    scale = SCALES[args.scale]
    if args.finetune_seeds:
        scale = dataclasses.replace(scale, finetune_seeds=args.finetune_seeds)
    results = reproduce(experiments, scale, args.out, seeds=args.seeds, tasks=tasks, root=args.data,
                        device=args.device, shard=args.shard)
    if args.shard:
        print(f"shard {args.shard[0]}/{args.shard[1]}: {results['pairs']} pairs trained or found in {args.out}/runs; "
              "run again without --shard for the report")
        return 0
    print(report_line(results, args.out, extras="PNG plots"))
    return 0


def run_committee(args: argparse.Namespace, tasks: tuple[str, ...]) -> int:
    from tinylm.experiments.committee import COMMITTEE_SCALES, reproduce_committee

    results = reproduce_committee(COMMITTEE_SCALES[args.scale], args.out, seeds=args.seeds,
                                  members=args.members, tasks=tasks, root=args.data, device=args.device,
                                  shard=args.shard)
    if args.shard:
        print(f"worker {args.shard[0]}/{args.shard[1]}: done with what it could take in {args.out}/runs; "
              "run again without --shard for the report")
        return 0
    print(report_line(results, args.out))
    return 0


def run_selection(args: argparse.Namespace, tasks: tuple[str, ...]) -> int:
    from tinylm.experiments.scales import SCALES
    from tinylm.experiments.selection_sweep import REPRO_MEASURES, reproduce_selection

    results = reproduce_selection(SCALES[args.scale], args.out, selection.fit_path(args.fit, args.scale),
                                  sizes=tuple(args.sizes) if args.sizes else None,
                                  measures=tuple(args.measures) if args.measures else REPRO_MEASURES,
                                  seeds=args.seeds, tasks=tasks, runs=args.runs, root=args.data, device=args.device)
    print(report_line(results, args.out, extras="PNG plots"))
    return 0


def run_curve(args: argparse.Namespace, tasks: tuple[str, ...]) -> int:
    from tinylm.experiments.curve import reproduce_curve
    from tinylm.experiments.scales import SCALES

    results = reproduce_curve(SCALES[args.scale], args.out, seeds=args.seeds, tasks=tasks, root=args.data,
                              device=args.device, runs=args.runs)
    print(report_line(results, args.out))
    return 0


def run_arms(args: argparse.Namespace, tasks: tuple[str, ...]) -> int:
    from tinylm.experiments.overlap_arms import reproduce_arms
    from tinylm.experiments.scales import SCALES

    if args.sizes and len(args.sizes) > 1:
        raise ValueError("arms compares at one size: give one --sizes value")
    results = reproduce_arms(SCALES[args.scale], args.out, seeds=args.seeds, tasks=tasks, runs=args.runs,
                             root=args.data, device=args.device, size=args.sizes[0] if args.sizes else None,
                             shard=args.shard)
    if args.shard:
        print(f"worker {args.shard[0]}/{args.shard[1]}: done with what it could take in {args.out}/runs; "
              "run again without --shard for the report")
        return 0
    print(report_line(results, args.out))
    return 0


def run_overlap_control(args: argparse.Namespace, tasks: tuple[str, ...]) -> int:
    from tinylm.experiments.overlap_control import OVERLAP_CONTROL_SCALES, reproduce_overlap_control

    scale = OVERLAP_CONTROL_SCALES[args.scale]
    if args.pretrain_epochs:
        base = dataclasses.replace(scale.base, pretrain=replace(scale.base.pretrain, epochs=args.pretrain_epochs))
        scale = dataclasses.replace(scale, base=base)
    if args.finetune_seeds:
        scale = dataclasses.replace(scale, base=dataclasses.replace(scale.base, finetune_seeds=args.finetune_seeds))
    results = reproduce_overlap_control(scale, args.out, seeds=args.seeds, tasks=tasks,
                                        runs=args.runs, root=args.data, device=args.device,
                                        levels=tuple(args.levels) if args.levels else None, shard=args.shard)
    if args.shard:
        print(f"worker {args.shard[0]}/{args.shard[1]}: done with what it could take in {args.out}/runs; "
              "run again without --shard for the report")
        return 0
    print(report_line(results, args.out))
    return 0


def run_deploy(args: argparse.Namespace, tasks: tuple[str, ...]) -> int:
    from tinylm.experiments.deploy import DEPLOY_SCALES, reproduce_deploy

    if not args.source:
        raise ValueError("reproduce deploy needs --from, the folder of a finished `reproduce committee`")
    # --tasks as given (None: every task of the committee run), not the checked default of every task.
    results = reproduce_deploy(DEPLOY_SCALES[args.scale], args.source, args.out, tasks=args.tasks,
                               root=args.data, device=args.device)
    print(report_line(results, args.out, items="rows", extras="frontier.png"))
    return 0


RUNNERS: dict[str, Callable[[argparse.Namespace, tuple[str, ...]], int]] = {
    **dict.fromkeys(PAPER_EXPERIMENTS, run_paper),
    "committee": run_committee,
    "selection": run_selection,
    "curve": run_curve,
    "arms": run_arms,
    "overlap-control": run_overlap_control,
    "deploy": run_deploy,
}


def run(args: argparse.Namespace) -> int:
    from tinylm.runtime import configure_threads

    tasks = chosen_tasks(args)
    configure_threads()  # before any run: a results.json whose runs were all cached still records TINYLM_THREADS
    return RUNNERS[args.experiment](args, tasks)
