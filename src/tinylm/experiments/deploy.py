"""`tinylm reproduce deploy`: the committee's accuracy at one small model's latency, measured on this CPU.

Reads a finished `tinylm reproduce committee` folder (`--from`: its results.json and its run cache) and, for every
task and seed there, compares on the committee run's own test sample:

- the deep model, the full committee of N, smaller committees (the disjoint member groups of k of the trained
  committee: group 0 is the system timed and exported; every group's accuracy is reported), and a student
  distilled from the full committee (tinylm.train.distill: the members' shape, started from a pre-trained member);
- each in three runtimes: PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8 (onnx_export, dynamic
  quantization), with the export's own parity and accuracy reports;
- test accuracy, and CPU latency: p50/p95 at batch 1 and throughput at batch 64, with one thread and with all
  of the machine's threads.

Timing: inputs are the test texts, encoded beforehand (tokenisation is the same for every system and not timed).
On a shared machine load drifts, so each measurement is split into rounds and the systems take turns round by
round (a different order each round), which spreads drift over all systems instead of charging it to one.

Writes OUT/results.json (one row per task, seed and system), OUT/report.md, OUT/report.html and OUT/frontier.png
(accuracy against batch-1 latency); the students train under OUT/runs and the smaller committees and ONNX graphs
land in OUT/systems. Finished students and graphs are reused when the command is run again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.committee import Committee, load_classifier, load_committee, save_committee, soft_vote
from tinylm.config import FinetuneConfig, config_hash
from tinylm.data import TaskData
from tinylm.data.encoding import encode
from tinylm.experiments.committee import paired_bootstrap
from tinylm.experiments.results import results_document, write_results
from tinylm.experiments.scales import COUNT
from tinylm.inference.onnx import default_check_texts, export_onnx, report_path
from tinylm.inference.predictor import MAX_LENGTH, OnnxRuntime, Predictor, TorchRuntime
from tinylm.model import count_parameters
from tinylm.runtime import configure_threads
from tinylm.tokenizer import load_tokenizer
from tinylm.train.distill import DistillConfig, distill, folder_meta
from tinylm.train.evaluate import predict_proba
from tinylm.train.finetune import finetune_task
from tinylm.validation import TEXT, Allowed, each, integer, number, validate

RUNTIMES = ("torch", "onnx", "onnx-int8")
ROUNDS = 5  # timing rounds the systems take turns in
PLOT = "frontier.png"


@dataclass
class DeployScale:
    """What `reproduce deploy` trains and measures at one scale."""

    name: str
    distill: dict[str, Any]  # DistillConfig fields of every student (teacher, pre-trained committee and seed are set)
    committee_sizes: tuple[int, ...]  # committees besides the full one: disjoint groups of k members
    latency_texts: int = 200  # batch-1 timings per system and thread count
    throughput_batches: int = 5  # timed batches per system and thread count
    batch_size: int = 64
    warmup: int = 10  # untimed calls per system before timing
    parity_texts: int = 64  # the exports' probability parity check (onnx_export.default_check_texts)
    accuracy_tolerance: float = 0.5  # int8 rows losing more points than this are flagged

    def __post_init__(self) -> None:
        validate(self)
        DistillConfig(teacher="-", **self.distill)  # the same checks a student's config gets

    def rules(self) -> dict[str, Allowed]:
        return {"name": TEXT, "distill": Allowed(lambda v: isinstance(v, dict), "a dict of DistillConfig fields"),
                "committee_sizes": each(COUNT, allow_empty=True), "latency_texts": COUNT,
                "throughput_batches": COUNT, "batch_size": COUNT, "warmup": integer(0), "parity_texts": COUNT,
                "accuracy_tolerance": number(0)}


DEPLOY_SCALES: dict[str, DeployScale] = {
    # The CPU committee (4 x cpu-1 against cpu-6): committees of 4 and 2; the student is one cpu-1 member,
    # distilled on the task sample plus 2,000 texts of the unused training pool, fine-tuning's CPU recipe.
    "cpu": DeployScale(
        name="cpu", committee_sizes=(4, 2),
        distill={"unlabeled": "pool", "unlabeled_texts": 2000, "epochs": 10, "lr": 5e-4, "temperature": 2.0,
                 "alpha": 0.5, "save_every": 500},
    ),
    # The paper's 32 x BERT-1: committees of 32, 8 and 4 (the issue's). The local AG News pool leaves about 500
    # texts per label beside the paper's 1,000-per-label sample, hence 1,000 extra texts.
    "paper": DeployScale(
        name="paper", committee_sizes=(8, 4),
        distill={"unlabeled": "pool", "unlabeled_texts": 1000, "epochs": 10, "lr": 5e-5, "temperature": 2.0,
                 "alpha": 0.5, "save_every": 2000},
    ),
}


@dataclass
class System:
    """One model folder to measure: the deep model, a committee of `members`, or the student."""

    name: str
    family: str  # deep, committee or student
    members: int
    folder: Path


def reproduce_deploy(
    scale: DeployScale,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tasks: Sequence[str] | None = None,
    root: str | os.PathLike | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Distil, export and measure every (task, seed) of the committee run `source`; write results and report."""
    from tinylm.reports.deploy import render_deploy_report

    configure_threads()
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    committee_run = read_committee_run(source)
    records = [r for r in committee_run["records"] if tasks is None or r["task"] in tasks]
    if not records:
        raise ValueError(f"{source}: no committee records for tasks {', '.join(tasks or [])}")
    rows: list[dict[str, Any]] = []
    students: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    for record in records:
        found = deploy_record(scale, record, source / "runs", out, root, device)
        rows += found["rows"]
        students.append(found["student"])
        comparisons.append(found["comparison"])
    threads = thread_counts()
    results = results_document({
        "experiment": "deploy", "scale": scale.name, "source": str(source),
        "members": committee_run["members"], "member_model": committee_run["member_model"],
        "deep_model": committee_run["deep_model"], "tasks": list(dict.fromkeys(r["task"] for r in records)),
        "threads": threads[0], "all_threads": threads[-1], "batch_size": scale.batch_size,
        "latency_texts": scale.latency_texts, "throughput_batches": scale.throughput_batches,
        "accuracy_tolerance": scale.accuracy_tolerance,
    }, {"rows": rows, "students": students, "comparisons": comparisons}, started=started)
    write_results(out, results, lambda: render_deploy_report(results, out))
    return results


