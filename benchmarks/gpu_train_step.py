"""Time tinylm's production training step for the paper's BERT-6 on a GPU, eager and compiled, in one process.

    PYTHONPATH=src TINYLM_DATA=gpu_data python3 benchmarks/gpu_train_step.py --out "$OUT/gpu_train_step.json"
    TINYLM_THREADS=1 python benchmarks/gpu_train_step.py --quick --out /tmp/gpu_train_step.json   # CPU smoke run

scripts/gpu_session.sh runs the first line (expected: about 2 minutes on an H200, most of it torch.compile; not yet
measured). `--quick` runs the same code on the CPU with a 2-layer, 128-wide model (the `demo` preset's shape),
batches of 8 x 64 tokens and a few steps.

Nothing is re-implemented: the model, its configs, the data and batches, the optimizer and the step are tinylm's.

- Workloads: MLM pre-training (PRETRAIN_PRESETS["paper"]: bert-6, bert-base-uncased vocabulary, batch 32 x 128
  Wikipedia openings, bf16 autocast; texts, tokenizer and token ids from train.pretrain.prepare_pretraining,
  batches from MLMBatches), and AG News fine-tuning (FINETUNE_PRESETS["paper"] on 1,000 texts per label; model
  from train.finetune.build_classifier, length-bucketed batches from ClassificationBatches).
- step (eager and compiled): train.loop.train_step through train.loop._step_model(model, SINGLE, device, compile),
  which is what train_loop runs for a recipe whose `compile` flag is false or true, on batches already on the
  device, every step between two torch.cuda.synchronize calls: --warmup steps, then --steps timed ones.
  Reported: `compile_s` (the time of all steps beyond as many median steps), the median step, tokens/s (real,
  non-padding tokens), approximate model TFLOP/s (matmul FLOPs, as in benchmarks/train_speed.py) and the peak of
  torch.cuda.max_memory_allocated. `compiled_over_eager` is the ratio of the two medians (below 1: compile helps).
- loop (eager only): train.loop.train_loop itself for --loop-steps steps after --warmup ones, timed between its
  after_step calls: what a real run pays per step (batch building on the CPU, the host-to-device copy, lr and
  dropout seeding, the loss's .item()). And one train.loop.save_checkpoint, which every epoch end pays.
  scripts/gpu_session.sh sizes its gap run with these three numbers.

The JSON at --out is rewritten after every part, so a run killed by a timeout leaves what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinylm.config import FINETUNE_PRESETS, PRETRAIN_PRESETS, FinetuneConfig, ModelConfig, PretrainConfig
from tinylm.distributed import SINGLE
from tinylm.model import IGNORE_INDEX, BertForMLM
from tinylm.runtime import configure_threads, effective_precision, pick_device, seed_everything, step_seed
from tinylm.train.finetune import ClassificationBatches, build_classifier, encode_examples, finetune_task
from tinylm.train.loop import (
    Batch,
    LoopConfig,
    LoopState,
    _step_model,
    make_optimizer,
    save_checkpoint,
    train_loop,
    train_step,
)
from tinylm.train.pretrain import MLMBatches, prepare_pretraining

RESULTS = Path(__file__).parent / "results" / "gpu_train_step.json"
# Sizes: the paper's on the GPU, tiny ones for --quick (a CPU smoke run of the same code).
FULL = {"device": None, "model": "bert-6", "batch_size": 32, "seq_len": 128, "warmup": 8, "steps": 30,
        "loop_steps": 30, "train_per_label": 1000}
QUICK = {"device": "cpu", "model": "demo", "batch_size": 8, "seq_len": 64, "warmup": 2, "steps": 3,
         "loop_steps": 3, "train_per_label": 40}


@dataclass
class Workload:
    """One kind of training: a fresh model on demand, its recipe and its batches (epoch 0, on the CPU)."""

    kind: str  # "pretrain" or "finetune"
    cfg: PretrainConfig | FinetuneConfig
    make_model: Callable[[], nn.Module]
    epoch_batches: Callable[[int], Sequence[Batch]]
    model_cfg: ModelConfig
    num_labels: int = 0


def pretrain_workload(args: argparse.Namespace, n_batches: int, work: Path) -> Workload:
    cfg = replace(PRETRAIN_PRESETS["paper"], model=args.model, articles=(n_batches + 2) * args.batch_size,
                  seq_len=args.seq_len, batch_size=args.batch_size)  # 2 spare batches: the loop ends mid-epoch
    _, tokenizer, ids, model_cfg = prepare_pretraining(cfg, work / "pretrain", args.data, SINGLE, cfg.to_dict())
    return Workload("pretrain", cfg, lambda: BertForMLM(model_cfg), lambda e: MLMBatches(ids, tokenizer, cfg, e),
                    model_cfg)


def finetune_workload(args: argparse.Namespace) -> Workload:
    cfg = replace(FINETUNE_PRESETS["paper"], model=args.model, task="ag_news", tokenizer="bert-base-uncased",
                  train_per_label=args.train_per_label, test_per_label=1, max_length=args.seq_len,
                  batch_size=args.batch_size)  # from scratch (the weights do not change the step's cost)
    task = finetune_task(cfg, args.data)
    model, tokenizer = build_classifier(cfg, task.num_labels)
    ids = encode_examples(tokenizer, task.train, min(cfg.max_length, model.cfg.max_position_embeddings))
    labels = [e.label for e in task.train]
    return Workload("finetune", cfg, lambda: build_classifier(cfg, task.num_labels)[0],
                    lambda e: ClassificationBatches(ids, labels, cfg.batch_size, tokenizer.pad_token_id, cfg.seed, e),
                    model.cfg, task.num_labels)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(w: Workload, batch: Batch) -> int:
    """Matmul FLOPs of one training step (3 x forward), counted as tinylm executes them (benchmarks/train_speed.py)."""
    c, (b, t) = w.model_cfg, batch["input_ids"].shape
    h, inter = c.hidden_size, c.intermediate_size
    forward = c.num_hidden_layers * (2 * b * t * (4 * h * h + 2 * h * inter) + 4 * b * t * t * h)
    if w.kind == "pretrain":  # the MLM head runs at the masked positions only
        head = 2 * int((batch["labels"] != IGNORE_INDEX).sum()) * (h * h + h * c.vocab_size)
    else:
        head = 2 * b * (h * h + h * w.num_labels)
    return 3 * (forward + head)


def fresh_model(w: Workload, device: torch.device) -> tuple[nn.Module, LoopConfig, torch.optim.Optimizer]:
    seed_everything(w.cfg.seed)
    model = w.make_model().to(device).train()
    loop = replace(LoopConfig.of(w.cfg, f"bench {w.kind}"), save_every=10**9)
    return model, loop, make_optimizer(model, loop, device)


def time_steps(w: Workload, device: torch.device, compile: bool, warmup: int, steps: int,
               work: Path, checkpoint: bool) -> dict[str, Any]:
    """train_step on pre-staged batches, eager or compiled as train_loop would; optionally one save_checkpoint."""
    epoch = w.epoch_batches(0)
    cpu_batches = [epoch[i] for i in range(warmup + steps)]
    batches = [{k: v.to(device) for k, v in b.items()} for b in cpu_batches]
    model, loop, opt = fresh_model(w, device)
    precision = effective_precision(loop.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if compile:
        torch._dynamo.reset()  # a cold compile for each workload
    step_model = _step_model(model, SINGLE, device, compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, losses = [], []
    for i, batch in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        torch.manual_seed(step_seed(loop.seed, i))  # as train_loop does before every step
        out = train_step(step_model, batch, opt, scaler, precision, device, loop.grad_clip)
        sync(device)
        seconds.append(time.perf_counter() - t0)
        losses.append(float(out.loss.detach()))
        if i < warmup:
            print(f"  {w.kind} {'compiled' if compile else 'eager'} warm-up step {i}: {seconds[-1]:.2f} s", flush=True)
    warm, timed = seconds[:warmup], seconds[warmup:]
    median = statistics.median(timed)
    timed_batches = cpu_batches[warmup:]
    real_tokens = sum(int(b["attention_mask"].sum()) for b in timed_batches)
    res: dict[str, Any] = {
        "compiled": compile,
        "precision": precision,
        "warmup_steps_s": [round(s, 3) for s in warm],
        # beyond as many steady steps, over all steps (a recompile for a new shape may come late); eager: the
        # first steps' one-off costs (cuBLAS handles, the allocator's pools)
        "compile_s": round(max(0.0, sum(seconds) - len(seconds) * median), 2),
        "timed_steps": len(timed),
        "median_ms": round(median * 1e3, 2),
        "min_ms": round(min(timed) * 1e3, 2),
        "max_ms": round(max(timed) * 1e3, 2),
        "p90_ms": round(statistics.quantiles(timed, n=10)[-1] * 1e3, 2) if len(timed) > 1 else None,
        "real_tokens_per_step": round(real_tokens / len(timed), 1),
        "padded_tokens_per_step": round(sum(b["input_ids"].numel() for b in timed_batches) / len(timed), 1),
        "tokens_per_s": round(real_tokens / sum(timed), 1),
        "approx_tflops_per_s": round(sum(step_flops(w, b) for b in timed_batches) / sum(timed) / 1e12, 2),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }
    if device.type == "cuda":
        res["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        res["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20)
    if compile:
        res["dynamo"] = dynamo_counters()
    if checkpoint:  # what every epoch end of a run costs (weights + AdamW moments)
        folder = work / f"checkpoint-{w.kind}"
        t0 = time.perf_counter()
        save_checkpoint(folder, model, opt, LoopState(), {"bench": w.kind})
        res["checkpoint_save_s"] = round(time.perf_counter() - t0, 2)
        res["checkpoint_mib"] = round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20)
        shutil.rmtree(folder)
    return res


def time_loop(w: Workload, device: torch.device, warmup: int, steps: int, work: Path) -> dict[str, Any]:
    """train_loop itself (eager), each step timed from the end of the one before (its loss.item() syncs)."""
    model, loop, _ = fresh_model(w, device)
    out = work / f"loop-{w.kind}"
    out.mkdir()  # as the recipes do: train_loop writes out/log.jsonl
    stamps: list[float] = []

    def after_step(state: LoopState) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    train_loop(model, w.epoch_batches, loop, out, device, {"bench": w.kind},
               stop_after=warmup + steps, progress=False, after_step=after_step)
    gaps = [b - a for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)][warmup:]
    return {"timed_steps": len(gaps), "median_ms": round(statistics.median(gaps) * 1e3, 2),
            "p90_ms": round(statistics.quantiles(gaps, n=10)[-1] * 1e3, 2) if len(gaps) > 1 else None,
            "first_step_s": round(stamps[0] - t0, 2),
            "steps_per_epoch": len(w.epoch_batches(0)), "note": "eager; batches built and copied per step"}


def dynamo_counters() -> dict[str, Any]:
    """torch._dynamo's counts (graphs, graph breaks and their reasons), best effort."""
    try:
        from torch._dynamo.utils import counters

        return {"stats": dict(counters["stats"]), "graph_breaks": sum(counters["graph_break"].values()),
                "graph_break_reasons": [str(r)[:200] for r in list(counters["graph_break"])[:8]]}
    except Exception as err:  # internals differ between torch versions; the timing does not need them
        return {"error": repr(err)[:200]}


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "device": str(device), "cpus": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "cc": shutil.which("cc") or shutil.which("gcc")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def run_part(results: dict[str, Any], kind: str, name: str, fn: Callable[[], dict[str, Any]], out: Path) -> None:
    """results[kind][name] = fn(), or the error it raised (the other parts still run); then write the JSON."""
    t0 = time.perf_counter()
    print(f"{kind} {name} ...", flush=True)
    try:
        results[kind][name] = fn()
    except Exception as err:
        results[kind][name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
        print(f"  {kind} {name} FAILED: {results[kind][name]['error'][:500]}", flush=True)
    results[kind][name]["part_s"] = round(time.perf_counter() - t0, 1)
    write(results, out)


def write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def table(results: dict[str, Any]) -> list[str]:
    lines = [f"{'workload':9} {'mode':9} {'compile s':>9} {'median ms':>9} {'p90 ms':>7} {'tokens/s':>9} "
             f"{'TFLOP/s':>7} {'peak MiB':>8}"]
    for kind in ("pretrain", "finetune"):
        part = results.get(kind, {})
        for mode in ("eager", "compiled", "loop"):
            r = part.get(mode)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"{kind:9} {mode:9} ERROR {r['error'][:80]}")
                continue
            lines.append(f"{kind:9} {mode:9} {r.get('compile_s', ''):>9} {r['median_ms']:>9} {r['p90_ms'] or '':>7} "
                         f"{r.get('tokens_per_s', ''):>9} {r.get('approx_tflops_per_s', ''):>7} "
                         f"{r.get('peak_allocated_mib', ''):>8}")
        if "compiled_over_eager" in part:
            lines.append(f"{kind:9} compiled/eager median step: {part['compiled_over_eager']}")
        if "checkpoint_save_s" in part.get("eager", {}):
            lines.append(f"{kind:9} save_checkpoint: {part['eager']['checkpoint_save_s']} s "
                         f"({part['eager']['checkpoint_mib']} MiB)")
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="the JSON written (rewritten after every part)")
    p.add_argument("--data", default=None, help="data folder (default: TINYLM_DATA)")
    p.add_argument("--quick", action="store_true", help="a CPU smoke run: tiny model, batches and step counts")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile parts")
    p.add_argument("--device", help="default: cuda when present (--quick: cpu)")
    p.add_argument("--model", help="model preset (default bert-6; --quick: demo)")
    for flag in ("batch-size", "seq-len", "warmup", "steps", "loop-steps", "train-per-label"):
        p.add_argument(f"--{flag}", type=int, help=f"default {FULL[flag.replace('-', '_')]} "
                                                   f"(--quick: {QUICK[flag.replace('-', '_')]})")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    configure_threads()  # TINYLM_THREADS, as every recipe does first
    device = pick_device(args.device)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(device),
        "settings": {k: getattr(args, k) for k in (*FULL, "quick")},
        "pretrain": {}, "finetune": {},
    }
    print(json.dumps(results["machine"]), flush=True)
    n_batches = args.warmup + max(args.steps, args.loop_steps)
    with tempfile.TemporaryDirectory(prefix="gpu_train_step-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        workloads = [pretrain_workload(args, n_batches, work), finetune_workload(args)]
        results["data_s"] = round(time.perf_counter() - t0, 1)
        for w in workloads:
            results[w.kind]["model_config"] = w.model_cfg.to_dict()
            run_part(results, w.kind, "eager", lambda w=w: time_steps(
                w, device, False, args.warmup, args.steps, work, checkpoint=w.kind == "pretrain"), args.out)
            free(device)
            run_part(results, w.kind, "loop", lambda w=w: time_loop(w, device, args.warmup, args.loop_steps, work),
                     args.out)
            free(device)
        for w in [] if args.no_compile else workloads:
            run_part(results, w.kind, "compiled", lambda w=w: time_steps(
                w, device, True, args.warmup, args.steps, work, checkpoint=False), args.out)
            free(device)
            eager, compiled = results[w.kind]["eager"], results[w.kind]["compiled"]
            if "median_ms" in eager and "median_ms" in compiled:
                results[w.kind]["compiled_over_eager"] = round(compiled["median_ms"] / eager["median_ms"], 3)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["table"] = table(results)
    write(results, args.out)
    print()
    for line in results["table"]:
        print(line)
    print(f"\nwritten {args.out} in {results['seconds']:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
