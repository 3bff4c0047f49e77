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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.analysis.stats import MeanCI, mean_ci
from tinylm.reports.render import (
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Table,
    by_task,
    err_points,
    fmt_mean_ci,
    new_canvas,
    pct,
    write_report,
)

PLOT = "accuracy_vs_members.png"


def _subset_ci(records: Sequence[Mapping[str, Any]], k: int, vote: str) -> MeanCI:
    return mean_ci([a for r in records for a in r["subsets"][str(k)][vote]])


def _by_task(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records per task, tasks in the paper's order, seeds ascending."""
    return by_task(sorted(records, key=lambda r: r["seed"]))


def plot_accuracy_vs_members(results: Mapping[str, Any], path: Path) -> Path:
    """Soft-vote accuracy against committee size (log2 axis), one panel per task, deep model as a band."""
    tasks = _by_task(results["records"])
    sizes = results["committee_sizes"]
    fig = new_canvas((4.2 * len(tasks), 3.8))
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, (task, recs) in zip(axes, tasks.items(), strict=True):
        for vote, style in (("soft", "o-"), ("hard", "s--")):
            cis = [_subset_ci(recs, k, vote) for k in sizes]
            ax.errorbar(sizes, [100 * c.mean for c in cis], yerr=[err_points(c) for c in cis],
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


def committee_finding(task: str, diffs: MeanCI, boots: Sequence[Mapping[str, float]], n: int, deep: str,
                      how: str = "") -> str:
    """One sentence per task, generated from the numbers: does the committee of n (trained `how`) reach the deep
    model? Over several seeds the verdict is the interval over seeds; with one seed, the bootstrap over texts."""
    d = 100 * diffs.mean
    boot = "; ".join(f"[{100 * b['low']:+.1f}, {100 * b['high']:+.1f}]" for b in boots)
    where = f"committee of {n}{how} minus {deep}: {d:+.1f} points"
    ci = f" (± {100 * diffs.half_width:.1f} over {diffs.n} seeds)" if diffs.has_ci else ""
    if diffs.has_ci:
        if diffs.low > 0:
            verdict = f"the committee beats the deep model by {d:.1f} points, its interval over seeds above 0"
        elif diffs.high < 0:
            verdict = f"the committee falls short by {-d:.1f} points, its interval over seeds below 0"
        else:
            verdict = "no difference the seeds resolve (the interval over seeds includes 0)"
    elif d >= 0:
        verdict = "the committee reaches the deep model"
    elif all(b["high"] >= 0 for b in boots):
        verdict = (f"the committee falls short by {-d:.1f} points, within what the test sample alone "
                   f"could produce")
    else:
        verdict = f"the committee falls short by {-d:.1f} points"
    return f"{task}: {verdict}; {where}{ci}; paired bootstrap 95 % interval over test texts per seed: {boot}."


def _unique_seconds(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per training run; a run shared by several records (the pre-training) counts once."""
    unique: dict[str, float] = {}
    for r in records:
        for kind, name in r["runs"].items():
            unique[name] = r["seconds"][kind]
        for c in (r.get("equal_compute") or {}).values():  # the committees trained at the deep model's compute
            unique.update({c["runs"][kind]: c["seconds"][kind] for kind in ("pretrain", "finetune")})
    return unique


def _intro_blocks(results: Mapping[str, Any], unique: Mapping[str, float]) -> list[Block]:
    n, deep, shallow, seeds = results["members"], results["deep_model"], results["member_model"], results["seeds"]
    machine = results["machine"]
    return [
        Heading(f"tinylm: soft committee of {n} x {shallow} against {deep} (claim 4)", 1),
        Para(f"Scale {results['scale']}: {results['pretrain_articles']:,} pre-training articles for every model, "
             f"{seeds} seed{'s' if seeds != 1 else ''}; compute {sum(unique.values()) / 3600:.2f} h over "
             f"{len(unique)} runs on {machine.get('cpu')} (threads: {machine.get('threads')}"
             f"{', GPU ' + machine['gpu'] if machine.get('gpu') else ''})."),
        Para("Accuracies are test accuracies in percent. A committee of k is each of the N/k disjoint groups of k "
             "trained members (independent committees); '±' is the half-width of the 95 % Student-t interval "
             "over those committees and seeds (none with one committee). Soft vote: mean of the member "
             "probabilities (the paper's committee); hard vote: majority of member predictions."),
    ]


def _summary_blocks(results: Mapping[str, Any], unique: Mapping[str, float]) -> list[Block]:
    """A finding per task, then the training time of each side."""
    records, n, deep, shallow = results["records"], results["members"], results["deep_model"], results["member_model"]
    findings = []
    for task, recs in _by_task(records).items():
        diffs = mean_ci([r["committee_minus_deep"]["difference"] for r in recs])
        findings.append(committee_finding(task, diffs, [r["committee_minus_deep"] for r in recs], n, deep))
        for m in results.get("compute_members") or []:
            runs = [r["equal_compute"][str(m)] for r in recs]
            diffs = mean_ci([c["committee_minus_deep"]["difference"] for c in runs])
            findings.append(committee_finding(task, diffs, [c["committee_minus_deep"] for c in runs], m, deep,
                                              how=" at equal compute"))
    side = {kind: sum(unique[name] for name in {r["runs"][kind] for r in records})
            for kind in ("committee_pretrain", "committee_finetune", "deep_pretrain", "deep_finetune")}
    equal_compute = ""
    for m in results.get("compute_members") or []:
        runs = [r["equal_compute"][str(m)] for r in records]
        pre, fine = (sum(unique[name] for name in {c["runs"][kind] for c in runs}) for kind in ("pretrain", "finetune"))
        equal_compute += (f"; the {m} members at equal compute: {(pre + fine) / 60:.0f} min "
                          f"(pre-training {pre / 60:.0f})")
    return [Heading("Summary", 2), Bullets(findings), Para(
        f"Training time, all seeds (wall clock as measured, so only a rough guide on a shared machine): the "
        f"committee of {n}: {(side['committee_pretrain'] + side['committee_finetune']) / 60:.0f} min "
        f"(pre-training {side['committee_pretrain'] / 60:.0f}){equal_compute}; {deep}: "
        f"{(side['deep_pretrain'] + side['deep_finetune']) / 60:.0f} min (pre-training "
        f"{side['deep_pretrain'] / 60:.0f}). Both sides see the same articles for the same epochs; the committee "
        f"does the training work of {n} {shallow} models. Inference latency is measured separately by "
        "benchmarks/committee_latency.py.")]


def _task_blocks(task: str, recs: Sequence[Mapping[str, Any]], sizes: Sequence[int], shallow: str, deep: str
                 ) -> list[Block]:
    """Accuracy of every committee size for one task, next to a single member and the deep model."""
    rows = []
    for k in sizes:
        soft, hard = _subset_ci(recs, k, "soft"), _subset_ci(recs, k, "hard")
        rows.append([str(k), str(soft.n), fmt_mean_ci(soft, count=False), fmt_mean_ci(hard, count=False)])
    others = [(f"mean single member ({shallow})", mean_ci([a for r in recs for a in r["member_accuracies"]])),
              (f"{deep} (seeds)", mean_ci([r["deep_accuracy"] for r in recs]))]
    if all("deep_scratch_accuracy" in r for r in recs):
        others.append((f"{deep} from scratch (seeds)", mean_ci([r["deep_scratch_accuracy"] for r in recs])))
    rows += [[name, str(ci.n), fmt_mean_ci(ci, count=False), "–"] for name, ci in others]
    return [Heading(task, 2),
            Table(["Members k", "Committees", "Soft vote acc. (%)", "Hard vote acc. (%)"], rows)]


def _runs_blocks(results: Mapping[str, Any]) -> list[Block]:
    n, deep, largest = results["members"], results["deep_model"], str(results["committee_sizes"][-1])
    return [Heading("Runs", 2), Table(
        ["Task", "Seed", "Best member (%)", "Worst member (%)", f"Soft vote of {n} (%)", f"{deep} (%)",
         "Committee - deep (points)"],
        [[r["task"], str(r["seed"]), pct(max(r["member_accuracies"])), pct(min(r["member_accuracies"])),
          pct(r["subsets"][largest]["soft"][0]), pct(r["deep_accuracy"]),
          pct(r["committee_minus_deep"]["difference"], signed=True)]
         for recs in _by_task(results["records"]).values() for r in recs])]


def comparisons(results: Mapping[str, Any]) -> list[tuple[str, Callable[[Mapping[str, Any]], list[float]]]]:
    """(name, per-record committee accuracies) of every committee the report sets against the deep model: each
    size k > 1 at the deep model's steps (its groups averaged within a seed), then each size trained at the deep
    model's pre-training compute."""
    n = results["members"]
    out: list[tuple[str, Callable[[Mapping[str, Any]], list[float]]]] = []
    for k in results["committee_sizes"]:
        if k > 1:
            out.append((f"{k} members, equal steps" + (f" (the {n} split in {n // k})" if k < n else ""),
                        lambda r, k=k: r["subsets"][str(k)]["soft"]))
    for m in results.get("compute_members") or []:
        out.append((f"{m} members, equal compute", lambda r, m=m: [r["equal_compute"][str(m)]["soft_accuracy"]]))
    return out


def _over_seeds_blocks(results: Mapping[str, Any]) -> list[Block]:
    """Committee minus deep per task and comparison: one difference per seed (its committees averaged), the
    mean over seeds with its Student-t interval; and what each committee cost and learned."""
    rows, deep, share = [], results["deep_model"], _member_share(results)
    for task, recs in _by_task(results["records"]).items():
        for name, accuracies in comparisons(results):
            diffs = mean_ci([float(np.mean(accuracies(r))) - r["deep_accuracy"] for r in recs])
            m = name.split()[0]
            compute = [r["equal_compute"][m] for r in recs] if "compute" in name else []
            ratio = (f"{compute[0]['compute_ratio']:.2f}" if compute
                     else f"{int(m) * share:.2f}" if share else "–")
            quality = [q["mlm_accuracy"] for c in compute for q in c["quality"]] if compute else [
                q["mlm_accuracy"] for r in recs for q in (r.get("quality") or {}).get("members", [])]
            rows.append([task, name, ratio, pct(float(np.mean(quality))) if quality else "–",
                         f"{100 * diffs.mean:+.1f}" + (f" ± {100 * diffs.half_width:.1f}" if diffs.has_ci else ""),
                         str(diffs.n)])
    return [Heading(f"Committee minus {deep}, over seeds", 2),
            Para(f"Soft-vote accuracy minus {deep}'s, in points: one difference per pre-training seed (the seed's "
                 "committees of that size averaged), then the mean over seeds with its 95 % Student-t half-width. "
                 f"Compute: the committee's pre-training FLOPs over {deep}'s (tinylm.train.flops, one step of each "
                 "counted on the same batch; equal-compute members train whole epochs, so the ratio is near, not "
                 "at, 1)."),
            Table(["Task", "Committee", "Compute vs deep", "Members' held-out MLM acc. (%)",
                   "Committee - deep (points)", "Seeds"], rows)]


def _member_share(results: Mapping[str, Any]) -> float | None:
    """One member's FLOPs per step over the deep model's, from a stored equal-compute ratio (None without one)."""
    for r in results["records"]:
        for c in (r.get("equal_compute") or {}).values():
            return c["compute_ratio"] * r["pretrain_config"]["epochs"] / (c["members"] * c["epochs"])
    return None


def build_committee_blocks(results: Mapping[str, Any], figure: str | None) -> list[Block]:
    records = results["records"]
    deep, shallow = results["deep_model"], results["member_model"]
    unique = _unique_seconds(records)
    # Results written before the equal-compute committees (no compute_members) render as they were written.
    over_seeds = _over_seeds_blocks(results) if "compute_members" in results else []
    per_run = _per_run_quality_blocks(results) if "compute_members" in results else []
    blocks: list[Block] = [*_intro_blocks(results, unique), *_summary_blocks(results, unique), *over_seeds,
                           *_quality_blocks(records, shallow, deep), *per_run]
    if figure:
        blocks.append(Image(figure, f"accuracy against committee size, with {deep}"))
    for task, recs in _by_task(records).items():
        blocks += _task_blocks(task, recs, results["committee_sizes"], shallow, deep)
    return blocks + _runs_blocks(results)


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
        return [name, str(len(qs)), fmt_mean_ci(mean_ci([q["mlm_accuracy"] for q in qs]), count=False),
                pct(np.mean([q["unigram_accuracy"] for q in qs])),
                f"{np.mean([q['mlm_loss'] for q in qs]):.2f}", f"{np.mean([q['unigram_loss'] for q in qs]):.2f}"]

    gaps = [f"{task} {pct(np.mean([r['deep_accuracy'] - r['deep_scratch_accuracy'] for r in recs]), signed=True)}"
            for task, recs in _by_task(records).items() if all("deep_scratch_accuracy" in r for r in recs)]
    return [Heading("Did pre-training learn language?", 2),
            Para("Held-out masked-token accuracy on Wikipedia openings no model trains on, against the unigram "
                 "baseline (tinylm.mlm_quality); members are scored one by one as single models."
                 + (f" {deep} pre-trained minus its from-scratch twin (points, mean over seeds): "
                    + ", ".join(gaps) + "." if gaps else "")),
            Table(["Model", "Runs", "Held-out MLM acc. (%)", "Unigram acc. (%)", "MLM loss", "Unigram loss"],
                  [row(f"{shallow} (each member)", members), row(deep, list(deeps.values()))])]


def _per_run_quality_blocks(results: Mapping[str, Any]) -> list[Block]:
    """Every pre-training run's held-out MLM accuracy, each member's own: did every member learn?"""
    rows, seen = [], set()
    deep, shallow, n = results["deep_model"], results["member_model"], results["members"]
    for r in sorted(results["records"], key=lambda r: r["seed"]):
        epochs = r["pretrain_config"]["epochs"]
        runs = [(r["runs"]["deep_pretrain"], deep, epochs, [r["quality"]["deep"]]),
                (r["runs"]["committee_pretrain"], f"{n} x {shallow}", epochs, r["quality"]["members"])]
        runs += [(c["runs"]["pretrain"], f"{c['members']} x {shallow}", c["epochs"], c["quality"])
                 for c in (r.get("equal_compute") or {}).values()]
        for name, model, run_epochs, qualities in runs:
            if name in seen or not qualities or not all(qualities):
                continue
            seen.add(name)
            rows.append([str(r["seed"]), model, str(run_epochs),
                         ", ".join(pct(q["mlm_accuracy"]) for q in qualities)])
    if not rows:
        return []
    return [Heading("Held-out MLM accuracy of every pre-training run", 2),
            Para("One row per pre-training run; a committee's members are scored one by one (%)."),
            Table(["Seed", "Model", "Epochs", "Held-out MLM acc. (%)"], rows)]


def render_committee_report(results: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write report.md, report.html and the plot for a committee results.json (a dict, or its path)."""
    if not isinstance(results, Mapping):
        results = json.loads(Path(results).read_text())
    if not results.get("records"):
        raise ValueError("no committee records to report")
    return write_report(out_dir, "tinylm committee report",
                        lambda figures: build_committee_blocks(results, figures.get(PLOT)),
                        {PLOT: lambda p: plot_accuracy_vs_members(results, p)})


__all__ = ["build_committee_blocks", "plot_accuracy_vs_members", "render_committee_report"]
