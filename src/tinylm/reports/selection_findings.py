"""The selection runs judged: one cell per (task, size, arm) and the verdicts on it.

Input is the records of the results.json that `tinylm reproduce selection` writes. One record
is one seed of one arm ("random", or "selected" with the selection measure) for one (task, size); all arms of a
seed share the scratch twin. selection_finding says whether a selected subset beats the random one;
prediction_finding whether experiment 3's stored fit predicted its gap. The report is tinylm.reports.selection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tinylm.analysis.gap_fit import GapFit, GapPrediction
from tinylm.analysis.overlap import DEFAULT_MEASURE
from tinylm.analysis.stats import MeanCI, mean_ci, paired_gap
from tinylm.reports.render import fmt_mean_ci

HELPS, HURTS, UNCLEAR = "helps", "hurts", "no clear difference"


@dataclass(frozen=True)
class ArmCell:
    """All seeds of one arm for one (task, size)."""

    arm: str  # "random" or "selected:<measure>"
    task: str
    articles: int
    pretrained: MeanCI
    scratch: MeanCI
    gap: MeanCI  # paired by seed
    vs_random: MeanCI | None  # selected minus random pre-trained accuracy, paired by seed (None for random)
    overlap: dict[str, float]
    seeds: tuple[int, ...]


def arm_name(record: Mapping[str, Any]) -> str:
    return "random" if record["arm"] == "random" else f"selected:{record['measure']}"


def summarise_arms(records: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[ArmCell]:
    """One ArmCell per (task, size, arm); random first, then the selection measures in record order."""
    groups: dict[tuple[str, int, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["articles"], arm_name(r))].append(r)
    arms = list(dict.fromkeys(["random", *(arm_name(r) for r in records)]))
    cells = []
    for (task, size, arm), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], arms.index(kv[0][2]))):
        runs = sorted(runs, key=lambda r: r["seed"])
        pre = [r["pretrained_accuracy"] for r in runs]
        scratch = [r["scratch_accuracy"] for r in runs]
        vs_random = None
        if arm != "random":
            random = {r["seed"]: r["pretrained_accuracy"] for r in groups.get((task, size, "random"), [])}
            paired = [(r["pretrained_accuracy"], random[r["seed"]]) for r in runs if r["seed"] in random]
            if paired:
                vs_random = paired_gap([a for a, _ in paired], [b for _, b in paired], confidence)
        cells.append(ArmCell(arm, task, size, mean_ci(pre, confidence), mean_ci(scratch, confidence),
                             paired_gap(pre, scratch, confidence), vs_random, dict(runs[0].get("overlap") or {}),
                             tuple(r["seed"] for r in runs)))
    return cells


def selection_finding(cell: ArmCell, confidence: float = 0.95) -> tuple[str, str]:
    """(verdict, sentence): does the selected subset beat the random one of the same size, paired by seed?"""
    d = cell.vs_random
    label = f"{cell.task}, {cell.articles:,} articles, {cell.arm.split(':')[1]} selection"
    if d is None:
        return UNCLEAR, f"{label}: no random-subset runs with the same seeds to compare with."
    diff = fmt_mean_ci(d, signed=True, unit=" points")
    level = f"{confidence:.0%}"
    if d.excludes(0) and d.mean > 0:
        return HELPS, f"{label}: selection helps: pre-trained accuracy {diff} over the random subset ({level} CI > 0)."
    if d.excludes(0):
        return HURTS, (f"{label}: selection hurts: pre-trained accuracy {diff} against the random subset "
                       f"({level} CI < 0).")
    why = "its CI includes 0" if d.has_ci else "one seed gives no CI"
    return UNCLEAR, f"{label}: no clear difference: pre-trained accuracy {diff} against the random subset ({why})."


def predict_gap(fit: GapFit, cell: ArmCell, confidence: float) -> GapPrediction | None:
    """The fit's prediction at the cell's overlap; None where the cell lacks the fit's measure."""
    return fit.predict(100 * cell.overlap[fit.measure], confidence) if fit.measure in cell.overlap else None


def prediction_finding(cell: ArmCell, pred: GapPrediction) -> str:
    """Whether the measured mean gap of `cell` lies in the fit's prediction interval."""
    inside = pred.covers(100 * cell.gap.mean)
    where = "inside" if inside else ("above" if 100 * cell.gap.mean > pred.high else "below")
    extra = "; the overlap lies outside the fitted range, so this is an extrapolation" if pred.extrapolation else ""
    return (f"{cell.task}, {cell.arm}: predicted {pred.gap:+.1f} points ({pred.confidence:.0%} PI {pred.low:+.1f} to "
            f"{pred.high:+.1f}) at {pred.overlap:.2f} % {DEFAULT_MEASURE} overlap, measured "
            f"{fmt_mean_ci(cell.gap, signed=True)}: {where} the interval{extra}.")
