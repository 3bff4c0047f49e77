"""The committee report (claim 4) from a stored results.json: markdown, self-contained HTML, one PNG plot.

Accuracy of a committee of k members is the mean over independent committees: the N/k disjoint groups of
each seed's members, over all seeds; '±' is the Student-t interval over those committees (none where there is
one committee, e.g. k = N with one seed). The deep model's interval is over seeds. The committee-minus-deep
difference at k = N is paired by seed, and for each seed a paired bootstrap over test texts says how much of it
the test sample alone could produce.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tinylm.analysis.stats import MeanCI, mean_ci
from tinylm.reports.experiments import Block, Bullets, Heading, Image, Para, Table, _task_key, to_html, to_markdown

PLOT = "accuracy_vs_members.png"


def _pct(m: MeanCI) -> str:
    """'72.9 ± 2.6' (percent), or '72.9' where there is no interval; the count has its own column."""
    return f"{100 * m.mean:.1f} ± {100 * m.half_width:.1f}" if m.has_ci else f"{100 * m.mean:.1f}"


def _subset_ci(records: Sequence[Mapping[str, Any]], k: int, vote: str) -> MeanCI:
    return mean_ci([a for r in records for a in r["subsets"][str(k)][vote]])


def _by_task(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    tasks: dict[str, list[Mapping[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (_task_key(r["task"]), r["seed"])):
        tasks.setdefault(r["task"], []).append(r)
    return tasks


def plot_accuracy_vs_members(results: Mapping[str, Any], path: Path) -> Path:
    """Soft-vote accuracy against committee size (log2 axis), one panel per task, deep model as a band."""
    tasks = _by_task(results["records"])
    sizes = results["committee_sizes"]
    fig = Figure(figsize=(4.2 * len(tasks), 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, (task, recs) in zip(axes, tasks.items(), strict=True):
        for vote, style in (("soft", "o-"), ("hard", "s--")):
            cis = [_subset_ci(recs, k, vote) for k in sizes]
            ax.errorbar(sizes, [100 * c.mean for c in cis], yerr=[100 * c.half_width if c.has_ci else 0 for c in cis],
                        fmt=style, capsize=3, label=f"committee, {vote} vote")
        deep = mean_ci([r["deep_accuracy"] for r in recs])
        ax.axhline(100 * deep.mean, color="black", lw=1.2, label=results["deep_model"])
        if deep.has_ci:
            ax.axhspan(100 * deep.low, 100 * deep.high, color="black", alpha=0.1)
        ax.set_ylim(top=min(100.0, ax.get_ylim()[1]))  # wide intervals of 2 committees run past 100 %
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(k) for k in sizes])
        ax.set_title(task)
        ax.set_xlabel(f"members ({results['member_model']})")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.savefig(path)
    return path


def committee_finding(task: str, diffs: MeanCI, boots: Sequence[Mapping[str, float]], n: int, deep: str) -> str:
    """One sentence per task, generated from the numbers: does the full committee reach the deep model?"""
    d = 100 * diffs.mean
    boot = "; ".join(f"[{100 * b['low']:+.1f}, {100 * b['high']:+.1f}]" for b in boots)
    where = f"committee of {n} minus {deep}: {d:+.1f} points"
    ci = f" (± {100 * diffs.half_width:.1f} over {diffs.n} seeds)" if diffs.has_ci else ""
    if d >= 0:
        verdict = "the committee reaches the deep model"
    elif all(b["high"] >= 0 for b in boots):
        verdict = (f"the committee falls short by {-d:.1f} points, within what the test sample alone "
                   f"could produce")
    else:
        verdict = f"the committee falls short by {-d:.1f} points"
    return f"{task}: {verdict}; {where}{ci}; paired bootstrap 95 % interval over test texts per seed: {boot}."


def build_committee_blocks(results: Mapping[str, Any], figure: str | None) -> list[Block]:
    records = results["records"]
    tasks = _by_task(records)
    n, deep, shallow = results["members"], results["deep_model"], results["member_model"]
    sizes = results["committee_sizes"]
    seeds = results["seeds"]
    unique: dict[str, float] = {}  # a run shared by several records (the pre-training) counts once
    for r in records:
        for kind, name in r["runs"].items():
            unique[name] = r["seconds"][kind]
    blocks: list[Block] = [
        Heading(f"tinylm: soft committee of {n} x {shallow} against {deep} (claim 4)", 1),
        Para(f"Scale {results['scale']}: {results['pretrain_articles']:,} pre-training articles for every model, "
             f"{seeds} seed{'s' if seeds != 1 else ''}; compute {sum(unique.values()) / 3600:.2f} h over "
             f"{len(unique)} runs on {results['machine'].get('cpu')} (threads: {results['machine'].get('threads')}"
             f"{', GPU ' + results['machine']['gpu'] if results['machine'].get('gpu') else ''})."),
        Para("Accuracies are test accuracies in percent. A committee of k is each of the N/k disjoint groups of k "
             "trained members (independent committees); '±' is the half-width of the 95 % Student-t interval "
             "over those committees and seeds (none with one committee). Soft vote: mean of the member "
             "probabilities (the paper's committee); hard vote: majority of member predictions."),
        Heading("Summary", 2),
    ]
    findings = []
    for task, recs in tasks.items():
        diffs = mean_ci([r["committee_minus_deep"]["difference"] for r in recs])
        findings.append(committee_finding(task, diffs, [r["committee_minus_deep"] for r in recs], n, deep))
    blocks.append(Bullets(findings))
    side = {kind: sum(unique[name] for name in {r["runs"][kind] for r in records})
            for kind in ("committee_pretrain", "committee_finetune", "deep_pretrain", "deep_finetune")}
    blocks.append(Para(
        f"Training time (wall clock as measured, so only a rough guide on a shared machine): the committee "
        f"{(side['committee_pretrain'] + side['committee_finetune']) / 60:.0f} min "
        f"(pre-training {side['committee_pretrain'] / 60:.0f}), {deep} "
        f"{(side['deep_pretrain'] + side['deep_finetune']) / 60:.0f} min (pre-training "
        f"{side['deep_pretrain'] / 60:.0f}). Both sides see the same articles for the same epochs; the committee "
        f"does the training work of {n} {shallow} models. Inference latency is measured separately by "
        "benchmarks/committee_latency.py."))
    blocks += _quality_blocks(records, shallow, deep)
    if figure:
        blocks.append(Image(figure, f"accuracy against committee size, with {deep}"))
    for task, recs in tasks.items():
        blocks.append(Heading(task, 2))
        rows = []
        for k in sizes:
            soft, hard = _subset_ci(recs, k, "soft"), _subset_ci(recs, k, "hard")
            rows.append([str(k), str(soft.n), _pct(soft), _pct(hard)])
        members = mean_ci([a for r in recs for a in r["member_accuracies"]])
        rows.append([f"mean single member ({shallow})", str(members.n), _pct(members), "–"])
        deep_ci = mean_ci([r["deep_accuracy"] for r in recs])
        rows.append([f"{deep} (seeds)", str(deep_ci.n), _pct(deep_ci), "–"])
        if all("deep_scratch_accuracy" in r for r in recs):
            scratch_ci = mean_ci([r["deep_scratch_accuracy"] for r in recs])
            rows.append([f"{deep} from scratch (seeds)", str(scratch_ci.n), _pct(scratch_ci), "–"])
        blocks.append(Table(["Members k", "Committees", "Soft vote acc. (%)", "Hard vote acc. (%)"], rows))
    blocks.append(Heading("Runs", 2))
    blocks.append(Table(
        ["Task", "Seed", "Best member (%)", "Worst member (%)", f"Soft vote of {n} (%)", f"{deep} (%)",
         "Committee - deep (points)"],
        [[r["task"], str(r["seed"]), f"{100 * max(r['member_accuracies']):.1f}",
          f"{100 * min(r['member_accuracies']):.1f}", f"{100 * r['subsets'][str(sizes[-1])]['soft'][0]:.1f}",
          f"{100 * r['deep_accuracy']:.1f}", f"{100 * r['committee_minus_deep']['difference']:+.1f}"]
         for recs in tasks.values() for r in recs]))
    return blocks


def _quality_blocks(records: Sequence[Mapping[str, Any]], shallow: str, deep: str) -> list[Block]:
    """Both sides' held-out MLM quality (one value per pre-training run) and the deep model's pre-training gap."""
    runs: dict[str, Mapping[str, Any]] = {}
    for r in records:
        runs[r["runs"]["committee_pretrain"]] = r.get("quality") or {}
    members = [q for quality in runs.values() for q in quality.get("members", [])]
    deeps = {r["runs"]["deep_pretrain"]: (r.get("quality") or {}).get("deep") for r in records}
    deeps = {k: v for k, v in deeps.items() if v}
    if not members or not deeps:
        return []

    def row(name: str, qs: Sequence[Mapping[str, Any]]) -> list[str]:
        return [name, str(len(qs)), _pct(mean_ci([q["mlm_accuracy"] for q in qs])),
                f"{100 * np.mean([q['unigram_accuracy'] for q in qs]):.1f}",
                f"{np.mean([q['mlm_loss'] for q in qs]):.2f}", f"{np.mean([q['unigram_loss'] for q in qs]):.2f}"]

    gaps = [f"{task} {100 * np.mean([r['deep_accuracy'] - r['deep_scratch_accuracy'] for r in recs]):+.1f}"
            for task, recs in _by_task(records).items() if all("deep_scratch_accuracy" in r for r in recs)]
    return [Heading("Did pre-training learn language?", 2),
            Para("Held-out masked-token accuracy on Wikipedia openings no model trains on, against the unigram "
                 "baseline (tinylm.mlm_quality); members are scored one by one as single models."
                 + (f" {deep} pre-trained minus its from-scratch twin (points, mean over seeds): "
                    + ", ".join(gaps) + "." if gaps else "")),
            Table(["Model", "Runs", "Held-out MLM acc. (%)", "Unigram acc. (%)", "MLM loss", "Unigram loss"],
                  [row(f"{shallow} (each member)", members), row(deep, list(deeps.values()))])]


def render_committee_report(results: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write report.md, report.html and the plot for a committee results.json (a dict, or its path)."""
    if not isinstance(results, Mapping):
        results = json.loads(Path(results).read_text())
    if not results.get("records"):
        raise ValueError("no committee records to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_accuracy_vs_members(results, out / PLOT)
    blocks = build_committee_blocks(results, PLOT)
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks, out, title="tinylm committee report"), encoding="utf-8")
    return [out / "report.md", out / "report.html", plot]


__all__ = ["build_committee_blocks", "plot_accuracy_vs_members", "render_committee_report"]
