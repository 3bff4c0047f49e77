"""What the shipped model buys: fine-tuned from it and from scratch (its twin), on every task, over five seeds.

    TINYLM_THREADS=2 python scripts/shipped_evidence.py [--model FOLDER] [--out docs/results/shipped]
        [--runs runs/shipped-evidence] [--seeds 5] [--quick]

FOLDER (default: the installed shipped model, tinylm-mini) is fine-tuned with the CPU scale's recipe and task
samples (tinylm.experiments.scales SCALES['cpu'], tinylm.experiments.pairs.finetune_recipe) on the three built-in
tasks, and with the same recipe on the project's example CSV (examples/ag_news_sample.csv, a stratified half held
out as the test set: 50 training and 50 test rows per class); next to each, its twin from scratch (same
architecture, tokenizer, recipe, data and seed; random weights), as `tinylm finetune --init scratch` trains it.
Seeds 42, 43, ... (the sweeps' seeds). Then one fine-tuning of 2,000 AG News training rows (a temporary CSV; 500 per
class, 200 test rows) from FOLDER is timed on one thread (TINYLM_THREADS=1), as `tinylm finetune --preset demo`
runs it. Runs are cached under RUNS/<weights digest> (re-running resumes); OUT/results.json holds every record
and OUT/report.md the per-task mean gap with its 95 % t-interval over seeds (tinylm.analysis.stats.paired_gap).

--quick: the same path on a tiny budget (two seeds, a few examples per label, one epoch, 200 timed rows), to check
that it runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tinylm.analysis.stats import paired_gap
from tinylm.checkpoint import model_folder, shipped_model
from tinylm.config import FinetuneConfig, replace
from tinylm.data import load_task
from tinylm.experiments.pairs import finetune_recipe, sweep_seeds
from tinylm.experiments.run_cache import cached_finetune
from tinylm.experiments.scales import SCALES

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ag_news_sample.csv"
EXAMPLE_COLUMNS = {"text_column": "content", "label_column": "label"}
EXAMPLE_TEST_FRACTION = 0.5  # 200 training and 200 test rows of 400: a test set four times the README's 80
TIMED_ROWS, TIMED_TEST_ROWS = 2000, 200
SCALE = SCALES["cpu"]
TASKS = tuple(SCALE.samples)
QUICK_NOTE = " --quick (a smoke test: these figures mean nothing)"
QUICK = {"seeds": 2, "per_label": (4, 4), "timed_rows": 200, "timed_test_rows": 40}


def weights_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:12]


def recipes(quick: bool) -> dict[str, FinetuneConfig]:
    """Each source's fine-tuning config (seed and init still to set): the built-in tasks' and the example CSV's."""
    found = {task: finetune_recipe(SCALE, task, 0) for task in TASKS}
    # a user's file is used whole (as `tinylm finetune --train-file` uses it), not the preset's per-label sample
    found["examples/ag_news_sample.csv"] = dataclasses.replace(
        SCALE.finetune, train_file=str(EXAMPLE), test_fraction=EXAMPLE_TEST_FRACTION, train_per_label=None,
        test_per_label=None, **EXAMPLE_COLUMNS)
    if quick:
        train, test = QUICK["per_label"]
        found = {k: replace(v, epochs=1, max_length=64, train_per_label=train, test_per_label=test)
                 for k, v in found.items()}
    return found


def twins(cfg: FinetuneConfig, folder: Path) -> dict[str, FinetuneConfig]:
    """The config fine-tuned from `folder` and its from-scratch twin (`--init scratch`: init None, the folder as the
    tokenizer, which gives the twin the folder's architecture too)."""
    return {"shipped": replace(cfg, init=str(folder)), "scratch": replace(cfg, tokenizer=str(folder))}


def fine_tune_pairs(folder: Path, runs: Path, seeds: range, quick: bool, root: str | None) -> list[dict[str, Any]]:
    records = []
    for source, recipe in recipes(quick).items():
        for seed in seeds:
            record: dict[str, Any] = {"source": source, "seed": seed}
            for twin, cfg in twins(replace(recipe, seed=seed), folder).items():
                metrics = cached_finetune(cfg, runs, root)
                record |= {f"{twin}_accuracy": metrics["accuracy"], f"{twin}_macro_f1": metrics["macro_f1"],
                           f"{twin}_train_seconds": metrics["train_seconds"], f"{twin}_run": metrics["run"]}
            records.append(record)
            print(json.dumps(record), flush=True)
    return records


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "text"])
        writer.writerows(rows)


