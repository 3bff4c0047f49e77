"""`tinylm reproduce committee`: claim 4, a soft committee of shallow members against one deep model.

For every seed: N members of the shallow preset are pre-trained together on the same Wikipedia subset
(train.committee.pretrain_committee) and fine-tuned together on each task (finetune_committee); a deep model is
pre-trained and fine-tuned on the same data with the single-model recipes. Accuracy against committee size k
uses the trained members themselves: the N members split into N/k disjoint groups of k, each group one
committee of k (independently trained members, so the groups are independent committees). All runs are cached
by config hash under OUT/runs, so an interrupted sweep resumes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tinylm.committee import hard_vote, load_classifier, soft_vote
from tinylm.config import FinetuneConfig, PretrainConfig, model_preset, replace
from tinylm.data import TaskData
from tinylm.distributed import is_main_process
from tinylm.experiments.pairs import finetune_recipe, load_task_samples, pretrain_quality, sweep_seeds
from tinylm.experiments.results import results_document, write_results
from tinylm.experiments.run_cache import cached_finetune, cached_pretrain, run_dir
from tinylm.experiments.scales import COUNT, SCALES, TASK_ORDER, TASK_SAMPLES
from tinylm.tokenizer import load_tokenizer
from tinylm.train.committee import finetune_committee, pretrain_committee
from tinylm.train.evaluate import predict_proba
from tinylm.validation import TEXT, Allowed, each, instance_of, validate

BOOTSTRAP_SAMPLES = 2000


@dataclass
class CommitteeScale:
    """One scale of the committee experiment."""

    name: str
    members: int
    member_model: str  # the shallow preset of every member
    deep_model: str  # the deep model the committee is compared with
    pretrain: PretrainConfig  # shared by both sides except `model`
    finetune: FinetuneConfig
    samples: dict[str, tuple[int, int]]  # task -> (train, test) per label
    seeds: int
    committee_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)

    def __post_init__(self) -> None:
        validate(self)

    def rules(self) -> dict[str, Allowed]:
        return {"name": TEXT, "members": COUNT, "member_model": model_preset(), "deep_model": model_preset(),
                "pretrain": instance_of(PretrainConfig), "finetune": instance_of(FinetuneConfig),
                "samples": TASK_SAMPLES, "seeds": COUNT, "committee_sizes": each(COUNT)}


COMMITTEE_SCALES: dict[str, CommitteeScale] = {
    # The paper: 32 BERT-1 against BERT-6, the experiments' paper recipe (90k articles, 50 + 50 epochs).
    "paper": CommitteeScale(
        name="paper", members=32, member_model="bert-1", deep_model="bert-6",
        pretrain=SCALES["paper"].pretrain, finetune=SCALES["paper"].finetune, samples=SCALES["paper"].samples,
        seeds=1,
    ),
    # CPU: the experiments' CPU recipe and shipped 4k vocabulary, 128-wide cpu-1 members against cpu-6, both
    # pre-trained on the largest CPU size (27,000 articles x 4 epochs, 3,376 MLM steps each): at 12,000 articles
    # the one-layer members had not left the unigram stage. 4 members, not 32: on 2 cores a member costs as much
    # as a single model, and 32 of them at this budget do not fit the hour.
    "cpu": CommitteeScale(
        name="cpu", members=4, member_model="cpu-1", deep_model="cpu-6",
        pretrain=replace(SCALES["cpu"].pretrain, articles=27_000, snapshots=0), finetune=SCALES["cpu"].finetune,
        samples=SCALES["cpu"].samples, seeds=1, committee_sizes=(1, 2, 4),
    ),
}


def reproduce_committee(
    scale: CommitteeScale,
    out: str | os.PathLike,
    *,
    seeds: int | None = None,
    members: int | None = None,
    tasks: tuple[str, ...] = TASK_ORDER,
    root: str | os.PathLike | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train (or re-use) every run, then write OUT/results.json and the report (reports.committee)."""
    from tinylm.reports.committee import render_committee_report

    out, started = Path(out), time.perf_counter()
    scale = replace(scale, members=members)  # checked like any scale; None keeps the scale's
    sweep = CommitteeSweep(scale, tuple(k for k in scale.committee_sizes if k <= scale.members), out / "runs",
                           root, device)
    n_seeds = seeds or scale.seeds
    task_data = load_task_samples(scale, tasks, root)
    records = []
    for seed in tqdm(sweep_seeds(n_seeds), desc=f"reproduce committee ({scale.name})",
                     disable=not is_main_process(), unit="seed"):
        records += sweep.seed_records(seed, task_data)
    results = results_document(
        {"experiment": "committee", "scale": scale.name, "members": scale.members,
         "member_model": scale.member_model, "deep_model": scale.deep_model, "committee_sizes": list(sweep.sizes),
         "seeds": n_seeds, "tasks": list(tasks), "pretrain_articles": scale.pretrain.articles,
         "samples_per_label": {t: scale.samples[t] for t in tasks}},
        {"records": records}, started=started)
    write_results(out, results, lambda: render_committee_report(results, out))
    return results


