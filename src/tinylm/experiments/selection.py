"""`tinylm select` and `tinylm estimate`: pre-training data chosen by overlap, and its gap predicted.

- select: rank the articles of a pool (the shared Wikipedia file) by their contribution to token overlap with
  a task's texts (tinylm.analysis.selection) and write the top N as a data folder, OUT/wikipedia/articles.jsonl.gz,
  that `tinylm pretrain --data OUT --articles N` trains on, with OUT/selection.json saying what was chosen.
- estimate: a candidate subset's overlap with a task, and the gap the stored gap-vs-overlap fit predicts for
  it (tinylm.analysis.gap_fit), with its prediction interval.
- `tinylm reproduce selection` (tinylm.experiments.selection_sweep) pre-trains on such selections and compares
  the measured gaps with the predicted ones.

The articles are chosen from the task's *train* texts by default: choosing pre-training data by the test
texts would tune the pre-training on the test set. Overlap is then measured as in the experiments, on train +
test, so that it is comparable with the stored fit.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from tinylm.analysis.gap_fit import GapFit, fit_gap_on_overlap, load_results
from tinylm.analysis.overlap import DEFAULT_MEASURE, OVERLAP_MEASURES, WEIGHTED_MIN_COUNT, count_tokens
from tinylm.analysis.selection import DEFAULT_SELECTION_MEASURE, Selection, count_matrix, greedy_select, objective
from tinylm.data import Article, DataError, TaskData, articles_path, data_root, load_articles, load_task, read_articles
from tinylm.data.wikipedia import ARTICLES_FILE
from tinylm.experiments.scales import Scale
from tinylm.io import write_json
from tinylm.tokenizer import load_tokenizer

SPLITS = ("train", "all")  # which task texts drive the selection: train only (default) or train + test
_REPO_ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------- the pool and the task


@dataclass
class Pool:
    """Candidate articles and their article x vocabulary token counts (first seq_len tokens, no specials)."""

    path: Path
    articles: list[Article]
    counts: sparse.csr_matrix

    @classmethod
    def load(cls, tokenizer: Any, seq_len: int, path: str | os.PathLike | None = None,
             root: str | os.PathLike | None = None) -> Pool:
        from tinylm.data.encoding import encode_cached

        path = Path(path) if path else articles_path(root)
        articles = list(read_articles(path))
        # Tokenised once per (vocabulary, pool) and cached like pre-training's token ids (the same ids, too).
        ids = encode_cached(tokenizer, [a.text for a in articles], seq_len)
        return cls(path, articles, count_matrix(ids, len(tokenizer), tokenizer.all_special_ids))

    @property
    def tokens_per_article(self) -> float:
        return float(self.counts.sum()) / max(1, len(self.articles))

    def subset_counts(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(self.counts[np.asarray(indices)].sum(axis=0)).ravel().astype(np.int64)


def scale_task(scale: Scale, task: str, root: str | os.PathLike | None = None) -> TaskData:
    """The task sample the experiments fine-tune and measure overlap on at this scale."""
    if task not in scale.samples:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(scale.samples)}")
    train, test = scale.samples[task]
    return load_task(task, root, train_per_label=train, test_per_label=test, seed=scale.finetune.data_seed,
                     fewrel_markers=scale.finetune.fewrel_markers, source=scale.finetune.data_source)


def task_texts(data: TaskData, split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return [e.text for e in (data.train if split == "train" else (*data.train, *data.test))]


def overlaps(pretrain_counts: np.ndarray, task_counts: np.ndarray) -> dict[str, float]:
    return {name: fn(pretrain_counts, task_counts) for name, fn in OVERLAP_MEASURES.items()}


# ---------------------------------------------------------------- select


@dataclass(frozen=True)
class SubsetChoice:
    """A selected subset and its summary (what selection.json holds, less the article list)."""

    selection: Selection
    articles: list[Article]
    summary: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.summary["id"])


def subset_id(articles: Sequence[Article]) -> str:
    """A content address of a subset: its article ids in file order (the order pre-training reads them in)."""
    return hashlib.sha256("\0".join(a.id for a in articles).encode()).hexdigest()[:12]


def choose_subset(pool: Pool, tokenizer: Any, data: TaskData, n: int, *, measure: str = DEFAULT_SELECTION_MEASURE,
                  seed: int = 42, min_count: int = WEIGHTED_MIN_COUNT, split: str = "train", seq_len: int = 128,
                  random_seed: int = 42) -> SubsetChoice:
    """The top-n articles of `pool` for `data` by greedy overlap coverage, with their overlaps and the random subset's.

    random_seed: the data seed of the experiments' random subsets (the first n of that permutation), whose
    overlap is reported beside the selection's.
    """
    started = time.perf_counter()
    select_counts = count_tokens(tokenizer, task_texts(data, split), seq_len)
    obj = objective(measure, select_counts, budget_tokens=n * pool.tokens_per_article, min_count=min_count)
    sel = greedy_select(pool.counts, obj, n, seed)
    seconds = time.perf_counter() - started
    eval_counts = count_tokens(tokenizer, task_texts(data, "all"), seq_len)  # the experiments' reading
    random_rows = np.random.default_rng(random_seed).permutation(len(pool.articles))[:n]  # = load_articles'
    chosen = [pool.articles[i] for i in sel.indices]
    summary = {
        "id": subset_id(chosen), "task": data.name, "articles": n, "measure": measure, "seed": seed,
        "min_count": min_count if measure == "weighted" else None, "split": split, "seq_len": seq_len,
        "pool": {"path": str(pool.path), "articles": len(pool.articles)},
        "task_sample": {"train": len(data.train), "test": len(data.test)},
        "coverage": sel.coverage, "random_coverage": obj.coverage(pool.subset_counts(random_rows)),
        "saturated_at": sel.saturated_at, "evaluations": sel.evaluations, "seconds": round(seconds, 2),
        "overlap": overlaps(pool.subset_counts(sel.indices), eval_counts),
        "random_overlap": overlaps(pool.subset_counts(random_rows), eval_counts),
        "random_seed": random_seed,
    }
    return SubsetChoice(sel, chosen, summary)


def write_subset(folder: str | os.PathLike, choice: SubsetChoice, root: str | os.PathLike | None = None) -> Path:
    """folder/wikipedia/articles.jsonl.gz (pick order) and folder/selection.json: a data folder for pretrain.

    The data folder's vocab/ is linked in, so `--tokenizer bert-base-uncased` finds the shared vocabulary.
    """
    folder = Path(folder)
    target = folder / ARTICLES_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:  # mtime 0: same bytes
        for a in choice.articles:
            f.write((json.dumps({"id": a.id, "title": a.title, "text": a.text}) + "\n").encode())
    os.replace(tmp, target)
    picks = [{"id": a.id, "title": a.title, "gain": float(g)}
             for a, g in zip(choice.articles, choice.selection.gains, strict=True)]
    write_json(folder / "selection.json", {**choice.summary, "picks": picks})
    try:
        vocab = data_root(root) / "vocab"
    except DataError:  # an explicit pool outside any data folder: nothing to link
        vocab = None
    link = folder / "vocab"
    if vocab is not None and vocab.is_dir() and not link.exists():
        link.symlink_to(vocab.resolve(), target_is_directory=True)
    return folder


def select(scale: Scale, task: str, n: int, out: str | os.PathLike, *, measure: str = DEFAULT_SELECTION_MEASURE,
           seed: int = 42, min_count: int = WEIGHTED_MIN_COUNT, split: str = "train",
           pool_path: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """`tinylm select`: choose n articles for `task` in the scale's tokens and write them to `out`."""
    data = scale_task(scale, task, root)
    tokenizer = load_tokenizer(scale.pretrain.tokenizer, root)
    started = time.perf_counter()
    pool = Pool.load(tokenizer, scale.pretrain.seq_len, pool_path, root)
    load_seconds = time.perf_counter() - started
    choice = choose_subset(pool, tokenizer, data, n, measure=measure, seed=seed, min_count=min_count, split=split,
                           seq_len=scale.pretrain.seq_len, random_seed=scale.pretrain.data_seed)
    write_subset(out, choice, root)
    return {**choice.summary, "scale": scale.name, "tokenizer": scale.pretrain.tokenizer,
            "pool_seconds": round(load_seconds, 2), "first": [a.title for a in choice.articles[:10]]}


