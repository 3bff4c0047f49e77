"""Build the test fixtures in tests/fixtures/data from the real data folder (TINYLM_DATA or ../shared/data).

The fixture folder has the data folder's layout and file formats, so the loaders read it unchanged, and holds a
few hundred real rows per task, so the test suite runs on a fresh clone without the data folder:
- ag_news/test.csv, dbpedia/train.csv, dbpedia/test.csv: label-balanced rows copied verbatim, in file order;
- ag_news/train.jsonl: label-balanced distinct rows, with every copy the real file has of them (the real file
  repeats 999 rows, and the loaders must drop such duplicates);
- fewrel/val_wiki.json: the same number of instances of every relation; pid2name.json for those relations;
- wikipedia/articles.jsonl.gz: a seeded sample of articles, lines copied verbatim, in file order;
- classes.txt files and vocab/bert-base-uncased-vocab.txt: copied whole.
The first rows of each file are always kept (tests pin their content). Sampling is seeded, and the output is
byte-identical across rebuilds (tests/data/test_data.py rebuilds it when the data folder is present and compares).

    python scripts/build_test_fixtures.py [--data DIR] [--out tests/fixtures/data]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinylm.data.paths import data_root

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "data"
ARTICLES = 400
AG_NEWS_PER_LABEL = (100, 250)  # train (distinct rows), test: the CPU scale's sample (`tinylm select` reads it)
DBPEDIA_PER_LABEL = 25  # train and test
FEWREL_PER_RELATION = 25
HEAD = 2  # the first rows of every file, always kept
COPIED = ("ag_news/classes.txt", "dbpedia/classes.txt", "vocab/bert-base-uncased-vocab.txt")


def balanced(labels: Sequence[int], per_label: int, rng: np.random.Generator, head: int = HEAD) -> list[int]:
    """Row indices, in file order: per_label rows of every label, the file's first `head` rows among them."""
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    picked: list[int] = []
    for label in sorted(by_label):
        rows = by_label[label]
        kept = [i for i in rows if i < head]
        rest = [i for i in rows if i >= head]
        picked += kept + [rest[j] for j in rng.choice(len(rest), per_label - len(kept), replace=False)]
    return sorted(picked)


def csv_label(line: str) -> int:
    """The class of a task CSV row ("3","title",... -> 3); the shared CSVs have no multi-line fields."""
    return int(line.split(",", 1)[0].strip('"'))


def sample_lines(path: Path, per_label: int, rng: np.random.Generator) -> str:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    return "".join(lines[i] for i in balanced([csv_label(line) for line in lines], per_label, rng))


def sample_ag_news_train(path: Path, per_label: int, rng: np.random.Generator) -> str:
    """per_label distinct rows of each label, every copy of them kept, in file order."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    distinct = list(dict.fromkeys(lines))
    chosen = {distinct[i] for i in balanced([json.loads(line)["label"] for line in distinct], per_label, rng)}
    return "".join(line for line in lines if line in chosen)


def sample_fewrel(folder: Path, per_relation: int, rng: np.random.Generator) -> tuple[str, str]:
    data = json.loads((folder / "val_wiki.json").read_text(encoding="utf-8"))
    out = {}
    for relation, instances in data.items():  # the file's order
        keep = [0, *sorted(1 + rng.choice(len(instances) - 1, per_relation - 1, replace=False))]
        out[relation] = [instances[i] for i in keep]
    names = json.loads((folder / "pid2name.json").read_text(encoding="utf-8"))
    return json.dumps(out), json.dumps({rid: names[rid] for rid in sorted(out) if rid in names})


def sample_articles(path: Path, count: int, rng: np.random.Generator) -> bytes:
    with gzip.open(path, "rb") as f:
        lines = [line for line in f if line.strip()]
    keep = [0, *sorted(1 + rng.choice(len(lines) - 1, count - 1, replace=False))]
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:  # mtime=0: byte-identical rebuilds
        gz.write(b"".join(lines[i] for i in keep))
    return raw.getvalue()


def build(src: Path, out: Path, seed: int = 0) -> dict[str, bytes]:
    """Every fixture file (relative path -> bytes), written under `out`."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    files["ag_news/train.jsonl"] = sample_ag_news_train(src / "ag_news" / "train.jsonl", AG_NEWS_PER_LABEL[0],
                                                        rng).encode()
    files["ag_news/test.csv"] = sample_lines(src / "ag_news" / "test.csv", AG_NEWS_PER_LABEL[1], rng).encode()
    for split in ("train", "test"):
        files[f"dbpedia/{split}.csv"] = sample_lines(src / "dbpedia" / f"{split}.csv", DBPEDIA_PER_LABEL,
                                                     rng).encode()
    fewrel, pid2name = sample_fewrel(src / "fewrel", FEWREL_PER_RELATION, rng)
    files["fewrel/val_wiki.json"], files["fewrel/pid2name.json"] = fewrel.encode(), pid2name.encode()
    files["wikipedia/articles.jsonl.gz"] = sample_articles(src / "wikipedia" / "articles.jsonl.gz", ARTICLES, rng)
    for name in COPIED:
        files[name] = (src / name).read_bytes()
    files["README.md"] = readme(src, files).encode()
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return files


def readme(src: Path, files: dict[str, bytes]) -> str:
    rows = "".join(f"| {name} | {len(files[name]):,} | {hashlib.sha256((src / name).read_bytes()).hexdigest()[:16]} |\n"
                   for name in sorted(files))
    return (
        "# Test fixtures: a small sample of the real data folder\n\n"
        "Built by `python scripts/build_test_fixtures.py` from the shared data folder (its MANIFEST.md allows a\n"
        "small sample built by the project's own script); do not edit by hand. Same layout and formats as the data\n"
        f"folder: {ARTICLES} Wikipedia articles, AG News {AG_NEWS_PER_LABEL[0]} distinct train rows (every copy kept)\n"
        f"and {AG_NEWS_PER_LABEL[1]} test rows per class, DBpedia {DBPEDIA_PER_LABEL} rows per class in each file,\n"
        f"FewRel {FEWREL_PER_RELATION} instances of each of its 16 relations, the bert-base-uncased vocabulary.\n\n"
        "| file | bytes here | sha256 of the source file (first 16 hex digits) |\n|---|---|---|\n" + rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="the real data folder (default: TINYLM_DATA or ../shared/data)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = build(data_root(args.data), args.out, args.seed)
    for name, data in sorted(files.items()):
        print(f"{name}: {len(data) / 1e3:.0f} kB")
    print(f"total: {sum(map(len, files.values())) / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
