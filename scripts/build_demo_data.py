"""Build the demo sample shipped in src/tinylm/demo_data from the real data (TINYLM_DATA or ../shared/data).

It keeps the real files' layouts, so tinylm's loaders read it unchanged:
- wikipedia/articles.jsonl.gz: a seeded sample of articles, each cut to its opening (enough for 128 tokens);
- ag_news/train.jsonl, ag_news/test.csv, ag_news/classes.txt: seeded, label-balanced rows copied verbatim;
- vocab.txt: the demo model's WordPiece vocabulary, trained once on those openings and shipped, because the
  `tokenizers` trainer is not bit-reproducible across runs and the demo should be.

    python scripts/build_demo_data.py [--articles 12000] [--train-per-label 500] [--test-per-label 250]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from tinylm.config import MODEL_PRESETS
from tinylm.data.paths import data_root
from tinylm.tokenizer import train_wordpiece

OUT = Path(__file__).resolve().parent.parent / "src" / "tinylm" / "demo_data"
OPENING_CHARS = 700  # 128 WordPiece tokens are ~600 characters of English prose


def opening(text: str, limit: int = OPENING_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0]


def balanced_rows(rows: list[tuple[int, str]], per_label: int, rng: np.random.Generator) -> list[str]:
    by_label: dict[int, list[str]] = defaultdict(list)
    for label, raw in rows:
        by_label[label].append(raw)
    picked = []
    for label in sorted(by_label):
        pool = by_label[label]
        picked += [pool[i] for i in sorted(rng.choice(len(pool), per_label, replace=False))]
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=12000)
    parser.add_argument("--train-per-label", type=int, default=500)
    parser.add_argument("--test-per-label", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    src = data_root()
    rng = np.random.default_rng(args.seed)

    with gzip.open(src / "wikipedia" / "articles.jsonl.gz", "rt", encoding="utf-8") as f:
        articles = [json.loads(line) for line in f]
    keep = sorted(rng.choice(len(articles), args.articles, replace=False))
    (OUT / "wikipedia").mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip byte-identical across rebuilds.
    with open(OUT / "wikipedia" / "articles.jsonl.gz", "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, io.TextIOWrapper(gz, encoding="utf-8") as f:
        for i in keep:
            a = articles[i]
            f.write(json.dumps({"id": a["id"], "title": a["title"], "text": opening(a["text"])}) + "\n")
    tok = train_wordpiece([opening(articles[i]["text"]) for i in keep], vocab_size=MODEL_PRESETS["demo"].vocab_size)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (OUT / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")

    (OUT / "ag_news").mkdir(parents=True, exist_ok=True)
    train_lines = (src / "ag_news" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    train = [(json.loads(line)["label"], line) for line in train_lines if line.strip()]
    picked = balanced_rows(train, args.train_per_label, rng)
    (OUT / "ag_news" / "train.jsonl").write_text("\n".join(picked) + "\n", encoding="utf-8")

    test_lines = (src / "ag_news" / "test.csv").read_text(encoding="utf-8").splitlines()
    test = [(int(next(csv.reader([line]))[0]), line) for line in test_lines if line.strip()]
    picked = balanced_rows(test, args.test_per_label, rng)
    (OUT / "ag_news" / "test.csv").write_text("\n".join(picked) + "\n", encoding="utf-8")
    shutil.copyfile(src / "ag_news" / "classes.txt", OUT / "ag_news" / "classes.txt")

    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(OUT)}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