# ---------------------------------------------------------------- estimate


def default_fit_path(scale: str) -> Path | None:
    """The committed results.json of `scale` in a source checkout (docs/results/<scale>/), if there is one."""
    path = _REPO_ROOT / "docs" / "results" / scale / "results.json"
    return path if path.is_file() else None


def fit_task_setup(results: dict[str, Any], task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pretrain_config, finetune_config) of the fit's runs on `task`: the tokens and sample overlap was measured in."""
    for r in results["records"]:
        if r.get("experiment") == "overlap" and r.get("task") == task and "pretrain_config" in r:
            return r["pretrain_config"], r["finetune_config"]
    tasks = sorted({r.get("task") for r in results["records"] if r.get("experiment") == "overlap"})
    raise ValueError(f"the fit's results have no experiment-3 runs on {task!r} (tasks: {', '.join(tasks) or 'none'})")


def read_subset(path: str | os.PathLike) -> list[Article]:
    """The articles of a selection folder (OUT of `tinylm select`, or any data folder) or of a .jsonl(.gz) file."""
    path = Path(path)
    if path.is_dir():
        path = articles_path(path)
    return list(read_articles(path))


def estimate(task: str, fit_path: str | os.PathLike, *, subset: str | os.PathLike | None = None,
             random_articles: int | None = None, measure: str = DEFAULT_MEASURE, confidence: float = 0.95,
             root: str | os.PathLike | None = None) -> dict[str, Any]:
    """`tinylm estimate`: the overlap of a candidate subset with `task` and the gap the stored fit predicts.

    The candidate is a subset folder/file, or (random_articles) the experiments' random subset of that size.
    Overlap is measured as the fit's runs measured it: their tokenizer, seq_len and task sample (train + test).
    """
    if (subset is None) == (random_articles is None):
        raise ValueError("give exactly one candidate: a subset folder/file, or a random subset size")
    results = load_results(fit_path)
    pre_cfg, ft_cfg = fit_task_setup(results, task)
    if subset is not None:
        articles, candidate = read_subset(subset), str(subset)
    else:
        articles = load_articles(random_articles, seed=pre_cfg["data_seed"], root=root,
                                 source=pre_cfg.get("data_source", "local"))
        candidate = f"random subset: first {random_articles} articles of the data-seed-{pre_cfg['data_seed']} order"
    data = load_task(task, root, train_per_label=ft_cfg["train_per_label"], test_per_label=ft_cfg["test_per_label"],
                     seed=ft_cfg["data_seed"], fewrel_markers=ft_cfg.get("fewrel_markers", False),
                     source=ft_cfg.get("data_source", "local"))
    tokenizer = load_tokenizer(pre_cfg["tokenizer"], root)
    seq_len = pre_cfg["seq_len"]
    measured = overlaps(count_tokens(tokenizer, [a.text for a in articles], seq_len),
                        count_tokens(tokenizer, task_texts(data, "all"), seq_len))
    predictions, fits = {}, {}
    for name in OVERLAP_MEASURES:
        try:
            fit = fit_gap_on_overlap(results["records"], name, confidence)
        except ValueError:  # the stored records lack this measure: predict from the others
            continue
        fits[name] = fit
        predictions[name] = fit.predict(100 * measured[name], confidence)
    if measure not in predictions:
        raise ValueError(f"the fit's results carry no {measure} overlap; measures available: {', '.join(predictions)}")
    return {
        "task": task, "candidate": candidate, "articles": len(articles), "fit_source": str(fit_path),
        "overlap": measured, "measure": measure, "confidence": confidence,
        "prediction": vars(predictions[measure]),
        "predictions": {name: vars(p) for name, p in predictions.items()},
        "fit": fit_summary(fits[measure]),
    }


def fit_summary(fit: GapFit) -> dict[str, Any]:
    """The fit with its points (GapFit.to_dict), so a report can redraw the line and its interval."""
    return {**fit.to_dict(), "overlap_range": [min(fit.x), max(fit.x)]}