def read_committee_run(source: Path) -> dict[str, Any]:
    path = source / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no results.json; give the --out folder of a finished "
                                "`tinylm reproduce committee`")
    results = json.loads(path.read_text())
    if results.get("experiment") != "committee":
        raise ValueError(f"{path} is not a committee experiment's results (experiment: {results.get('experiment')})")
    return results


def deploy_record(scale: DeployScale, record: dict[str, Any], runs: Path, out: Path,
                  root: str | os.PathLike | None, device: str | None) -> dict[str, Any]:
    """One task and seed of the committee run: its student, its systems, their rows."""
    ft_cfg = FinetuneConfig(**{k: v for k, v in record["finetune_config"].items()
                               if k in {f.name for f in dataclasses.fields(FinetuneConfig)}})
    data = finetune_task(ft_cfg, root)  # the committee run's own task sample (and so its test texts)
    committee_dir = runs / record["runs"]["committee_finetune"] / "model"
    student_run = train_student(scale, record, runs, out / "runs", data, root, device)
    here = out / "systems" / f"{record['task']}-seed{record['seed']}"
    full = load_committee(committee_dir)
    systems = [System("deep", "deep", 1, runs / record["runs"]["deep_finetune"] / "model"),
               System(f"committee-{full.n}", "committee", full.n, committee_dir)]
    for k in sorted({k for k in scale.committee_sizes if k < full.n}, reverse=True):
        systems.append(System(f"committee-{k}", "committee", k, committee_group(full, committee_dir, k, here)))
    systems.append(System("student", "student", 1, student_run / "model"))
    labels = np.array([e.label for e in data.test])
    texts = [e.text for e in data.test]
    group_acc = group_accuracies(full, committee_dir, texts, labels, [s.members for s in systems
                                                                      if s.family == "committee"])
    check_texts = default_check_texts(scale.parity_texts)
    reports = {(s.name, q): exported(s, here, q, data, check_texts) for s in systems for q in (None, "int8")}
    timings = measure(systems, reports, texts, scale)
    rows = [row(record, s, rt, reports, timings, group_acc, scale) for s in systems for rt in RUNTIMES]
    comparison = compare(record, full, committee_dir, student_run / "model", texts, labels)
    student = {"task": record["task"], "seed": record["seed"], "run": student_run.name,
               **{k: v for k, v in json.loads((student_run / "metrics.json").read_text()).items()
                  if k not in ("per_class", "confusion_matrix", "label_names")}}
    return {"rows": rows, "student": student, "comparison": comparison}


