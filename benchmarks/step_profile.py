"""Where the time of one small-preset pre-training step goes, before issue 14 (eager_baseline) and now.

    TINYLM_THREADS=1 python benchmarks/step_profile.py --model demo

Times every aten op the step runs (forward, backward, optimizer) in thread CPU time, through a
TorchDispatchMode, on the same batches and weights for both paths, and prints a table of op classes (ms per
step and share). Thread CPU time leaves out the time other processes take the core, so the shares hold on a
busy machine; the absolute figures still grow when a sibling hardware thread competes for the same core.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import time
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from eager_baseline import baseline
from tinylm.data.encoding import encode_texts
from tinylm.model import BertForMLM
from tinylm.runtime import configure_threads, effective_precision, step_seed, tune_cpu_allocator
from tinylm.train.loop import make_optimizer, train_step
from tinylm.train.pretrain import MLMBatches
from train_speed import DEVICE, SETUPS, bench_loop, make_setup

CLASSES: dict[str, tuple[str, ...]] = {
    "matmul (mm, addmm, bmm)": ("mm", "addmm", "bmm", "baddbmm"),
    "SDPA flash attention, fwd + bwd": ("_scaled_dot_product_flash_attention_for_cpu",
                                        "_scaled_dot_product_flash_attention_for_cpu_backward"),
    "MLM loss (log_softmax, nll), fwd + bwd": ("_log_softmax", "_log_softmax_backward_data", "nll_loss_forward",
                                               "nll_loss_backward"),
    "dtype casts (autocast, .float())": ("_to_copy", "copy_"),
    "attention softmax, fwd + bwd": ("_softmax", "_softmax_backward_data"),
    "GELU, fwd + bwd": ("gelu", "gelu_backward"),
    "LayerNorm, fwd + bwd": ("native_layer_norm", "native_layer_norm_backward"),
    "dropout mask draws (random_, ge)": ("random_", "ge"),
    "mul, add, sum, masked_fill": ("mul", "add", "sum", "masked_fill", "masked_fill_", "where"),
    "head transposes (clone)": ("clone",),
    "optimizer (fused AdamW, grad norm)": ("_fused_adamw_", "_foreach_norm", "_foreach_mul_", "_foreach_add_",
                                           "stack", "_foreach_div_"),
}


class OpTimer(TorchDispatchMode):
    """Thread CPU seconds per aten op (overload packet name)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        t0 = time.thread_time()
        out = func(*args, **(kwargs or {}))
        self.seconds[func.overloadpacket.__name__] += time.thread_time() - t0
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", choices=[m for m in SETUPS if m != "bert-6"])
    p.add_argument("--steps", type=int, default=9, help="profiled steps per path (after 3 warm-up steps)")
    p.add_argument("--data", default=None)
    args = p.parse_args()
    configure_threads()
    tune_cpu_allocator()
    s = make_setup(args.model, args.data)
    cfg = s.pretrain
    n = 3 + args.steps
    ids = encode_texts(s.tokenizer, s.texts[: n * cfg.batch_size], cfg.seq_len)
    batches = list(MLMBatches(ids, s.tokenizer, cfg, epoch=0))
    loop = bench_loop(cfg)
    precision = effective_precision(cfg.precision, DEVICE)
    torch.manual_seed(0)
    now = BertForMLM(s.model_cfg).train()
    models = {"before": copy.deepcopy(now), "now": now}
    opts = {k: make_optimizer(m, loop, DEVICE) for k, m in models.items()}
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def step(name: str, i: int) -> None:
        torch.manual_seed(step_seed(cfg.seed, i))
        with baseline() if name == "before" else contextlib.nullcontext():
            train_step(models[name], batches[i], opts[name], scaler, precision, DEVICE, loop.grad_clip)

    for i in range(3):
        step("before", i)
        step("now", i)
    timers, per_step = {}, {}
    for name in ("before", "now"):
        timers[name] = OpTimer()
        t0 = time.thread_time()
        with timers[name]:
            for i in range(3, n):
                step(name, i)
        per_step[name] = (time.thread_time() - t0) / args.steps
    print(f"{args.model}, {torch.get_num_threads()} thread(s), {args.steps} steps per path, thread CPU time")
    print("| op class | before ms/step | share | now ms/step | share |\n|---|---:|---:|---:|---:|")
    rows = [*CLASSES.items(), ("everything else (views, Python, autograd)", ())]
    for label, ops in rows:
        cells = []
        for name in ("before", "now"):
            sec = timers[name].seconds
            if ops:
                v = sum(sec[o] for o in ops) / args.steps
            else:
                v = per_step[name] - sum(sec[o] for o2 in CLASSES.values() for o in o2) / args.steps
            cells.append(f"{v * 1e3:.1f} | {100 * v / per_step[name]:.0f} %")
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    print(f"| step | {per_step['before'] * 1e3:.1f} | | {per_step['now'] * 1e3:.1f} | |")


if __name__ == "__main__":
    main()
