"""`tinylm select`, `tinylm estimate` and `tinylm reproduce selection`: pre-training data chosen by overlap.

- select: rank the articles of a pool (the shared Wikipedia file) by their contribution to token overlap with
  a task's texts (tinylm.analysis.selection) and write the top N as a data folder, OUT/wikipedia/articles.jsonl.gz,
  that `tinylm pretrain --data OUT --articles N` trains on, with OUT/selection.json saying what was chosen.
- estimate: a candidate subset's overlap with a task, and the gap the stored gap-vs-overlap fit predicts for
  it (tinylm.analysis.gap_fit), with its prediction interval.
- reproduce selection: pre-train on the selected subset of each task and on the experiments' random subset
  of the same size, fine-tune both (and the scratch twin) per seed, and compare measured with predicted gaps.

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
from tqdm.auto import tqdm

from tinylm.analysis.gap_fit import GapFit, fit_gap_on_overlap, load_results
from tinylm.analysis.overlap import DEFAULT_MEASURE, OVERLAP_MEASURES, WEIGHTED_MIN_COUNT, count_tokens
from tinylm.analysis.selection import DEFAULT_SELECTION_MEASURE, Selection, count_matrix, greedy_select, objective
from tinylm.checkpoint import write_json
from tinylm.config import replace
from tinylm.data import Article, DataError, TaskData, articles_path, data_root, load_articles, load_task, read_articles
from tinylm.data.wikipedia import ARTICLES_FILE
from tinylm.experiments.paper import FIRST_SEED, finetune_pair, machine_info, results_command, token_overlaps
from tinylm.experiments.run_cache import cached_pretrain
from tinylm.experiments.scales import TASK_ORDER, Scale
from tinylm.tokenizer import load_tokenizer

SPLITS = ("train", "all")  # which task texts drive the selection: train only (default) or train + test
# One size per scale keeps the CPU sweep within about half an hour; the paper's 20k is its smallest size
# (the local pool holds 51,959 articles, so a 40k "selection" would be most of it).
SELECTION_SIZES: dict[str, tuple[int, ...]] = {"cpu": (2000,), "paper": (20_000,)}
REPRO_MEASURES: tuple[str, ...] = ("weighted", "mass")
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
        from tinylm.train.pretrain import encode_cached  # imports torch; only pool users pay for it

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
        "fit": _fit_summary(fits[measure]),
    }


def _fit_summary(fit: GapFit) -> dict[str, Any]:
    """The fit with its points (GapFit.to_dict), so a report can redraw the line and its interval."""
    return {**fit.to_dict(), "overlap_range": [min(fit.x), max(fit.x)]}


# ---------------------------------------------------------------- reproduce selection


def reproduce_selection(
    scale: Scale,
    out: str | os.PathLike,
    fit_path: str | os.PathLike,
    *,
    sizes: tuple[int, ...] | None = None,
    measures: tuple[str, ...] = REPRO_MEASURES,
    seeds: int | None = None,
    tasks: tuple[str, ...] = TASK_ORDER,
    runs: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    selection_seed: int = 42,
    split: str = "train",
    confidence: float = 0.95,
    pool_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Selected vs random subsets of equal size, per task and seed; writes results.json and the report into out.

    runs: the run cache (default OUT/runs). Point it at the experiments' OUT/runs to re-use their random-subset
    and scratch runs: those configs are the experiments' own, so they hash to the same folders.
    pool_path: the articles to select from (default: the data folder's Wikipedia file, the random subsets' pool).
    """
    from tinylm.reports.selection import render_selection_report  # matplotlib: only when a report is written

    out, started = Path(out), time.perf_counter()
    runs_dir = Path(runs) if runs else out / "runs"
    n_seeds = seeds or scale.seeds
    sizes = sizes or SELECTION_SIZES.get(scale.name, (min(scale.sizes),))
    results = load_results(fit_path)
    fits = {m: _fit_summary(fit_gap_on_overlap(results["records"], m, confidence)) for m in OVERLAP_MEASURES
            if any(m in (r.get("overlap") or {}) for r in results["records"])}
    # Load and check every task sample first, so bad data fails before any training.
    task_data = {t: scale_task(scale, t, root) for t in tasks}

    # The selections: one per (task, size, measure), written as data folders under RUNS/subsets.
    tokenizer = load_tokenizer(scale.pretrain.tokenizer, root)
    pool = Pool.load(tokenizer, scale.pretrain.seq_len, pool_path, root)
    choices: dict[tuple[str, int, str], tuple[SubsetChoice, Path]] = {}
    for task in tasks:
        for size in sizes:
            for measure in measures:
                choice = choose_subset(pool, tokenizer, task_data[task], size, measure=measure, seed=selection_seed,
                                       split=split, seq_len=scale.pretrain.seq_len,
                                       random_seed=scale.pretrain.data_seed)
                folder = runs_dir / "subsets" / f"{task}-{measure}-{size}-{choice.id}"
                if not (folder / "selection.json").is_file():
                    write_subset(folder, choice, root)
                choices[(task, size, measure)] = (choice, folder)
    random_overlap = token_overlaps(scale, sizes, task_data, root)

    records: list[dict[str, Any]] = []
    plan = [(seed, size) for seed in range(FIRST_SEED, FIRST_SEED + n_seeds) for size in sizes]
    for seed, size in tqdm(plan, desc=f"reproduce selection ({scale.name})", unit="seed"):
        pre_cfg = replace(scale.pretrain, articles=size, seed=seed)
        random_dir = cached_pretrain(pre_cfg, runs_dir, root, device)
        for task in tasks:
            pretrained, scratch, ft = finetune_pair(scale, task, seed, random_dir, runs_dir, root, device,
                                                    task_data[task])
            records.append(_record("random", None, task, size, seed, random_dir, pretrained, scratch, pre_cfg, ft,
                                   random_overlap[(task, size)], None))
            for measure in measures:
                choice, folder = choices[(task, size, measure)]
                # Same recipe and seed; only the articles differ: the data folder holds just the selected ones.
                sel_dir = cached_pretrain(pre_cfg, runs_dir, folder, device, kind=f"pretrain-selected-{choice.id}")
                pretrained, scratch, ft = finetune_pair(scale, task, seed, sel_dir, runs_dir, root, device,
                                                        task_data[task])
                records.append(_record("selected", measure, task, size, seed, sel_dir, pretrained, scratch, pre_cfg,
                                       ft, choice.summary["overlap"], choice.id))

    summary = {
        "command": results_command(),
        "scale": scale.name, "sizes": list(sizes), "seeds": n_seeds, "tasks": list(tasks),
        "measures": list(measures), "split": split, "selection_seed": selection_seed,
        "samples_per_label": {t: scale.samples[t] for t in tasks},
        "pool": {"path": str(pool.path), "articles": len(pool.articles)},
        "fit_source": _shown(fit_path), "fit": fits, "confidence": confidence,
        "selections": [{**c.summary, "first": [a.title for a in c.articles[:10]]} for c, _ in choices.values()],
        "machine": machine_info(), "seconds": round(time.perf_counter() - started, 1), "records": records,
    }
    write_json(out / "results.json", summary)
    render_selection_report(summary, out)
    return summary