def train_student(scale: DeployScale, record: dict[str, Any], runs: Path, student_runs: Path, data: TaskData,
                  root: str | os.PathLike | None, device: str | None) -> Path:
    """The student of this record's committee (cached under OUT/runs by its config, teacher named by its run)."""
    cfg = DistillConfig(teacher=str(runs / record["runs"]["committee_finetune"]),
                        pretrained=str(runs / record["runs"]["committee_pretrain"]), seed=record["seed"],
                        **scale.distill)
    # Keyed by run names, not paths, so that a moved committee folder keeps its students.
    key = {**cfg.to_dict(), "teacher": record["runs"]["committee_finetune"],
           "pretrained": record["runs"]["committee_pretrain"]}
    run = student_runs / f"distill-{config_hash(key)}"
    if not (run / "metrics.json").is_file():
        distill(cfg, run, root=root, device=device, task_data=data)
    return run


def committee_group(full: Committee, committee_dir: Path, k: int, here: Path) -> Path:
    """Members 0..k-1 of the committee (its first disjoint group of k) as a committee folder of their own, with the
    full committee's tokenizer, labels and fine-tuning config (which names the task sample)."""
    folder = here / f"committee-{k}"
    if not (folder / "config.json").is_file():
        group = Committee(full.cfg, k, {n: t.detach()[:k] for n, t in full.members.named_parameters()},
                          {n: t[:k] for n, t in full.members.named_buffers()}, num_labels=full.num_labels,
                          label_names=full.label_names)
        meta = folder_meta(committee_dir)
        save_committee(group, folder, load_tokenizer(committee_dir),
                       extra={"finetune": meta.get("finetune"), "committee": {"source": str(committee_dir),
                                                                              "members": list(range(k))}})
    return folder


