"""One call on a lent GPU: many CPU-scale runs side by side, since one tiny model leaves an H200 mostly idle.

    OUT=... PYTHONPATH=src TINYLM_DATA=gpu_data python3 scripts/gpu_parallel_session.py            # on the GPU
    OUT=/tmp/q PYTHONPATH=src TINYLM_DATA=/work/shared/data python3 scripts/gpu_parallel_session.py --quick  # CPU

benchmarks/gpu_concurrency.py measured (docs/results/gpu/gpu_concurrency.json) that a 2-layer, 128-wide model
steps in 12-21 ms per process with 6-12 processes on one H200, about 500-590 steps/s in all, against 30/s for one
process. So this session runs, each as its own process (TINYLM_THREADS=1), until --deadline seconds:

1. `reproduce overlap-control --scale cpu` (or `--experiment committee|arms`: `reproduce committee|arms --scale cpu`)
   as --workers self-balancing workers (--shard I/N) over one cache, overlap-control with --oc-epochs MLM epochs,
   --levels and --finetune-seeds; then, if every worker finished, the report pass.
2. Candidates for the shipped pre-trained model (issue 26): the `demo` architecture and 4k vocabulary on every
   non-held-out Wikipedia opening, at batch 128 with the learning rates in --shipped-lrs (chosen afterwards on
   held-out openings, which pre-training's own summary scores).

What comes back (at most 8 files): session.log, overlap_control.tar.gz, committee.tar.gz or arms.tar.gz (results,
report and every run folder's small files: configs, summaries, metrics, withhold lists), shipped-lr*.tar.gz (each
candidate's run folder without checkpoints), workers.json (exit codes and seconds of every process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SMALL_FILES = ("summary.json", "metrics.json", "pretrain_config.json", "finetune_config.json", "results.json")


# --quick: the CLI with the CPU scale's overlap-control, committee and arms shrunk to a few openings (a smoke run).
QUICK_CLI = """import sys
from tinylm.config import replace
import tinylm.experiments.overlap_control as oc
s = oc.OVERLAP_CONTROL_SCALES["cpu"]
base = replace(s.base, pretrain=replace(s.base.pretrain, seq_len=64), samples={"ag_news": (8, 6), "dbpedia": (4, 3)},
               finetune=replace(s.base.finetune, epochs=1, max_length=64))
oc.OVERLAP_CONTROL_SCALES["cpu"] = replace(s, base=base, articles=64, seeds=2, protect=20)
import tinylm.experiments.committee as cm
c = cm.COMMITTEE_SCALES["cpu"]
cm.COMMITTEE_SCALES["cpu"] = replace(c, members=4, committee_sizes=(1, 2, 4), compute_members=(2,), seeds=2,
                                     pretrain=replace(c.pretrain, articles=48, epochs=2, seq_len=64),
                                     finetune=replace(c.finetune, epochs=1, max_length=64), samples=base.samples)
import tinylm.experiments.scales as sc
import tinylm.experiments.overlap_arms as arms
s = sc.SCALES["cpu"]
sc.SCALES["cpu"] = replace(s, pretrain=replace(s.pretrain, epochs=1, seq_len=64), samples=base.samples, seeds=2,
                           finetune=replace(s.finetune, epochs=1, max_length=64))
