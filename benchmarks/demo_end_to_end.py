"""`tinylm demo` end to end under two source trees (before and after a change), one after the other.

    git worktree add /tmp/before d6e4d62        # the code before issue 14's levers
    TINYLM_THREADS=1 python benchmarks/demo_end_to_end.py --before /tmp/before/src --after src

Each run is `python -m tinylm.cli demo` with PYTHONPATH set to that tree, timed from outside; the ratios
(wall, pre-training, fine-tuning) and each run's figures go to benchmarks/results/demo_end_to_end.json. Run
it on a quiet machine: the two runs are sequential, so other load changes the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_demo(src: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tinylm.cli", "demo", "--out", str(out)], env=env, check=True)
    wall = time.perf_counter() - start
    result = json.loads((out / "results.json").read_text())
    return {"src": str(src), "wall_s": round(wall, 1), "seconds": result["seconds"],
            "pretrain_seconds": result["pretrain"]["seconds"],
            "pretrain_tokens_per_s": result["pretrain"]["tokens_per_s"],
            "finetune_seconds": round(result["pretrained"]["train_seconds"] + result["scratch"]["train_seconds"], 2),
            "accuracy_pretrained": result["pretrained"]["accuracy"], "accuracy_scratch": result["scratch"]["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="src/ folder of the code before the change")
    parser.add_argument("--after", type=Path, required=True, help="src/ folder of the code after the change")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_end_to_end.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run_demo(src, Path(tmp) / name) for name, src in (("after", args.after), ("before", args.before))}
    before, after = runs["before"], runs["after"]
    record = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "threads": os.environ.get("TINYLM_THREADS", "all"),
        "runs": runs,
        "ratios": {key: round(before[key] / after[key], 2)
                   for key in ("wall_s", "pretrain_seconds", "finetune_seconds")},
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["ratios"]))


if __name__ == "__main__":
    main()
