"""`tinylm demo`: pre-train, fine-tune and compare with a from-scratch twin on the data the package ships."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="pre-train, fine-tune and compare to a from-scratch twin on shipped data")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--shipped", action="store_true",
                   help="skip pre-training: fine-tune the shipped pre-trained model and its twin (about a minute)")


def run(args: argparse.Namespace) -> int:
    from tinylm.experiments.demo import run_demo

    print_demo(run_demo(args.out, seed=args.seed, device=args.device, shipped_start=args.shipped), Path(args.out))
    return 0


def print_demo(r: dict[str, Any], out: Path) -> None:
    pre, scratch, openings = r["pretrained"], r["scratch"], r["pretrain"]["articles"]
    start = (f"{r['pretrain']['model']} (shipped, {openings} Wikipedia openings)" if "model" in r["pretrain"]
             else f"pre-trained on {openings} Wikipedia openings")
    width = max(len(start), 12) + 2
    print(f"AG News test accuracy on {pre['test_examples']} texts (same fine-tuning recipe for both):")
    print(f"  {start:<{width}}{pre['accuracy']:.3f}")
    print(f"  {'from scratch':<{width}}{scratch['accuracy']:.3f}")
    print(f"  {'gap':<{width}}{100 * r['gap']:+.1f} points")
    print(f"{r['seconds']:.0f} s in all; details in {out / 'results.json'}")
