"""Build examples/ag_news_sample.csv, the labelled CSV of the user guide's "Your own data" example
(docs/user_guide.md), from the real data.

It looks like a user's own file: a header row `label,content`, labels 1-4 (AG News's classes: 1 World, 2 Sports,
3 Business, 4 Sci/Tech), one text per row. The rows are a seeded, label-balanced sample of the official AG News
test split (TINYLM_DATA or ../shared/data, ag_news/test.csv), title and description joined as in tinylm's reader.

    python scripts/build_example_data.py [--per-label 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from tinylm.data import clean_text, data_root, read_label_csv

OUT = Path(__file__).resolve().parent.parent / "examples" / "ag_news_sample.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-label", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    examples = read_label_csv(data_root() / "ag_news" / "test.csv", 4, "ag_news")  # labels 0-3, text cleaned
    rng = np.random.default_rng(args.seed)
    picked = []
    for label in range(4):
        pool = [e for e in examples if e.label == label]
        picked += [pool[i] for i in sorted(rng.choice(len(pool), args.per_label, replace=False))]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "content"])
        for i in rng.permutation(len(picked)):  # mixed labels, as a real file would be
            writer.writerow([picked[i].label + 1, clean_text(picked[i].text)])
    print(f"{OUT}: {len(picked)} rows, {OUT.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