def _shown(path: str | os.PathLike) -> str:
    """A path relative to the working folder where it lies below it (reports stay readable on other machines)."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _record(arm: str, measure: str | None, task: str, size: int, seed: int, pre_dir: Path, pretrained: dict[str, Any],
            scratch: dict[str, Any], pre_cfg: Any, ft: Any, overlap: dict[str, float],
            selection: str | None) -> dict[str, Any]:
    pre_seconds = float(json.loads((pre_dir / "summary.json").read_text())["seconds"])
    return {
        "arm": arm, "measure": measure, "selection": selection, "task": task, "articles": size, "seed": seed,
        "pretrained_accuracy": pretrained["accuracy"], "scratch_accuracy": scratch["accuracy"],
        "pretrained_macro_f1": pretrained["macro_f1"], "scratch_macro_f1": scratch["macro_f1"],
        "overlap": overlap,
        "seconds": round(pre_seconds + pretrained["train_seconds"] + scratch["train_seconds"], 1),
        "timings": {"pretrain": pre_seconds, "finetune": pretrained["train_seconds"],
                    "scratch": scratch["train_seconds"]},
        "runs": {"pretrain": pre_dir.name, "finetune": pretrained["run"], "scratch": scratch["run"]},
        "pretrain_config": pre_cfg.to_dict(), "finetune_config": ft.to_dict(),
    }
