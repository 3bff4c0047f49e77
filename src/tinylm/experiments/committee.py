"""`tinylm reproduce committee`: claim 4, a soft committee of shallow members against one deep model.

For every seed: N members of the shallow preset are pre-trained together on the same Wikipedia subset
(train.committee.pretrain_committee) and fine-tuned together on each task (finetune_committee); a deep model is
pre-trained and fine-tuned on the same data with the single-model recipes. Accuracy against committee size k
uses the trained members themselves: the N members split into N/k disjoint groups of k, each group one
committee of k (independently trained members, so the groups are independent committees). All runs are cached
by config hash under OUT/runs, so an interrupted sweep resumes.
"""

from __future__ import annotations

import functools
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
from tinylm.experiments.run_cache import cached_finetune, claimed, run_dir
from tinylm.experiments.scales import COUNT, SCALES, TASK_ORDER, TASK_SAMPLES
from tinylm.tokenizer import load_tokenizer
from tinylm.train.committee import finetune_committee, pretrain_committee
from tinylm.train.evaluate import predict_proba
from tinylm.train.flops import mlm_step_flops
from tinylm.train.pretrain import pretrain
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
    # Committee sizes also trained at the deep model's pre-training compute: each member gets the epochs that make
    # N members' FLOPs equal the deep model's (equal_compute_epochs), rounded to whole epochs.
    compute_members: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        validate(self)

    def rules(self) -> dict[str, Allowed]:
        return {"name": TEXT, "members": COUNT, "member_model": model_preset(), "deep_model": model_preset(),
                "pretrain": instance_of(PretrainConfig), "finetune": instance_of(FinetuneConfig),
                "samples": TASK_SAMPLES, "seeds": COUNT, "committee_sizes": each(COUNT),
                "compute_members": each(COUNT, allow_empty=True)}


