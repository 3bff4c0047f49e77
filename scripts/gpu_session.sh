#!/usr/bin/env bash
# One session on a lent GPU machine (one H200), about 8 minutes of wall time, everything it measures in $OUT.
#
#   OUT=/path/to/out bash scripts/gpu_session.sh                         # on the GPU machine, from the repo root
#   GPU_SESSION_QUICK=1 OUT=/tmp/gpuout bash scripts/gpu_session.sh      # CPU smoke run of the same steps
#
# Needs the data folder copied to gpu_data/ at the repository root (wikipedia/articles.jsonl.gz, ag_news, dbpedia,
# fewrel, vocab): the machine cannot reach /work/shared/data. tinylm runs from src/ (PYTHONPATH), not installed.
#
#   1. env.txt: nvidia-smi in one line, python / torch / transformers versions, which optional packages exist.
#   2. benchmarks/gpu_train_step.py -> gpu_train_step.json: the paper's BERT-6 training step (MLM and AG News
#      fine-tuning, bf16), eager and torch.compile'd, plus train_loop's real per-step cost and a checkpoint save.
#   3. `tinylm reproduce gap --scale paper` for AG News at 20,000 articles, with as many MLM and fine-tuning epochs
#      as the remaining time allows (from step 2's measured step times; the paper's 50 + 50 take ~1 h), through
#      tinylm.experiments.paper.reproduce -> gap_results.json, gap_report.md; gap_runs.json holds the plan and every
#      run's summary and (thinned) log, also when the time limit stopped the sweep.
#   session.log is the whole console output. At most 8 files land in $OUT, all flat.
#
# Time: step 2 is capped at GPU_SESSION_BENCH_S (165 s), step 3 plans to end GPU_SESSION_PLAN_END_S (480 s) after
# the start and is killed at GPU_SESSION_TOTAL_S - 15 (545 s); copying takes a few seconds after that.
set -uo pipefail  # no -e: each step fails soft, so the ones after it and the copying still run

: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT"
if [ -z "${GPU_SESSION_INNER:-}" ]; then  # re-run under tee, so the log survives a kill (tee writes as it reads)
    GPU_SESSION_INNER=1 GPU_SESSION_START=$(date +%s) bash "${BASH_SOURCE[0]}" "$@" 2>&1 | tee "$OUT/session.log"
    exit "${PIPESTATUS[0]}"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
START=${GPU_SESSION_START:-$(date +%s)}
elapsed() { echo $(( $(date +%s) - START )); }
QUICK=${GPU_SESSION_QUICK:-0}
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_session.XXXXXX")  # run folders and checkpoints (GBs): never under $OUT

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # pip install -e . refuses Python 3.12
export TINYLM_DATA="$PWD/gpu_data"
export TINYLM_CACHE="$WORK/cache"
export PYTHONUNBUFFERED=1
if [ "$QUICK" = 1 ]; then  # the CPU smoke run: one thread, tiny sizes, generous limits
    export TINYLM_THREADS=1 OMP_NUM_THREADS=1 TORCHINDUCTOR_COMPILE_THREADS=1
    BENCH_FLAGS=(--quick) DEVICE=cpu
    TOTAL_S=${GPU_SESSION_TOTAL_S:-1800} PLAN_END_S=${GPU_SESSION_PLAN_END_S:-1500} BENCH_S=${GPU_SESSION_BENCH_S:-900}
else
    BENCH_FLAGS=() DEVICE=cuda
    TOTAL_S=${GPU_SESSION_TOTAL_S:-560} PLAN_END_S=${GPU_SESSION_PLAN_END_S:-480} BENCH_S=${GPU_SESSION_BENCH_S:-165}
fi
export GPU_SESSION_QUICK=$QUICK
echo "== gpu_session: quick=$QUICK device=$DEVICE work=$WORK out=$OUT data=$TINYLM_DATA"
[ -f "$TINYLM_DATA/wikipedia/articles.jsonl.gz" ] || echo "WARNING: $TINYLM_DATA/wikipedia/articles.jsonl.gz is missing"

# ---------------------------------------------------------------------------------------------------- 1. env
echo "== 1. environment ($(elapsed) s)"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader \
        2>/dev/null || echo "nvidia-smi: not available"
    "$PY" - <<'EOF'
import importlib.util, os, platform, shutil
import torch, transformers, tokenizers, numpy
print(f"python {platform.python_version()}, torch {torch.__version__} (cuda {torch.version.cuda}, "
      f"cudnn {torch.backends.cudnn.version()}), transformers {transformers.__version__}, "
      f"tokenizers {tokenizers.__version__}, numpy {numpy.__version__}")
gpu = f", {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}" if torch.cuda.is_available() else ""
print(f"cuda available: {torch.cuda.is_available()}{gpu}")
print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
      f"C compiler {shutil.which('cc') or shutil.which('gcc')}")