def group_accuracies(full: Committee, committee_dir: Path, texts: list[str], labels: np.ndarray,
                     sizes: Sequence[int]) -> dict[int, list[float]]:
    """Soft-vote test accuracy (fp32, texts cut as served) of every disjoint group of k members, for each k: one
    pass of all members."""
    probs = predict_proba(full, load_tokenizer(committee_dir), texts, max_length=MAX_LENGTH, per_member=True)
    return {k: [float(np.mean(soft_vote(probs, range(g * k, (g + 1) * k)).argmax(-1).numpy() == labels))
                for g in range(full.n // k)] for k in sizes}


def exported(system: System, here: Path, quantize: str | None, data: TaskData,
             check_texts: list[str]) -> dict[str, Any]:
    """The system's ONNX graph (fp32 or int8) and export report, exported once into OUT/systems. The recipe reports
    every int8 graph's accuracy loss (and flags it) rather than refusing one: it is a comparison."""
    graph = here / f"{system.name}{'.int8' if quantize else ''}.onnx"
    if graph.is_file() and report_path(graph).is_file():
        return json.loads(report_path(graph).read_text())
    return export_onnx(system.folder, graph, quantize=quantize, accuracy_tolerance=None, task_data=data,
                       check_texts=check_texts)


# ----- timing -----


def thread_counts() -> list[int]:
    """One thread, and all of the machine's (once, on a one-core machine)."""
    return sorted({1, os.cpu_count() or 1})


@dataclass
class Timed:
    """A system in one runtime, ready to call, with its inputs encoded by its own tokenizer."""

    key: tuple[str, str]
    call: Callable[..., np.ndarray]
    singles: list[dict[str, np.ndarray]]
    batches: list[dict[str, np.ndarray]]


def measure(systems: Sequence[System], reports: dict, texts: list[str],
            scale: DeployScale) -> dict[tuple[str, str, int], dict[str, float]]:
    """Batch-1 latency and batch-64 throughput of every (system, runtime) at each thread count."""
    order = np.random.default_rng(0).permutation(len(texts))
    singles = [texts[i] for i in order[:scale.latency_texts]]
    batches = [[texts[order[(j * scale.batch_size + i) % len(texts)]] for i in range(scale.batch_size)]
               for j in range(scale.throughput_batches)]
    torch_models = {s.name: TorchRuntime(load_classifier(s.folder, "cpu")) for s in systems}
    saved = torch.get_num_threads()
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    try:
        for threads in thread_counts():
            torch.set_num_threads(threads)  # the PyTorch runtimes' threads; each ONNX session gets its own
            timed = []
            for s in systems:
                tokenizer = load_tokenizer(s.folder)
                ins = [encode(tokenizer, [t], MAX_LENGTH) for t in singles]
                big = [encode(tokenizer, b, MAX_LENGTH) for b in batches]
                timed.append(Timed((s.name, "torch"), torch_models[s.name], ins, big))
                for q, rt in ((None, "onnx"), ("int8", "onnx-int8")):
                    timed.append(Timed((s.name, rt), OnnxRuntime(reports[(s.name, q)]["onnx"], threads), ins, big))
            for key, value in time_interleaved(timed, scale.warmup).items():
                results[(*key, threads)] = value
    finally:
        torch.set_num_threads(saved)
    return results


def time_interleaved(timed: Sequence[Timed], warmup: int) -> dict[tuple[str, str], dict[str, float]]:
    """p50/p95 ms at batch 1 and texts/s at the large batch, the systems taking turns over ROUNDS rounds."""
    for t in timed:
        for inputs in (t.singles * (warmup // max(len(t.singles), 1) + 1))[:warmup] + t.batches[:1]:
            t.call(**inputs)
    single_s: dict[tuple[str, str], list[float]] = {t.key: [] for t in timed}
    batch_s: dict[tuple[str, str], list[float]] = {t.key: [] for t in timed}
    for r in range(ROUNDS):
        turn = [*timed[r % len(timed):], *timed[:r % len(timed)]]
        for t in turn:
            single_s[t.key] += [_seconds(t.call, x) for x in t.singles[r::ROUNDS]]
        for t in turn:
            batch_s[t.key] += [_seconds(t.call, x) for x in t.batches[r::ROUNDS]]
    out = {}
    for t in timed:
        texts = sum(len(x["input_ids"]) for x in t.batches)
        out[t.key] = {"p50_ms_batch1": round(1000 * float(np.percentile(single_s[t.key], 50)), 4),
                      "p95_ms_batch1": round(1000 * float(np.percentile(single_s[t.key], 95)), 4),
                      "throughput_batch64": round(texts / sum(batch_s[t.key]), 2)}
    return out


def _seconds(call: Callable[..., np.ndarray], inputs: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    call(**inputs)
    return time.perf_counter() - started


# ----- rows and the student-against-committee comparison -----


def row(record: dict[str, Any], system: System, runtime: str, reports: dict, timings: dict,
        group_acc: dict[int, list[float]], scale: DeployScale) -> dict[str, Any]:
    """One (task, seed, system) row: accuracy on the test sample, latency and throughput, size."""
    quantize = "int8" if runtime == "onnx-int8" else None
    report = reports[(system.name, quantize)]
    accuracy = report["accuracy"]
    one, every = thread_counts()[0], thread_counts()[-1]
    suffix = {"torch": "", "onnx": "-onnx", "onnx-int8": "-int8"}[runtime]
    out: dict[str, Any] = {
        "task": record["task"], "seed": record["seed"], "system": system.name + suffix, "model": system.name,
        "family": system.family, "members": system.members, "runtime": runtime,
        "accuracy": accuracy["torch_fp32"] if runtime == "torch" else accuracy["onnx"],
        **timings[(system.name, runtime, one)],
        **{f"{k}_all_threads": v for k, v in timings[(system.name, runtime, every)].items()},
        "bytes": (system.folder / "model.safetensors").stat().st_size if runtime == "torch" else report["bytes"],
    }
    if runtime == "torch":
        out["parameters"] = count_parameters(load_classifier(system.folder, "cpu"))
        if system.family == "committee":
            out["accuracy_groups"] = group_acc[system.members]
    if quantize:
        out["accuracy_loss_points"] = accuracy["loss_points"]
        out["within_tolerance"] = accuracy["loss_points"] <= scale.accuracy_tolerance
    return out


def compare(record: dict[str, Any], full: Committee, committee_dir: Path, student_dir: Path, texts: list[str],
            labels: np.ndarray) -> dict[str, Any]:
    """Student minus full committee on the test texts (fp32 both), with a paired bootstrap interval over texts."""
    committee_probs = Predictor.load(committee_dir, "torch", device="cpu").predict_proba(texts)
    student_probs = Predictor.load(student_dir, "torch", device="cpu").predict_proba(texts)
    return {"task": record["task"], "seed": record["seed"], "members": full.n,
            "student_minus_committee": paired_bootstrap(student_probs, committee_probs, labels, seed=record["seed"]),
            "agreement": float(np.mean(student_probs.argmax(1) == committee_probs.argmax(1)))}


__all__ = ["DEPLOY_SCALES", "DeployScale", "reproduce_deploy"]