@dataclass(frozen=True)
class CommitteeSweep:
    """Where and how one committee sweep trains: its scale, the committee sizes it reports, its run cache."""

    scale: CommitteeScale
    sizes: tuple[int, ...]
    runs: Path
    root: str | os.PathLike | None
    device: str | None

    def seed_records(self, seed: int, task_data: dict[str, TaskData]) -> list[dict[str, Any]]:
        """Pre-train one seed's committee and deep model, then fine-tune and compare both on every task."""
        scale, n = self.scale, self.scale.members
        shallow_pre = replace(scale.pretrain, model=scale.member_model, seed=seed)
        pre_dir = run_dir(self.runs, f"committee{n}-pretrain", shallow_pre, self.root)
        if not (pre_dir / "summary.json").is_file():
            pretrain_committee(shallow_pre, n, pre_dir, root=self.root, device=self.device)
        deep_pre = replace(scale.pretrain, model=scale.deep_model, seed=seed)
        deep_dir = cached_pretrain(deep_pre, self.runs, self.root, self.device)
        return [self.task_record(task, seed, data, pre_dir, deep_dir) for task, data in task_data.items()]

    def task_record(self, task: str, seed: int, data: TaskData, pre_dir: Path, deep_dir: Path) -> dict[str, Any]:
        """The committee and the deep model (and its scratch twin) fine-tuned on one task, compared on its test."""
        scale, n, runs = self.scale, self.scale.members, self.runs
        ft = finetune_recipe(scale, task, seed)
        shallow_ft = replace(ft, model=scale.member_model, init=str(pre_dir))
        ft_dir = run_dir(runs, f"committee{n}-finetune", shallow_ft, self.root)
        if not (ft_dir / "metrics.json").is_file():
            finetune_committee(shallow_ft, n, ft_dir, root=self.root, device=self.device, task_data=data)
        committee_metrics = _read_json(ft_dir / "metrics.json")
        deep = cached_finetune(replace(ft, model=scale.deep_model, init=str(deep_dir)), runs, self.root,
                               self.device, data)
        # The deep model's scratch twin: did pre-training help the model the committee is compared with?
        deep_scratch = cached_finetune(replace(ft, model=scale.deep_model, tokenizer=scale.pretrain.tokenizer),
                                       runs, self.root, self.device, data)
        deep_probs = _deep_probs(runs / deep["run"], [e.text for e in data.test], ft.precision)
        member_probs = np.load(ft_dir / "member_probs.npy")
        labels = np.array([e.label for e in data.test])
        return {
            "task": task, "seed": seed, "members": n,
            **committee_record(member_probs, labels, self.sizes),
            "deep_accuracy": deep["accuracy"], "deep_scratch_accuracy": deep_scratch["accuracy"],
            "quality": {"members": member_qualities(pre_dir), "deep": pretrain_quality(deep_dir)},
            "committee_minus_deep": paired_bootstrap(soft_vote(member_probs).numpy(), deep_probs, labels, seed=seed),
            "seconds": {"committee_pretrain": _read_json(pre_dir / "summary.json")["seconds"],
                        "committee_finetune": committee_metrics["train_seconds"],
                        "deep_pretrain": _read_json(deep_dir / "summary.json")["seconds"],
                        "deep_finetune": deep["train_seconds"]},
            "runs": {"committee_pretrain": pre_dir.name, "committee_finetune": ft_dir.name,
                     "deep_pretrain": deep_dir.name, "deep_finetune": deep["run"]},
            "pretrain_config": scale.pretrain.to_dict(), "finetune_config": ft.to_dict(),
        }


def committee_record(member_probs: np.ndarray, labels: np.ndarray, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Accuracies of the members and of every disjoint group of k consecutive members, soft and hard vote."""
    n = member_probs.shape[0]
    subsets: dict[str, dict[str, list[float]]] = {}
    for k in sizes:
        groups = [list(range(g * k, (g + 1) * k)) for g in range(n // k)]
        subsets[str(k)] = {
            "soft": [float((soft_vote(member_probs, g).argmax(-1).numpy() == labels).mean()) for g in groups],
            "hard": [float((hard_vote(member_probs, g).numpy() == labels).mean()) for g in groups],
        }
    return {"member_accuracies": [float((p.argmax(-1) == labels).mean()) for p in member_probs],
            "subsets": subsets}


def paired_bootstrap(probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray, *, seed: int,
                     samples: int = BOOTSTRAP_SAMPLES, confidence: float = 0.95) -> dict[str, float]:
    """Accuracy of a minus accuracy of b on the same test texts, with a paired bootstrap interval over texts:
    how much of the difference the test sample alone could produce (the trained models held fixed)."""
    right_a = probs_a.argmax(-1) == labels
    right_b = probs_b.argmax(-1) == labels
    diff = right_a.astype(float) - right_b.astype(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(samples, len(diff)))
    boot = diff[idx].mean(1)
    tail = (1 - confidence) / 2
    return {"difference": float(diff.mean()), "low": float(np.quantile(boot, tail)),
            "high": float(np.quantile(boot, 1 - tail)), "samples": samples}


def member_qualities(pre_dir: Path) -> list[dict[str, Any]]:
    """Each committee member's held-out MLM quality, as pretrain_quality gives a single model's."""
    qualities = _read_json(pre_dir / "summary.json").get("member_quality") or []
    keep = ("mlm_loss", "mlm_accuracy", "unigram_loss", "unigram_accuracy")
    return [{**{k: q[k] for k in keep}, "cloze_top5": q["cloze"]["top5"]} for q in qualities if "mlm_accuracy" in q]


def _deep_probs(run: Path, texts: list[str], precision: Any) -> np.ndarray:
    return predict_proba(load_classifier(run / "model"), load_tokenizer(run / "model"), texts, precision=precision)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