optional = ("datasets", "fastapi", "uvicorn", "pydantic", "onnxruntime", "triton")
print("optional packages: " + ", ".join(f"{m} {'yes' if importlib.util.find_spec(m) else 'MISSING'}" for m in optional))
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# --------------------------------------------------------------------------------------------- 2. train step
echo "== 2. benchmarks/gpu_train_step.py, at most $BENCH_S s ($(elapsed) s)"
timeout -k 5 "$BENCH_S" "$PY" benchmarks/gpu_train_step.py "${BENCH_FLAGS[@]}" --out "$OUT/gpu_train_step.json"
echo "== benchmark exit status $? ($(elapsed) s)"

# ------------------------------------------------------------------------------------------ 3. reproduce gap
BUDGET=$(( PLAN_END_S - $(elapsed) ))
HARD=$(( TOTAL_S - 15 - $(elapsed) ))
echo "== 3. reproduce gap (ag_news, paper scale, fewer epochs): plan for $BUDGET s, killed after $HARD s ($(elapsed) s)"
if [ "$HARD" -gt 60 ]; then
    timeout -k 5 "$HARD" "$PY" - "$WORK/gap" "$OUT/gpu_train_step.json" "$BUDGET" "$DEVICE" <<'EOF'
"""The paper scale's gap experiment on AG News, with the epochs that fit the time left."""
import dataclasses, json, math, os, sys, time
from pathlib import Path

from tinylm.config import replace
from tinylm.experiments.paper import reproduce
from tinylm.experiments.scales import SCALES

out, bench_path, budget, device = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
quick = os.environ.get("GPU_SESSION_QUICK") == "1"
paper = SCALES["paper"]
# The sizes: the paper's (20k articles, AG News 1000/1000 per label, bert-6, 32 x 128), or tiny ones for the CPU.
if quick:
    size, samples, max_epochs = 64, (8, 8), 1
    pre = replace(paper.pretrain, model="demo", seq_len=64, batch_size=8)
    ft = replace(paper.finetune, model="demo", max_length=64, batch_size=8)
else:
    size, samples, max_epochs = 20_000, paper.samples["ag_news"], 50
    pre, ft = paper.pretrain, paper.finetune

# Measured per-step costs of the real loop (eager, as the sweeps run) and of one checkpoint; else cautious guesses.
measured = {"pretrain_ms": 60.0, "finetune_ms": 40.0, "checkpoint_s": 5.0, "source": "defaults (no benchmark)"}
try:
    bench = json.loads(bench_path.read_text())
    measured = {"pretrain_ms": bench["pretrain"]["loop"]["median_ms"],
                "finetune_ms": bench["finetune"]["loop"]["median_ms"],
                "checkpoint_s": bench["pretrain"]["eager"]["checkpoint_save_s"], "source": str(bench_path)}
except (OSError, KeyError, TypeError, ValueError) as err:
    print(f"benchmark numbers unavailable ({err!r}); planning with {measured}")

