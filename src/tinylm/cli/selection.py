"""The CLI of data selection: `tinylm select`, `tinylm estimate` and the flags of `tinylm reproduce selection`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinylm.analysis.overlap import DEFAULT_MEASURE, OVERLAP_MEASURES, WEIGHTED_MIN_COUNT
from tinylm.analysis.selection import DEFAULT_SELECTION_MEASURE, SELECTION_MEASURES

SCALE_NAMES = ("cpu", "paper")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The select and estimate commands."""
    s = sub.add_parser("select", help="choose pre-training articles by their contribution to overlap with a task")
    s.add_argument("--task", required=True, help="fewrel, ag_news or dbpedia (the scale's task sample)")
    s.add_argument("--articles", type=int, required=True, help="how many articles to select")
    s.add_argument("--out", required=True, help="a data folder: OUT/wikipedia/articles.jsonl.gz + selection.json")
    s.add_argument("--scale", choices=SCALE_NAMES, default="cpu", help="tokenizer, seq_len and task sample")
    s.add_argument("--measure", choices=SELECTION_MEASURES, default=DEFAULT_SELECTION_MEASURE,
                   help="coverage to maximise greedily (default: weighted; see src/tinylm/analysis/selection.py)")
    s.add_argument("--min-count", type=int, default=WEIGHTED_MIN_COUNT, help="weighted: count that fully covers")
    s.add_argument("--seed", type=int, default=42, help="random order that breaks ties (equal gains)")
    s.add_argument("--split", choices=["train", "all"], default="train",
                   help="task texts to select by: train (default) or train + test (peeks at the test set)")
    s.add_argument("--pool", default=None, help="articles .jsonl(.gz) to choose from (default: the data folder's)")

    e = sub.add_parser("estimate", help="predict a subset's pre-training gap from the stored gap-vs-overlap fit")
    e.add_argument("--task", required=True)
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--subset", help="a selection folder (OUT of `tinylm select`) or an articles .jsonl(.gz)")
    which.add_argument("--random", type=int, metavar="N", help="the experiments' random subset of N articles")
    e.add_argument("--fit", default=None, help="results.json of `reproduce overlap|all` (default: docs/results/cpu)")
    e.add_argument("--measure", choices=list(OVERLAP_MEASURES), default=DEFAULT_MEASURE)
    e.add_argument("--confidence", type=float, default=0.95)


def add_reproduce_flags(reproduce: argparse.ArgumentParser) -> None:
    """The flags `reproduce selection` adds to `reproduce` (--runs is curve's and arms' too)."""
    reproduce.add_argument("--runs", default=None, help="selection: run cache (default OUT/runs); the experiments' "
                                                        "OUT/runs re-uses their random-subset and scratch runs")
    reproduce.add_argument("--fit", default=None, help="selection: results.json holding the gap-vs-overlap fit "
                                                       "(default: docs/results/<scale>/results.json)")
    reproduce.add_argument("--sizes", type=int, nargs="+", default=None,
                           help="selection: subset sizes; arms: the one size (default: the scale's, 12000 at cpu)")
    reproduce.add_argument("--measures", nargs="+", choices=SELECTION_MEASURES, default=None,
                           help="selection: selection measures to compare with random (default: weighted mass)")


def fit_path(given: str | None, scale: str) -> Path:
    from tinylm.experiments.selection import default_fit_path

    path = Path(given) if given else default_fit_path(scale)
    if path is None:
        raise FileNotFoundError(f"no stored fit for scale {scale!r}: pass --fit with the results.json of "
                                "`tinylm reproduce overlap` (or `all`)")
    return path


def run_select(args: argparse.Namespace) -> int:
    from tinylm.experiments.scales import SCALES
    from tinylm.experiments.selection import select

    summary = select(SCALES[args.scale], args.task, args.articles, args.out, measure=args.measure, seed=args.seed,
                     min_count=args.min_count, split=args.split, pool_path=args.pool, root=args.data)
    print(json.dumps(summary, indent=2))
    print(f"pre-train on it: tinylm --data {args.out} pretrain --articles {args.articles} ...")
    return 0


def run_estimate(args: argparse.Namespace) -> int:
    from tinylm.experiments.selection import estimate

    if not 0 < args.confidence < 1:
        raise ValueError("--confidence must lie in (0, 1)")
    result = estimate(args.task, fit_path(args.fit, "cpu"), subset=args.subset, random_articles=args.random,
                      measure=args.measure, confidence=args.confidence, root=args.data)
    print(json.dumps(result, indent=2))
    return 0