arms.ARMS_SIZE["cpu"] = 48
from tinylm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def launch(name: str, argv: list[str], logs: Path, env: dict[str, str], quick: bool = False) -> dict:
    log = open(logs / f"{name}.log", "w")  # noqa: SIM115 (closed in wait_all, when the process ends)
    head = ["-c", QUICK_CLI] if quick else ["-m", "tinylm.cli"]
    proc = subprocess.Popen([sys.executable, *head, *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
    print(f"[{time.strftime('%H:%M:%S')}] started {name}: tinylm {' '.join(argv)}", flush=True)
    return {"name": name, "proc": proc, "log": log, "started": time.time()}


def wait_all(jobs: list[dict], deadline: float) -> None:
    while any(j["proc"].poll() is None for j in jobs):
        if time.time() > deadline:
            for j in jobs:
                if j["proc"].poll() is None:
                    j["proc"].kill()
                    j["killed"] = True
            break
        time.sleep(2)
    for j in jobs:
        j["proc"].wait()
        j["seconds"] = round(time.time() - j["started"], 1)
        j["log"].close()
        print(f"[{time.strftime('%H:%M:%S')}] {j['name']}: exit {j['proc'].returncode} after {j['seconds']} s"
              f"{' (killed at the deadline)' if j.get('killed') else ''}", flush=True)


def tar_small(dest: Path, folder: Path, arcname: str, *, keep_models: bool = False) -> None:
    """FOLDER's small files (and its model folders if keep_models), never checkpoints or snapshots."""
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if not path.is_file() or {"checkpoint", "snapshots", "shards"} & set(rel.parts):
                continue
            if "model" in rel.parts and not keep_models:
                continue
            small = path.suffix in (".json", ".md", ".html", ".png", ".txt") and path.stat().st_size < 2_000_000
            model = keep_models and "model" in rel.parts
            if small or model or path.name.endswith(".log"):
                tar.add(path, arcname=f"{arcname}/{rel}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run at tiny sizes")
    p.add_argument("--deadline", type=float, default=480, help="seconds after the start when training stops")
    p.add_argument("--report-s", type=float, default=50, help="seconds allowed for the report pass")
    p.add_argument("--experiment", choices=["overlap-control", "committee", "arms"], default="overlap-control")
    p.add_argument("--workers", type=int, default=21)
    p.add_argument("--oc-epochs", type=int, default=4)
    p.add_argument("--levels", nargs="+", default=["1", "0.75", "0.5"])
    p.add_argument("--finetune-seeds", type=int, default=2)
    p.add_argument("--shipped-lrs", nargs="*", default=["2e-3", "4e-3"], help="none: no shipped candidates")
    p.add_argument("--shipped-epochs", type=int, default=20)
    args = p.parse_args()
    start = time.time()
    out = Path(os.environ["OUT"])
    work = Path(os.environ.get("WORK", "/tmp/gpu_parallel"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TINYLM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "TINYLM_CACHE": str(work / "cache"), "TQDM_MININTERVAL": "30"}
    device = "cpu" if args.quick else "cuda"
    name = args.experiment.replace("-", "_")
    oc_out = work / name
    oc_args = ["--device", device, "reproduce", args.experiment, "--scale", "cpu", "--out", str(oc_out),
               *(["--tasks", "ag_news", "dbpedia"] if args.quick else [])]
    if args.experiment == "overlap-control":
        oc_args += ["--levels", *args.levels, "--finetune-seeds", str(args.finetune_seeds), "--pretrain-epochs",
                    str(args.oc_epochs)]
    shipped_articles, shipped_epochs = (200, 1) if args.quick else (51_459, args.shipped_epochs)
    jobs = []
    for lr in args.shipped_lrs:
        jobs.append(launch(f"shipped-lr{lr}", [
            "--device", device, "pretrain", "--preset", "demo", "--tokenizer", "tinylm-wiki-4k",
            "--articles", str(shipped_articles), "--epochs", str(shipped_epochs), "--batch-size", "128",
            "--lr", lr, "--warmup-ratio", "0.05", "--save-every", "4000", "--snapshots", "2",
            "--seq-len", "64" if args.quick else "128", "--out", str(work / f"shipped-lr{lr}")], logs, env))
    for i in range(args.workers):
        jobs.append(launch(f"worker{i}", [*oc_args, "--shard", f"{i}/{args.workers}"], logs, env, args.quick))
    wait_all(jobs, start + args.deadline)
    done = all(j["proc"].returncode == 0 for j in jobs if j["name"].startswith("worker"))
    if done:
        report = launch("report", oc_args, logs, env, args.quick)
        wait_all([report], time.time() + args.report_s)
        jobs.append(report)
    else:
        print(f"{args.experiment}: not every worker finished; no report pass (run it from the cache later)", flush=True)
    (out / "workers.json").write_text(json.dumps(
        [{k: j.get(k) for k in ("name", "seconds", "killed")} | {"exit": j["proc"].returncode} for j in jobs],
        indent=1) + "\n")
    if oc_out.is_dir():
        tar_small(out / f"{name}.tar.gz", oc_out, name)
    for lr in args.shipped_lrs:
        run = work / f"shipped-lr{lr}"
        if run.is_dir():
            tar_small(out / f"shipped-lr{lr}.tar.gz", run, f"shipped-lr{lr}", keep_models=True)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname="logs")
    print(f"session done in {time.time() - start:.0f} s; {sorted(f.name for f in out.iterdir())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