FIXED_S = 60.0  # start-up, data, tokenising 20k articles, held-out MLM quality, 3 model saves, 2 evaluations, report
FT_SHARE = 0.3  # the paper's share of optimizer steps: 2 x 50 x 125 fine-tuning vs 50 x 625 MLM = 29 %
steps_m = math.ceil(size / pre.batch_size)
steps_f = math.ceil(4 * samples[0] / ft.batch_size)  # AG News: 4 labels
ckpt = measured["checkpoint_s"]
avail = max(0.0, (budget - FIXED_S) * 0.9)
ft_epoch = steps_f * measured["finetune_ms"] / 1e3 + ckpt  # every epoch end saves a checkpoint
mlm_epoch = steps_m * measured["pretrain_ms"] / 1e3 + ckpt * (1 + steps_m / pre.save_every)
epochs_f = max(1, min(max_epochs, int(FT_SHARE * avail // (2 * ft_epoch))))  # 2 runs: pre-trained and scratch
epochs_m = max(1, min(max_epochs, int((avail - 2 * epochs_f * ft_epoch) // mlm_epoch)))
if epochs_m == max_epochs:  # time left over: give it to fine-tuning
    epochs_f = max(1, min(max_epochs, int((avail - epochs_m * mlm_epoch) // (2 * ft_epoch))))
plan = {"budget_s": budget, "measured": measured, "fixed_s": FIXED_S, "articles": size, "samples_per_label": samples,
        "mlm_steps_per_epoch": steps_m, "finetune_steps_per_epoch": steps_f, "mlm_epochs": epochs_m,
        "finetune_epochs": epochs_f, "estimated_s": round(FIXED_S + epochs_m * mlm_epoch + 2 * epochs_f * ft_epoch),
        "paper_epochs": [paper.pretrain.epochs, paper.finetune.epochs], "device": device}
out.mkdir(parents=True, exist_ok=True)
(out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
print("plan:", json.dumps(plan), flush=True)

scale = dataclasses.replace(
    paper, name=f"paper, {epochs_m} MLM + {epochs_f} fine-tuning epochs", sizes=(size,),
    pretrain=replace(pre, epochs=epochs_m), finetune=replace(ft, epochs=epochs_f),
    samples={**paper.samples, "ag_news": samples}, seeds=1)
t0 = time.perf_counter()
results = reproduce(("gap",), scale, out, seeds=1, tasks=("ag_news",), device=device)
print(f"reproduce gap took {time.perf_counter() - t0:.0f} s (planned {plan['estimated_s']} s)")
for r in results["records"]:
    q = r.get("pretrain_quality", {})
    print(f"GAP {r['task']} {r['articles']} articles: pre-trained {r['pretrained_accuracy']:.4f}, scratch "
          f"{r['scratch_accuracy']:.4f}, gap {r['pretrained_accuracy'] - r['scratch_accuracy']:+.4f}; seconds "
          f"{r['timings']}; held-out MLM accuracy {q.get('mlm_accuracy')} (unigram {q.get('unigram_accuracy')})")
EOF
    echo "== reproduce exit status $? ($(elapsed) s)"
else
    echo "== skipped: too little time left"
fi

# ----------------------------------------------------------------------------------------------- 4. collect
echo "== 4. collecting into $OUT ($(elapsed) s)"
[ -f "$WORK/gap/results.json" ] && cp "$WORK/gap/results.json" "$OUT/gap_results.json"
[ -f "$WORK/gap/report.md" ] && cp "$WORK/gap/report.md" "$OUT/gap_report.md"
"$PY" - "$WORK/gap" "$OUT/gap_runs.json" <<'EOF'
"""The plan and every run folder's small files, and each log thinned to at most ~200 lines (also for killed runs)."""
import json, sys
from pathlib import Path

gap, dest = Path(sys.argv[1]), Path(sys.argv[2])
doc = {"plan": None, "runs": {}}
if (gap / "plan.json").is_file():
    doc["plan"] = json.loads((gap / "plan.json").read_text())
for run in sorted(p for p in (gap / "runs").glob("*") if p.is_dir()) if (gap / "runs").is_dir() else []:
    entry = {}
    for name in ("pretrain_config.json", "finetune_config.json", "summary.json", "metrics.json"):
        if (run / name).is_file():
            entry[name.removesuffix(".json")] = json.loads((run / name).read_text())
    state = run / "checkpoint" / "state.json"
    if state.is_file():
        entry["checkpoint_state"] = {k: v for k, v in json.loads(state.read_text()).items() if k != "losses"}
    log = run / "log.jsonl"
    if log.is_file():
        lines = log.read_text().splitlines()
        keep = lines[:: max(1, len(lines) // 200)] + lines[-1:]
        entry["log_lines"], entry["log"] = len(lines), [json.loads(x) for x in keep if x.strip()]
    doc["runs"][run.name] = entry
dest.write_text(json.dumps(doc, indent=1) + "\n")
print(f"{dest}: plan {'yes' if doc['plan'] else 'no'}, {len(doc['runs'])} run folders")
EOF
for png in "$WORK"/gap/gap_*.png; do  # only within the 8 files that come back
    [ -f "$png" ] && [ "$(find "$OUT" -maxdepth 1 -type f | wc -l)" -lt 8 ] && cp "$png" "$OUT/$(basename "$png")"
done
"$PY" - "$OUT" <<'EOF'
"""The session's findings in a few lines (the console's tail is what shows first)."""
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return {}
bench, runs, gap = load("gpu_train_step.json"), load("gap_runs.json"), load("gap_results.json")
print("== summary")
for line in bench.get("table") or ["train step: no table (benchmark stopped early; see gpu_train_step.json)"]:
    print(line)
plan = runs.get("plan") or {}
print(f"gap plan: {plan.get('mlm_epochs')} MLM + {plan.get('finetune_epochs')} fine-tuning epochs, "
      f"estimated {plan.get('estimated_s')} s, from {plan.get('measured')}")
for r in gap.get("records", []):
    print(f"gap {r['task']} {r['articles']} articles: pre-trained {r['pretrained_accuracy']:.4f}, scratch "
          f"{r['scratch_accuracy']:.4f}, gap {r['pretrained_accuracy'] - r['scratch_accuracy']:+.4f} "
          f"({r['seconds']} s of training)")
if not gap:
    done = {k: sorted(v) for k, v in runs.get("runs", {}).items()}
    print(f"gap: no results.json (stopped by the time limit?); run folders: {done}")
EOF
echo "== done in $(elapsed) s; $OUT holds:"
ls -la "$OUT"
du -sh "$WORK" 2>/dev/null