COMMITTEE_SCALES: dict[str, CommitteeScale] = {
    # The paper: 32 BERT-1 against BERT-6, the experiments' paper recipe (90k articles, 50 + 50 epochs).
    "paper": CommitteeScale(
        name="paper", members=32, member_model="bert-1", deep_model="bert-6",
        pretrain=SCALES["paper"].pretrain, finetune=SCALES["paper"].finetune, samples=SCALES["paper"].samples,
        seeds=1,
    ),
    # CPU: the experiments' CPU recipe and shipped 4k vocabulary, 128-wide cpu-1 members against cpu-6 on the
    # sweep's largest subset (27,000 articles) for 2 epochs (3,376 MLM steps each), 3 seeds; sized to about
    # 3 core-hours. 4 members at the deep model's steps (1.12x its pre-training FLOPs) and 8 members at its
    # FLOPs (1 epoch each, also 1.12x). `--members 8` adds 8 at its steps; a GPU runs more (gpu_parallel_session).
    "cpu": CommitteeScale(
        name="cpu", members=4, member_model="cpu-1", deep_model="cpu-6",
        pretrain=replace(SCALES["cpu"].pretrain, articles=27_000, epochs=2, snapshots=0),
        finetune=SCALES["cpu"].finetune, samples=SCALES["cpu"].samples, seeds=3, committee_sizes=(1, 2, 4, 8),
        compute_members=(8,),
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
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train (or re-use) every run, then write OUT/results.json and the report (reports.committee).

    shard=(i, n) makes this process one of n workers sharing OUT/runs (CommitteeSweep.work_through) and writes
    no report; a call without shard then reports from the cache."""
    from tinylm.reports.committee import render_committee_report

    out, started = Path(out), time.perf_counter()
    scale = replace(scale, members=members)  # checked like any scale; None keeps the scale's
    sweep = CommitteeSweep(scale, tuple(k for k in scale.committee_sizes if k <= scale.members), out / "runs",
                           root, device)
    n_seeds = seeds or scale.seeds
    task_data = load_task_samples(scale, tasks, root)
    if shard is not None:
        sweep.work_through(sweep_seeds(n_seeds), shard, task_data)
        return {"shard": list(shard), "seeds": n_seeds}
    records = []
    for seed in tqdm(sweep_seeds(n_seeds), desc=f"reproduce committee ({scale.name})",
                     disable=not is_main_process(), unit="seed"):
        records += sweep.seed_records(seed, task_data)
    results = results_document(
        {"experiment": "committee", "scale": scale.name, "members": scale.members,
         "member_model": scale.member_model, "deep_model": scale.deep_model, "committee_sizes": list(sweep.sizes),
         "compute_members": list(scale.compute_members),
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

    def pretrain_jobs(self, seed: int) -> list[tuple[str, PretrainConfig, int | None]]:
        """One seed's pre-trainings: (cache kind, config, members; None for the deep model)."""
        scale, n = self.scale, self.scale.members
        member_cfg = replace(scale.pretrain, model=scale.member_model, seed=seed)
        jobs: list[tuple[str, PretrainConfig, int | None]] = [
            (f"committee{n}-pretrain", member_cfg, n),
            ("pretrain", replace(scale.pretrain, model=scale.deep_model, seed=seed), None)]
        for m in scale.compute_members:
            jobs.append((f"committee{m}-pretrain", replace(member_cfg, epochs=equal_compute_epochs(scale, m)), m))
        return jobs

    def pretrained(self, job: tuple[str, PretrainConfig, int | None], wait: bool = True) -> Path | None:
        """The finished run of one pre-training job, trained here if nobody has; with wait=False, None when
        another process holds it."""
        kind, cfg, members = job
        out = run_dir(self.runs, kind, cfg, self.root)
        with claimed(out, wait) as mine:
            if not mine:
                return None
            if not (out / "summary.json").is_file():
                if members is None:
                    pretrain(cfg, out, root=self.root, device=self.device)
                else:
                    pretrain_committee(cfg, members, out, root=self.root, device=self.device)
        return out

    def work_through(self, seeds: list[int], shard: tuple[int, int], task_data: dict[str, TaskData]) -> None:
        """One of n workers over the cache: its share of the pre-trainings first, then any nobody holds, then
        every seed's fine-tunings and comparisons (waiting for the models other workers train)."""
        i, n = shard
        seeds = list(seeds)
        jobs = [job for seed in seeds for job in self.pretrain_jobs(seed)]
        for job in jobs[i::n] + [job for j, job in enumerate(jobs) if j % n != i]:
            self.pretrained(job, wait=False)
        for seed in seeds[i::n] + [s for j, s in enumerate(seeds) if j % n != i]:
            self.seed_records(seed, task_data)

    def seed_records(self, seed: int, task_data: dict[str, TaskData]) -> list[dict[str, Any]]:
        """Pre-train one seed's committees and deep model, then fine-tune and compare them on every task."""
        pre_dir, deep_dir, *compute_dirs = [self.pretrained(job) for job in self.pretrain_jobs(seed)]
        compute = dict(zip(self.scale.compute_members, compute_dirs, strict=True))
        return [self.task_record(task, seed, data, pre_dir, deep_dir, compute) for task, data in task_data.items()]

    def committee_run(self, ft: FinetuneConfig, members: int, pre_dir: Path, data: TaskData) -> Path:
        """The fine-tuned committee of `members` from pre_dir (cached)."""
        cfg = replace(ft, model=self.scale.member_model, init=str(pre_dir))
        out = run_dir(self.runs, f"committee{members}-finetune", cfg, self.root)
        with claimed(out):
            if not (out / "metrics.json").is_file():
                finetune_committee(cfg, members, out, root=self.root, device=self.device, task_data=data)
        return out

    def task_record(self, task: str, seed: int, data: TaskData, pre_dir: Path, deep_dir: Path,
                    compute: dict[int, Path]) -> dict[str, Any]:
        """The committee and the deep model (and its scratch twin) fine-tuned on one task, compared on its test;
        and each committee trained at the deep model's compute."""
        scale, n, runs = self.scale, self.scale.members, self.runs
        ft = finetune_recipe(scale, task, seed)
        ft_dir = self.committee_run(ft, n, pre_dir, data)
        committee_metrics = _read_json(ft_dir / "metrics.json")
        deep = cached_finetune(replace(ft, model=scale.deep_model, init=str(deep_dir)), runs, self.root,
                               self.device, data)
        # The deep model's scratch twin: did pre-training help the model the committee is compared with?
        deep_scratch = cached_finetune(replace(ft, model=scale.deep_model, tokenizer=scale.pretrain.tokenizer),
                                       runs, self.root, self.device, data)
        deep_probs = _deep_probs(runs / deep["run"], [e.text for e in data.test], ft.precision)
        member_probs = np.load(ft_dir / "member_probs.npy")
        labels = np.array([e.label for e in data.test])
        equal_compute = {}
        for m, m_pre in compute.items():
            m_ft = self.committee_run(ft, m, m_pre, data)
            probs = np.load(m_ft / "member_probs.npy")
            epochs = _read_json(m_pre / "pretrain_config.json")["epochs"]
            equal_compute[str(m)] = {
                "members": m, "epochs": epochs, "compute_ratio": compute_ratio(scale, m, epochs),
                "member_accuracies": [float((p.argmax(-1) == labels).mean()) for p in probs],
                "soft_accuracy": float((soft_vote(probs).numpy().argmax(-1) == labels).mean()),
                "committee_minus_deep": paired_bootstrap(soft_vote(probs).numpy(), deep_probs, labels, seed=seed),
                "quality": member_qualities(m_pre),
                "seconds": {"pretrain": _read_json(m_pre / "summary.json")["seconds"],
                            "finetune": _read_json(m_ft / "metrics.json")["train_seconds"]},
                "runs": {"pretrain": m_pre.name, "finetune": m_ft.name}}
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
            **({"equal_compute": equal_compute} if equal_compute else {}),
        }


def step_flops(scale: CommitteeScale, model: str) -> int:
    """FLOPs of one pre-training step of `model` with the scale's batch shape and vocabulary (train.flops)."""
    cfg = scale.pretrain
    return _counted_flops(model, cfg.tokenizer, cfg.batch_size, cfg.seq_len, cfg.mask_prob)


@functools.cache
def _counted_flops(model: str, tokenizer: str, batch_size: int, seq_len: int, mask_prob: float) -> int:
    # Counting builds the model and runs a step: once per shape, though every seed's jobs and records ask again.
    return mlm_step_flops(model, len(load_tokenizer(tokenizer)), batch_size, seq_len, mask_prob)


def compute_ratio(scale: CommitteeScale, members: int, epochs: int) -> float:
    """Pre-training FLOPs of `members` members trained `epochs` epochs over the deep model's (same articles and
    batches, so the same steps per epoch)."""
    shallow, deep = step_flops(scale, scale.member_model), step_flops(scale, scale.deep_model)
    return members * shallow * epochs / (deep * scale.pretrain.epochs)


def equal_compute_epochs(scale: CommitteeScale, members: int) -> int:
    """Whole epochs per member that bring `members` members' pre-training FLOPs nearest the deep model's."""
    best = max(1, round(1 / compute_ratio(scale, members, 1)))
    return min((best - 1, best, best + 1), key=lambda e: abs(compute_ratio(scale, members, e) - 1) if e else 9e9)


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
