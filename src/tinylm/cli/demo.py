"""`tinylm demo`: pre-train, fine-tune and compare with a from-scratch twin on the data the package ships."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="pre-train, fine-tune and compare to a from-scratch twin on shipped data")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--seed", type=int, default=42)


def run(args: argparse.Namespace) -> int:
    from tinylm.experiments.demo import run_demo

    print_demo(run_demo(args.out, seed=args.seed, device=args.device), Path(args.out))
    return 0


def print_demo(r: dict[str, Any], out: Path) -> None:
    pre, scratch = r["pretrained"], r["scratch"]
    print(f"AG News test accuracy on {pre['test_examples']} texts (same fine-tuning recipe for both):")
    print(f"  pre-trained on {r['pretrain']['articles']} Wikipedia openings  {pre['accuracy']:.3f}")
    print(f"  from scratch                               {scratch['accuracy']:.3f}")
    print(f"  gap                                        {100 * r['gap']:+.1f} points")
    print(f"{r['seconds']:.0f} s in all; details in {out / 'results.json'}")
