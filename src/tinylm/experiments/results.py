"""What every recipe's results.json carries besides its records: the command, the machine and the source commit.

Each recipe builds its document with `results_document` (one layout: command, the recipe's fields, machine,
seconds, its records) and hands it to `write_results`, which writes it and the report once.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tinylm.distributed import env_world, is_main_process
from tinylm.io import write_json

RESULTS_FILE = "results.json"


def results_command() -> str | None:
    """The tinylm command line that produced a results.json (None when called from Python)."""
    return "tinylm " + " ".join(sys.argv[1:]) if sys.argv and "tinylm" in sys.argv[0] else None


def source_commit() -> str | None:
    """The git commit of the tinylm source that ran (None outside a git checkout), kept with every result."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """The machine a sweep ran on, with the processes it ran in and the source commit."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "processes": env_world().size, "tinylm_commit": source_commit()}


def results_document(fields: Mapping[str, Any], body: Mapping[str, Any], *, started: float) -> dict[str, Any]:
    """A recipe's results: {command, **fields, machine, seconds, **body}, seconds counted from `started`
    (a time.perf_counter() reading); `body` holds the records, last so the header reads first."""
    return {"command": results_command(), **fields, "machine": machine_info(),
            "seconds": round(time.perf_counter() - started, 1), **body}


def write_results(out: str | os.PathLike, results: Mapping[str, Any],
                  render: Callable[[], object] | None = None) -> bool:
    """Write OUT/results.json, then the report (`render`), on the main process only: under torchrun every rank
    runs the sweep (the runs are shared) and one writes. Returns whether this process wrote."""
    if not is_main_process():
        return False
    write_json(Path(out) / RESULTS_FILE, results)
    if render is not None:
        render()
    return True
