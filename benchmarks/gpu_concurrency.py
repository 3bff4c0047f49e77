"""How many tiny-model training processes one GPU serves at once: steps/s per process and in all.

    PYTHONPATH=src python3 benchmarks/gpu_concurrency.py --out "$OUT/gpu_concurrency.json"
    TINYLM_THREADS=1 PYTHONPATH=src python3 benchmarks/gpu_concurrency.py --quick --out /tmp/c.json   # CPU smoke

A CPU-scale model (the `demo` preset: 2 layers, 128 wide, 4k vocabulary) is launch-bound on a GPU: one process
leaves the GPU mostly idle, so a sweep of many small runs goes faster as parallel processes, until the GPU's time
slicing or the host's cores give out. This measures where: N processes (N in --procs) each run tinylm's own
train.loop.train_step on MLMBatches of synthetic ids (batch 16 x 128, 40 % masking, bf16), reading the loss every
step as train_loop does, for --seconds after --warmup seconds; every process reports its steps. The JSON holds,
per preset and N, the median ms per step of a process and the steps/s of all processes together.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.config import MODEL_PRESETS, PretrainConfig
from tinylm.model import BertForMLM
from tinylm.runtime import pick_device
from tinylm.tokenizer import load_tokenizer
from tinylm.train.loop import LoopConfig, make_optimizer, train_step
from tinylm.train.pretrain import MLMBatches


def worker(preset: str, device_name: str, warmup: float, seconds: float, seed: int, queue: Any) -> None:
    torch.set_num_threads(1)
    device = pick_device(device_name)
    tokenizer = load_tokenizer("tinylm-wiki-4k")
    cfg = PretrainConfig(model=preset, tokenizer="tinylm-wiki-4k", batch_size=16, mask_prob=0.4, seed=seed)
    model_cfg = MODEL_PRESETS[preset]
    model = BertForMLM(dataclasses.replace(model_cfg, vocab_size=len(tokenizer))).to(device)
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, len(tokenizer), size=(2000, 128)).astype(np.int32)
    ids[:, 0] = tokenizer.cls_token_id
    for row, length in zip(ids, rng.integers(40, 128, size=len(ids)), strict=True):
        row[length:] = tokenizer.pad_token_id
    batches = MLMBatches(ids, tokenizer, cfg, epoch=0)
    opt = make_optimizer(model, LoopConfig(epochs=1, lr=1e-3, weight_decay=0.01, warmup_ratio=0.0, schedule="step",
                                          precision="bf16", seed=seed, save_every=10**9), device)
    scaler = torch.amp.GradScaler(enabled=False)
    model.train()
    steps, timed, start, i = 0, 0.0, time.perf_counter(), 0
    while True:
        batch = {k: v.to(device, non_blocking=True) for k, v in batches[i % len(batches)].items()}
        i += 1
        out = train_step(model, batch, opt, scaler, "bf16", device, 1.0)
        out.loss.item()  # train_loop reads the loss every step
        now = time.perf_counter() - start
        if now >= warmup:
            if steps == 0:
                timed = now
            steps += 1
        if now >= warmup + seconds:
            queue.put({"steps": steps, "seconds": now - timed})
            return


def measure(preset: str, procs: int, device: str, warmup: float, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=worker, args=(preset, device, warmup, seconds, 100 + p, queue))
               for p in range(procs)]
    for w in workers:
        w.start()
    reports = [queue.get(timeout=warmup + seconds + 300) for _ in workers]
    for w in workers:
        w.join()
    ms = [1000 * r["seconds"] / max(1, r["steps"]) for r in reports]
    total = sum(r["steps"] / r["seconds"] for r in reports)
    return {"preset": preset, "procs": procs, "median_ms_per_step": round(statistics.median(ms), 2),
            "max_ms_per_step": round(max(ms), 2), "steps_per_s_all": round(total, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 4, 8, 14])
    p.add_argument("--presets", nargs="+", default=["demo", "cpu-6"])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--quick", action="store_true", help="CPU smoke run: 1 and 2 processes, 2 s each")
    args = p.parse_args()
    device = "cpu" if args.quick else "cuda"
    procs, seconds, warmup = ([1, 2], 2.0, 1.0) if args.quick else (args.procs, args.seconds, args.warmup)
    rows = []
    for preset in args.presets:
        for n in procs:
            rows.append(measure(preset, n, device, warmup, seconds))
            print(json.dumps(rows[-1]), flush=True)
            Path(args.out).write_text(json.dumps({"device": device, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
