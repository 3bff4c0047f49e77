"""The demo's figures live in one place, docs/results/demo.json: the README's demo table quotes them (checked in
the default suite) and `tinylm demo` reproduces them (the slow test, several minutes: `python -m pytest -m slow`).

A change that moves the demo's numbers must update docs/results/demo.json and the README table together.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "docs" / "results" / "demo.json"
README = REPO / "README.md"
BEGIN, END = "<!-- demo figures: docs/results/demo.json -->", "<!-- end demo figures -->"


def stored() -> dict[str, Any]:
    return json.loads(FIGURES.read_text())


def printed(figures: dict[str, Any]) -> dict[str, str]:
    """The figures as the README and `tinylm demo` print them."""
    return {"pretrained": f"{figures['pretrained']:.3f}", "scratch": f"{figures['scratch']:.3f}",
            "gap": f"{figures['gap_points']:+.1f}", "articles": f"{figures['articles']:,}",
            "epochs": str(figures["epochs"]), "steps": str(figures["steps"]),
            "test_examples": str(figures["test_examples"])}


def from_results(results: dict[str, Any]) -> dict[str, str]:
    """A demo's results.json in the same form (the gap in points, as the CLI prints it)."""
    return printed({"pretrained": results["pretrained"]["accuracy"], "scratch": results["scratch"]["accuracy"],
                    "gap_points": 100 * results["gap"], "articles": results["pretrain"]["articles"],
                    "epochs": results["config"]["pretrain"]["epochs"], "steps": results["pretrain"]["steps"],
                    "test_examples": results["pretrained"]["test_examples"]})


def readme_table() -> dict[str, str]:
    """The figures in the README's demo table (the block between the demo-figures markers)."""
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "the README's demo table must sit between the markers"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    patterns = {
        "test_examples": r"\| \| AG News test accuracy \((\d+) texts",
        "articles": r"\| pre-trained \(MLM on ([\d,]+) Wikipedia openings",
        "epochs": r"Wikipedia openings, (\d+) epochs",
        "steps": r"epochs, (\d+) steps\) \|",
        "pretrained": r"\| pre-trained [^|]*\| (\d\.\d{3}) \|",
        "scratch": r"\| from scratch [^|]*\| (\d\.\d{3}) \|",
        "gap": r"\| \*\*gap\*\* \| \*\*([+-]\d+\.\d) points\*\* \|",
    }
    found = {}
    for key, pattern in patterns.items():
        matches = re.findall(pattern, block)
        assert len(matches) == 1, f"README demo table: expected one {key} ({pattern}), found {matches}"
        found[key] = matches[0]
    return found


def test_readme_demo_table_quotes_docs_results_demo_json() -> None:
    figures = stored()
    assert {"pretrained", "scratch", "gap_points", "articles", "epochs", "steps", "test_examples"} <= set(figures)
    # The gap is the accuracies' difference (up to the rounding of each to 3 digits).
    assert abs(100 * (figures["pretrained"] - figures["scratch"]) - figures["gap_points"]) <= 0.1 + 1e-9
    assert readme_table() == printed(figures)


@pytest.mark.slow
def test_demo_reproduces_the_stored_figures(tmp_path: Path) -> None:
    """`tinylm demo` as a user runs it (several minutes), with the thread count the figures were measured with:
    its results.json and its printout give docs/results/demo.json's figures."""
    figures = stored()
    env = {**os.environ, "TINYLM_THREADS": str(figures["threads"])}
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "tinylm.cli", "demo", "--out", str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["threads"] == figures["threads"]
    assert from_results(results) == printed(figures), (
        f"this machine {results['machine']} vs the figures' {figures['measured_on']}: if the code changed the "
        "numbers, update docs/results/demo.json and the README's demo table; bf16 results also differ between "
        "CPUs with and without AMX / AVX512-BF16 (README, What is bit-reproducible)")
    want = printed(figures)
    lines = done.stdout.splitlines()
    assert any("pre-trained" in line and line.endswith(want["pretrained"]) for line in lines), done.stdout
    assert any("from scratch" in line and line.endswith(want["scratch"]) for line in lines), done.stdout
    assert any(line.split()[:1] == ["gap"] and line.endswith(f"{want['gap']} points") for line in lines), done.stdout
    assert results["pretrained"]["accuracy"] > results["scratch"]["accuracy"]  # the demo's claim: pre-training helps