def timed_finetune(folder: Path, rows: int, test_rows: int, quick: bool, root: str | None) -> dict[str, Any]:
    """One `tinylm finetune --preset demo` of `rows` AG News training rows from `folder`, on one thread."""
    per_label = rows // 4
    task = load_task("ag_news", root, train_per_label=per_label, test_per_label=test_rows // 4)
    with tempfile.TemporaryDirectory(prefix="shipped-timing-") as tmp:
        train_csv, test_csv, out = Path(tmp) / "train.csv", Path(tmp) / "test.csv", Path(tmp) / "run"
        write_rows(train_csv, [(task.label_names[e.label], e.text) for e in task.train])
        write_rows(test_csv, [(task.label_names[e.label], e.text) for e in task.test])
        command = ["finetune", "--preset", "demo", "--init", str(folder), "--train-file", str(train_csv),
                   "--test-file", str(test_csv), *(["--epochs", "1"] if quick else []), "--out", str(out)]
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tinylm.cli", *command], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "TINYLM_THREADS": "1"})
        wall = time.perf_counter() - started
        metrics = json.loads((out / "metrics.json").read_text())
    return {"command": "TINYLM_THREADS=1 tinylm finetune --preset demo --init MODEL --train-file TRAIN.csv "
                       f"--test-file TEST.csv{' --epochs 1' if quick else ''}",
            "train_rows": len(task.train), "test_rows": len(task.test), "threads": 1, "steps": metrics["steps"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": round(wall, 1),
            "accuracy": metrics["accuracy"]}


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for source in dict.fromkeys(r["source"] for r in records):
        mine = [r for r in records if r["source"] == source]
        gap = paired_gap([r["shipped_accuracy"] for r in mine], [r["scratch_accuracy"] for r in mine])
        means = {key: sum(r[key] for r in mine) / len(mine) for key in
                 ("shipped_accuracy", "scratch_accuracy", "shipped_train_seconds", "scratch_train_seconds")}
        rows.append({"source": source, "seeds": len(mine), "shipped": means["shipped_accuracy"],
                     "scratch": means["scratch_accuracy"], "gap": gap.mean,
                     "ci": [gap.low, gap.high] if gap.has_ci else None,
                     "shipped_seconds": means["shipped_train_seconds"],
                     "scratch_seconds": means["scratch_train_seconds"]})
    return rows


def report(result: dict[str, Any]) -> str:
    def pts(x: float) -> str:
        return f"{100 * x:+.1f}"

    lines = [
        "# The shipped model against its from-scratch twin", "",
        f"Written by `scripts/shipped_evidence.py`{QUICK_NOTE if result['quick'] else ''} on "
        f"`{result['model']['folder_name']}` (weights {result['model']['weights']}), "
        f"{result['threads']} thread(s). Each row: {result['recipe']}; the same seeds for both twins; the gap is "
        "shipped minus scratch test accuracy in points, its interval the 95 % t-interval of the per-seed gaps.", "",
        "| task / data | seeds | shipped | scratch | gap (points) | 95 % interval | fine-tuning s (shipped, scratch) "
        "|",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["summary"]:
        ci = f"[{pts(r['ci'][0])}, {pts(r['ci'][1])}]" if r["ci"] else "n/a (one seed)"
        lines.append(f"| {r['source']} | {r['seeds']} | {r['shipped']:.3f} | {r['scratch']:.3f} | {pts(r['gap'])} | "
                     f"{ci} | {r['shipped_seconds']:.0f}, {r['scratch_seconds']:.0f} |")
    t = result["timing"]
    lines += [
        "", f"Fine-tuning wall time in all: {result['total_train_seconds'] / 60:.1f} min of training loops "
        f"({len(result['records']) * 2} fine-tunings).", "",
        f"One fine-tuning of {t['train_rows']:,} AG News rows from the shipped model on one thread (`{t['command']}`): "
        f"{t['steps']} steps, {t['train_seconds']:.0f} s of training, {t['wall_seconds']:.0f} s of wall time in all "
        f"(start, data, evaluation on {t['test_rows']} rows); test accuracy {t['accuracy']:.3f}.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="the model folder (default: the installed shipped model)")
    p.add_argument("--out", default=str(REPO / "docs" / "results" / "shipped"))
    p.add_argument("--runs", default=str(REPO / "runs" / "shipped-evidence"))
    p.add_argument("--seeds", type=int, default=None, help="seeds per task (default 5; --quick: 2)")
    p.add_argument("--data", default=None, help="data folder (default: $TINYLM_DATA)")
    p.add_argument("--quick", action="store_true", help="a tiny budget, to check the script runs")
    args = p.parse_args(argv)
    folder = model_folder(args.model) if args.model else shipped_model("shipped")
    assert folder is not None
    seeds = sweep_seeds(args.seeds or (QUICK["seeds"] if args.quick else 5))
    runs = Path(args.runs) / weights_digest(folder)
    started = time.perf_counter()
    records = fine_tune_pairs(folder, runs, seeds, args.quick, args.data)
    timing = timed_finetune(folder, *((QUICK["timed_rows"], QUICK["timed_test_rows"]) if args.quick
                                      else (TIMED_ROWS, TIMED_TEST_ROWS)), args.quick, args.data)
    recipe = SCALE.finetune
    result = {
        "model": {"folder": str(folder), "folder_name": folder.name, "weights": weights_digest(folder)},
        "quick": args.quick, "threads": torch.get_num_threads(),
        "recipe": f"the CPU scale's fine-tuning recipe ({recipe.epochs if not args.quick else 1} epoch(s), lr "
                  f"{recipe.lr:g}, batch {recipe.batch_size}, {recipe.warmup_ratio:.0%} warm-up, dropout "
                  f"{recipe.dropout}) on its task samples",
        "records": records, "summary": summary_rows(records), "timing": timing,
        "total_train_seconds": round(sum(r["shipped_train_seconds"] + r["scratch_train_seconds"] for r in records), 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(report(result), encoding="utf-8")
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
