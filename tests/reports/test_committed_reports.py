"""Every committed report under docs/results is what its stored results.json renders to, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tinylm.experiments.paper import PAPER_NUMBERS
from tinylm.reports.arms import render_arms_report
from tinylm.reports.committee import render_committee_report
from tinylm.reports.curve import render_curve_report
from tinylm.reports.deploy import render_deploy_report
from tinylm.reports.experiments import render_report
from tinylm.reports.overlap_control import render_overlap_control_report
from tinylm.reports.selection import render_selection_report

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def render(results: dict[str, Any], out: Path) -> Path:
    """The renderer the recipe that wrote `results` uses; returns the markdown written."""
    kind = results.get("experiment")
    if kind == "committee":
        render_committee_report(results, out)
    elif kind == "curve":
        render_curve_report(results["records"], out)
    elif kind == "arms":
        render_arms_report(results, out)
    elif kind == "overlap-control":
        render_overlap_control_report(results, out)
    elif kind == "deploy":
        render_deploy_report(results, out)
    elif "selections" in results:
        render_selection_report(results, out)
    else:
        render_report(results["records"], out, PAPER_NUMBERS)
    return out / "report.md"


# docs/results/shipped is written by scripts/shipped_evidence.py, not by a reproduce recipe (its --quick run is
# tested in tests/cli/test_shipped_model.py).
STORED = sorted(p for p in RESULTS.rglob("results.json")
                if (p.parent / "report.md").is_file() and p.parent != RESULTS / "shipped")


@pytest.mark.parametrize("path", STORED, ids=[str(p.parent.relative_to(RESULTS)) for p in STORED])
def test_committed_report_re_renders_identically(path: Path, tmp_path: Path) -> None:
    written = render(json.loads(path.read_text()), tmp_path)
    assert written.read_text() == (path.parent / "report.md").read_text()


def test_every_committed_report_is_checked() -> None:
    assert len(STORED) >= 4
