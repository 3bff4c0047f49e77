"""Training and inference speed of tinylm against the paper-style reference, in one process, on real data.

    python benchmarks/train_speed.py                  # everything, about 6 minutes on 2 cores
    python benchmarks/train_speed.py --quick          # a smoke run
    python benchmarks/train_speed.py --only pretrain --models bert-6 --steps 8

For each model (BERT-6, the paper's config with the bert-base-uncased vocabulary; cpu-1, the default CPU
preset PRETRAIN_PRESETS["cpu"] with its trained 8,192 vocabulary; demo, the demo preset's 2-layer model with a
4,096 vocabulary), each with its preset's recipe (lr, clipping, precision), it measures:

- pre-training: MLM steps on batches of 32 Wikipedia openings (128 tokens). The reference (reference.py:
  Hugging Face BertForMaskedLM, fp32, padding to 128, logits over the whole vocabulary at every position,
  torch.optim.AdamW) and tinylm's production step (tinylm.train.loop.train_step: bf16 autocast, MLM head at
  the masked positions only, fused AdamW) train from the same weights on the same masked batches;
- fine-tuning: AG News classification steps, the reference padding every text to 128, tinylm padding each
  length-bucketed batch (tinylm.train.finetune.ClassificationBatches) to its longest text. Both take the same rows;
- inference: AG News test texts at batch 1 and batch 64, the reference fp32 padded to 128 vs tinylm's
  predict path (tinylm.train.evaluate.predict_proba: length-sorted, dynamic padding) in fp32 and bf16;
- the machine's matmul peak: the best of a few torch.mm on square fp32 and bf16 matrices.

Timing is interleaved: step i of the reference and step i of tinylm run back to back on the same batch (the
order alternating), so drift on a noisy machine hits both; figures are medians or totals over the timed steps.
Fine-tuning batches have varying widths, and the first batch of a width pays for building its kernels: those
steps are timed on a second pass over the same batches, as in every epoch after the first (the first pass is
reported as first_pass). Other processes' CPU use during each part is recorded (other_load_cores).
Tokens are counted the same way on both sides: real (non-padding) tokens, so each ratio is a speed ratio on
the same work.

FLOPs (matmul FLOPs only; elementwise work, softmax and the optimizer are not counted) are counted as each
implementation executes them, for a batch of B rows padded to width T with M rows reaching the MLM decoder:
    forward = L * [2*B*T*(4*h^2 + 2*h*I) + 4*B*T^2*h] + head
    head    = 2*M*(h^2 + h*V)            (MLM: M = masked positions for tinylm, M = B*T for the reference)
            = 2*B*(h^2 + h*C)            (classification: pooler + classifier)
    training step = 3 * forward          (backward: gradients for inputs and weights of every matmul)
tests/train/test_speed_numerics.py checks this count against torch.utils.flop_counter. "useful" FLOPs are the ones
tinylm executes for a batch: both implementations do that work, so useful FLOP/s ratios equal speed ratios.
MFU = FLOP/s / measured torch.mm peak, given against the fp32 and the bf16 peak.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import PreTrainedTokenizerFast

from eager_baseline import baseline
from reference import (
    PAD_TO,
    pad_batch_to,
    reference_model,
    reference_optimizer,
    reference_predict,
    reference_train_step,
)
from tinylm.config import (
    FINETUNE_PRESETS,
    MODEL_PRESETS,
    PRETRAIN_PRESETS,
    FinetuneConfig,
    ModelConfig,
    PretrainConfig,
    replace,
)
from tinylm.data import load_articles, load_task
from tinylm.data.encoding import encode_texts
from tinylm.model import IGNORE_INDEX, BertForClassification, BertForMLM
from tinylm.runtime import configure_threads, effective_precision, seed_everything, step_seed, tune_cpu_allocator
from tinylm.tokenizer import load_tokenizer, train_wordpiece
from tinylm.train.evaluate import predict_proba
from tinylm.train.finetune import ClassificationBatches, encode_examples
from tinylm.train.loop import Batch, LoopConfig, make_optimizer, train_step
from tinylm.train.pretrain import MLMBatches

RESULTS = Path(__file__).parent / "results" / "train_speed.json"
DEVICE = torch.device("cpu")
TASK = "ag_news"
REF_FUSED_ADAMW = False  # --ref-fused-adamw: the reference with the fused AdamW of later HF Trainers
CLOCK = time.perf_counter  # --cpu-time: time.thread_time


# ----------------------------------------------------------------------------------------------- FLOP counts


def forward_flops(cfg: ModelConfig, batch: int, width: int, head: str, head_rows: int = 0, num_labels: int = 0) -> int:
    """Matmul FLOPs of one forward pass (see the module docstring); head is "mlm", "classification" or "none"."""
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    tokens = batch * width
    flops = layers * (2 * tokens * (4 * h * h + 2 * h * inter) + 4 * batch * width * width * h)
    if head == "mlm":
        flops += 2 * head_rows * (h * h + h * cfg.vocab_size)
    elif head == "classification":
        flops += 2 * batch * (h * h + h * num_labels)
    return flops


def mlm_step_flops(cfg: ModelConfig, batch: Batch, full_vocab: bool) -> int:
    b, t = batch["input_ids"].shape
    rows = b * t if full_vocab else int((batch["labels"] != IGNORE_INDEX).sum())
    return 3 * forward_flops(cfg, b, t, "mlm", head_rows=rows)


def cls_step_flops(cfg: ModelConfig, batch: Batch, num_labels: int) -> int:
    b, t = batch["input_ids"].shape
    return 3 * forward_flops(cfg, b, t, "classification", num_labels=num_labels)


# ------------------------------------------------------------------------------------------- machine and peak


def machine_info() -> dict[str, Any]:
    ids: dict[str, str] = {}
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "cpu family", "model\t")) and ":" in line:
                key, value = (x.strip() for x in line.split(":", 1))
                ids[key] = value
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return {
        "cpu": ids.get("model name", platform.processor()),
        "cpu_family_model": f"{ids.get('cpu family', '?')}/{ids.get('model', '?')}",  # AMD family 26 = Zen 5
        "logical_cpus": os.cpu_count(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"}),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _best_mm_seconds(m: int, k: int, n: int, dtype: torch.dtype, reps: int) -> float:
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up (oneDNN primitive creation, page faults)
    best = math.inf
    for _ in range(reps):
        t0 = CLOCK()
        torch.mm(a, b, out=out)
        best = min(best, CLOCK() - t0)
    return best


def measure_peaks(sizes: Sequence[int], reps: int) -> dict[str, Any]:
    """Best-of-`reps` torch.mm FLOP/s on square matrices (the machine's practical matmul peak), per dtype,
    plus the GEMM shapes BERT-6 training runs (for reference only)."""
    out: dict[str, Any] = {"method": f"best of {reps} torch.mm per size, square sizes {list(sizes)}"}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        per_size = {n: 2 * n**3 / _best_mm_seconds(n, n, n, dtype, reps) for n in sizes}
        out[f"{name}_flops_per_s"] = max(per_size.values())
        out[f"{name}_by_size"] = {str(n): round(v / 1e9, 1) for n, v in per_size.items()}
        shapes = {"4096x768x3072": (4096, 768, 3072), "4096x3072x768": (4096, 3072, 768),
                  "4096x768x768": (4096, 768, 768), "4096x768x30522": (4096, 768, 30522)}
        out[f"{name}_model_shapes_gflops"] = {
            s: round(2 * m * k * n / _best_mm_seconds(m, k, n, dtype, max(2, reps // 2)) / 1e9, 1)
            for s, (m, k, n) in shapes.items()
        }
    out["bf16_over_fp32"] = round(out["bf16_flops_per_s"] / out["fp32_flops_per_s"], 2)
    return out


class OtherLoad:
    """CPU time other processes took while a block ran, in cores (0 = the machine was ours; 1 = one core lost).

    Reads /proc/stat (all processes) and /proc/self/stat (this one); None where /proc is missing. A benchmark
    run beside other work is not a measurement of this code, and the JSON says so.
    """

    def __init__(self) -> None:
        self.cores: float | None = None

    @staticmethod
    def _ticks() -> tuple[int, int] | None:
        try:
            total = sum(int(x) for i, x in enumerate(Path("/proc/stat").read_text().split("\n")[0].split()[1:])
                        if i not in (3, 4))  # all but idle and iowait
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
            return total, int(own[11]) + int(own[12])  # utime + stime
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> OtherLoad:
        self._start, self._t0 = self._ticks(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._ticks()
        if self._start is None or end is None:
            return
        hz = os.sysconf("SC_CLK_TCK")
        other = (end[0] - self._start[0]) - (end[1] - self._start[1])
        self.cores = round(max(0, other) / hz / max(time.perf_counter() - self._t0, 1e-9), 3)


def reference_attn_implementation() -> str:
    tiny = BertForMLM(replace(MODEL_PRESETS["cpu-1"], vocab_size=64, num_hidden_layers=1))
    return str(reference_model(tiny).config._attn_implementation)


# ------------------------------------------------------------------------------------------------ the runner


@dataclass
class Side:
    """One implementation under test: step(i) runs unit i and returns its loss (or None)."""

    name: str
    step: Callable[[int], Any]
    flops: Callable[[int], int]  # executed matmul FLOPs of unit i


def interleave(sides: Sequence[Side], warmup: Sequence[int], timed: Sequence[int]) -> dict[str, dict[str, list]]:
    """Run every side on the same units: warm-up units untimed, then each timed unit on every side back to back,
    alternating which side goes first. Returns per side the seconds and losses of each timed unit."""
    for i in warmup:
        for side in sides:
            side.step(i)
    rec: dict[str, dict[str, list]] = {s.name: {"seconds": [], "losses": []} for s in sides}
    for r, i in enumerate(timed):
        for side in (sides if r % 2 == 0 else list(reversed(sides))):
            t0 = CLOCK()
            loss = side.step(i)
            # A loss tensor is read inside the timed region (a no-op sync on a CPU); other results are not losses.
            loss = float(loss) if isinstance(loss, torch.Tensor) else None
            rec[side.name]["seconds"].append(CLOCK() - t0)
            rec[side.name]["losses"].append(loss)
    return rec


def summarise(rec: dict[str, list], tokens: Sequence[int], flops: Sequence[int], useful: Sequence[int],
              peaks: dict[str, Any]) -> dict[str, Any]:
    secs = rec["seconds"]
    total = sum(secs)
    out = {
        "steps": len(secs),
        "median_step_s": round(statistics.median(secs), 4),
        "tokens_per_s": round(sum(tokens) / total, 1),
        "median_tokens_per_s": round(statistics.median(t / s for t, s in zip(tokens, secs, strict=True)), 1),
        "executed_gflop_per_step": round(sum(flops) / len(flops) / 1e9, 3),
        "executed_gflop_per_s": round(sum(flops) / total / 1e9, 2),
        "useful_gflop_per_s": round(sum(useful) / total / 1e9, 2),
    }
    for kind in ("executed", "useful"):
        for p in ("fp32", "bf16"):
            out[f"mfu_{kind}_vs_{p}_peak"] = round(out[f"{kind}_gflop_per_s"] * 1e9 / peaks[f"{p}_flops_per_s"], 4)
    out["step_seconds"] = [round(x, 4) for x in secs]
    losses = [x for x in rec["losses"] if x is not None]
    if losses:
        out["losses"] = [round(x, 4) for x in losses]
    return out


def compare(ref_rec: dict[str, list], fast_rec: dict[str, list]) -> dict[str, float]:
    """Speed ratios tinylm / reference on the same units: median of per-unit ratios, and ratio of totals."""
    per_unit = [r / f for r, f in zip(ref_rec["seconds"], fast_rec["seconds"], strict=True)]
    return {"ratio": round(statistics.median(per_unit), 2),
            "ratio_of_totals": round(sum(ref_rec["seconds"]) / sum(fast_rec["seconds"]), 2)}


# --------------------------------------------------------------------------------------------- the workloads


@dataclass
class Setup:
    name: str  # model preset
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    tokenizer: PreTrainedTokenizerFast
    model_cfg: ModelConfig
    texts: list[str]  # Wikipedia openings, the preset's article subset in its seeded order


# Benchmarked model -> the recipe presets (PRETRAIN_PRESETS / FINETUNE_PRESETS) whose settings it runs with
# (cpu-6: the cpu recipe with its 6-layer model, as the CPU scale trains it).
SETUPS = {"bert-6": "paper", "cpu-1": "cpu", "cpu-6": "cpu", "demo": "demo"}
SMALL = ("cpu-1", "cpu-6", "demo")  # the CPU-scale presets: also measured against the eager path before issue 14
TEXTS = 4000  # Wikipedia openings loaded (the cpu preset's subset; the others' first 4,000 in the same order)


def make_setup(name: str, root: Path | None) -> Setup:
    preset = SETUPS[name]
    pcfg, fcfg = PRETRAIN_PRESETS[preset], FINETUNE_PRESETS[preset]
    if pcfg.model != name:  # a model run with another preset's recipe
        pcfg, fcfg = replace(pcfg, model=name), replace(fcfg, model=name)
    base = MODEL_PRESETS[pcfg.model]
    articles = load_articles(min(pcfg.articles, TEXTS), seed=pcfg.data_seed, root=root)
    texts = [a.text for a in articles]
    if pcfg.tokenizer == "train":
        # As tinylm.train.pretrain.build_tokenizer does, on the first 4,000 openings (for the cpu preset: exactly its
        # articles, so the very vocabulary a run gets; for demo: a vocabulary of the same size). Cached on disk.
        tokenizer = train_wordpiece(texts, vocab_size=base.vocab_size, max_length=pcfg.seq_len)
    else:
        tokenizer = load_tokenizer(pcfg.tokenizer, root)
    return Setup(name, pcfg, fcfg, tokenizer, replace(base, vocab_size=len(tokenizer)), texts)


Step = Callable[[int], torch.Tensor]


def bench_loop(cfg: Any) -> LoopConfig:
    """A recipe's loop settings (lr, clipping, precision) for benchmark steps at a constant learning rate."""
    return LoopConfig(epochs=1, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_ratio=0.0, schedule="step",
                      precision=cfg.precision, seed=cfg.seed, save_every=10**9, grad_clip=cfg.grad_clip or None)


def paired_steps(cfg: Any, fast: torch.nn.Module, ref: torch.nn.Module, batches: list, ref_batches: list,
                 fast_model: torch.nn.Module) -> tuple[Step, Step, str]:
    """Step i of the reference and of tinylm (training.train_step through `fast_model`, fast itself or compiled)
    on batch i, each side with its own optimizer over the same starting weights and dropout seeded alike.
    Returns (reference step, tinylm step, tinylm's precision)."""
    loop = bench_loop(cfg)
    opt = make_optimizer(fast, loop, DEVICE)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    precision = effective_precision(cfg.precision, DEVICE)
    ref_opt = reference_optimizer(ref, cfg.lr, cfg.weight_decay, fused=REF_FUSED_ADAMW)

    def fast_step(i: int) -> torch.Tensor:
        torch.manual_seed(step_seed(cfg.seed, i))
        return train_step(fast_model, batches[i], opt, scaler, precision, DEVICE, loop.grad_clip).loss.detach()

    def ref_step(i: int) -> torch.Tensor:
        torch.manual_seed(step_seed(cfg.seed, i))
        return reference_train_step(ref, ref_batches[i], ref_opt, loop.grad_clip)

    return ref_step, fast_step, precision


def bench_pretrain(s: Setup, warmup: int, steps: int, peaks: dict, compile_fast: bool) -> dict[str, Any]:
    cfg = s.pretrain
    n_batches = warmup + steps
    ids = encode_texts(s.tokenizer, s.texts[: n_batches * cfg.batch_size], cfg.seq_len)
    t0 = time.perf_counter()
    batches = list(MLMBatches(ids, s.tokenizer, cfg, epoch=0))
    build_ms = (time.perf_counter() - t0) / len(batches) * 1e3
    pad_id = s.tokenizer.pad_token_id
    ref_batches = [pad_batch_to(b, pad_id) for b in batches]

    seed_everything(cfg.seed)
    fast = BertForMLM(s.model_cfg).train()
    ref = reference_model(fast).train()  # same weights
    ref_step, fast_step, precision = paired_steps(cfg, fast, ref, batches, ref_batches,
                                                  torch.compile(fast) if compile_fast else fast)

    sides = [Side("reference", ref_step, lambda i: mlm_step_flops(s.model_cfg, ref_batches[i], True)),
             Side("tinylm", fast_step, lambda i: mlm_step_flops(s.model_cfg, batches[i], False))]
    timed = range(warmup, n_batches)
    rec = interleave(sides, range(warmup), timed)
    tokens = [int(batches[i]["attention_mask"].sum()) for i in timed]
    useful = [sides[1].flops(i) for i in timed]
    out: dict[str, Any] = {
        "workload": f"MLM, batch {cfg.batch_size} x {cfg.seq_len} Wikipedia openings, lr {cfg.lr}, "
                    f"grad_clip {cfg.grad_clip or None}",
        "tinylm_precision": precision,
        "tinylm_compiled": compile_fast,
        "warmup_steps": warmup,
        "real_tokens_per_batch": round(statistics.mean(tokens), 1),
        "tinylm_mean_width": round(statistics.mean(batches[i]["input_ids"].shape[1] for i in timed), 1),
        "masked_positions_per_batch": round(statistics.mean(int((batches[i]["labels"] != IGNORE_INDEX).sum())
                                                            for i in timed), 1),
        "tinylm_batch_build_ms": round(build_ms, 2),
    }
    for side in sides:
        out[side.name] = summarise(rec[side.name], tokens, [side.flops(i) for i in timed], useful, peaks)
    out.update(compare(rec["reference"], rec["tinylm"]))
    diffs = [abs(a - b) for a, b in zip(rec["reference"]["losses"], rec["tinylm"]["losses"], strict=True)]
    out["loss_max_abs_diff"] = round(max(diffs), 4)
    return out


def bench_finetune(s: Setup, steps: int, peaks: dict, root: Path | None) -> dict[str, Any]:
    cfg = s.finetune
    task = load_task(TASK, root, train_per_label=cfg.train_per_label, test_per_label=0, seed=cfg.data_seed)
    max_length = min(cfg.max_length, s.model_cfg.max_position_embeddings)
    ids = encode_examples(s.tokenizer, task.train, max_length)
    labels = [e.label for e in task.train]
    pad_id = s.tokenizer.pad_token_id
    epoch = ClassificationBatches(ids, labels, cfg.batch_size, pad_id, cfg.seed, 0)
    n_batches = min(steps, len(epoch))
    batches = [epoch[i] for i in range(n_batches)]
    ref_batches = [pad_batch_to(b, pad_id) for b in batches]

    seed_everything(cfg.seed)
    fast = BertForClassification(s.model_cfg, task.num_labels).train()
    ref = reference_model(fast).train()
    # Widths vary from batch to batch: torch.compile would recompile (or go dynamic), so fine-tuning runs eager.
    ref_step, fast_step, precision = paired_steps(cfg, fast, ref, batches, ref_batches, fast)

    n = task.num_labels
    sides = [Side("reference", ref_step, lambda i: cls_step_flops(s.model_cfg, ref_batches[i], n)),
             Side("tinylm", fast_step, lambda i: cls_step_flops(s.model_cfg, batches[i], n))]
    # Batch widths vary: the first batch of a width builds its kernels (oneDNN primitives, allocator pools),
    # which a run re-uses in every later epoch. The headline figures are a second pass over the same batches,
    # as in every epoch after the first; the first pass is reported too.
    timed = range(n_batches)
    cold = interleave(sides, [], timed)
    rec = interleave(sides, [], timed)
    tokens = [int(batches[i]["attention_mask"].sum()) for i in timed]
    useful = [sides[1].flops(i) for i in timed]
    all_widths = [len(x) for x in ids]
    out: dict[str, Any] = {
        "workload": f"{TASK} classification, batch {cfg.batch_size}, {len(task.train)} training texts, "
                    f"lr {cfg.lr}, grad_clip {cfg.grad_clip or None}",
        "tinylm_precision": precision,
        "timed": "second pass over the batches (the first pass is the warm-up, reported as first_pass)",
        "real_tokens_per_batch": round(statistics.mean(tokens), 1),
        "tinylm_mean_width": round(statistics.mean(batches[i]["input_ids"].shape[1] for i in timed), 1),
        "reference_width": PAD_TO,
        "mean_text_tokens_whole_train_set": round(statistics.mean(all_widths), 1),
        "epoch_padding_overhead_tinylm": round(
            sum(epoch[i]["input_ids"].numel() for i in range(len(epoch))) / sum(all_widths) - 1, 4),
    }
    for side in sides:
        out[side.name] = summarise(rec[side.name], tokens, [side.flops(i) for i in timed], useful, peaks)
    out.update(compare(rec["reference"], rec["tinylm"]))
    out["first_pass"] = {
        **{f"{name}_tokens_per_s": round(sum(tokens) / sum(cold[name]["seconds"]), 1) for name in cold},
        **compare(cold["reference"], cold["tinylm"]),
    }
    return out


EAGER_LOSS_TOLERANCE = 5e-3  # bf16 autocast: the two paths round differently (tests/train/test_speed_numerics.py)


def eager_steps(cfg: Any, model: torch.nn.Module, batches: list) -> tuple[Step, Step]:
    """Step i of tinylm's eager path before issue 14 (eager_baseline) and of its current path, on batch i: two
    copies of `model` (same starting weights), each with its own optimizer, dropout seeded alike."""
    loop = bench_loop(cfg)
    before_model = copy.deepcopy(model)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    precision = effective_precision(cfg.precision, DEVICE)
    opt_before, opt_now = make_optimizer(before_model, loop, DEVICE), make_optimizer(model, loop, DEVICE)

    def before(i: int) -> torch.Tensor:
        torch.manual_seed(step_seed(cfg.seed, i))
        with baseline():
            return train_step(before_model, batches[i], opt_before, scaler, precision, DEVICE,
                              loop.grad_clip).loss.detach()

    def now(i: int) -> torch.Tensor:
        torch.manual_seed(step_seed(cfg.seed, i))
        return train_step(model, batches[i], opt_now, scaler, precision, DEVICE, loop.grad_clip).loss.detach()

    return before, now


def bench_vs_eager(s: Setup, kind: str, warmup: int, steps: int, peaks: dict, root: Path | None) -> dict[str, Any]:
    """tinylm's training step now against its eager path before issue 14, interleaved on the same batches.

    kind "pretrain": MLM batches as in bench_pretrain; "finetune": the classification batches of bench_finetune,
    timed on a second pass (the first is the warm-up). The numerics check: the loss of the first step, same
    batch and weights on both sides, agrees to bf16 tolerance.
    """
    seed_everything(s.pretrain.seed)
    if kind == "pretrain":
        cfg = s.pretrain
        ids = encode_texts(s.tokenizer, s.texts[: (warmup + steps) * cfg.batch_size], cfg.seq_len)
        batches = list(MLMBatches(ids, s.tokenizer, cfg, epoch=0))
        model: torch.nn.Module = BertForMLM(s.model_cfg).train()
        flops = [mlm_step_flops(s.model_cfg, b, False) for b in batches]
        warm, timed = range(warmup), range(warmup, len(batches))
    else:
        cfg = s.finetune
        task = load_task(TASK, root, train_per_label=cfg.train_per_label, test_per_label=0, seed=cfg.data_seed)
        ids = encode_examples(s.tokenizer, task.train, min(cfg.max_length, s.model_cfg.max_position_embeddings))
        epoch = ClassificationBatches(ids, [e.label for e in task.train], cfg.batch_size, s.tokenizer.pad_token_id,
                                      cfg.seed, 0)
        batches = [epoch[i] for i in range(min(steps, len(epoch)))]
        model = BertForClassification(s.model_cfg, task.num_labels).train()
        flops = [cls_step_flops(s.model_cfg, b, task.num_labels) for b in batches]
        warm = timed = range(len(batches))
    before, now = eager_steps(cfg, model, batches)
    first = [(float(before(i)), float(now(i))) for i in warm]  # warm-up; step 0 is the numerics check
    sides = [Side("eager_before", before, lambda i: flops[i]), Side("tinylm", now, lambda i: flops[i])]
    rec = interleave(sides, [], timed)
    tokens = [int(batches[i]["attention_mask"].sum()) for i in timed]
    timed_flops = [flops[i] for i in timed]
    out: dict[str, Any] = {
        "before": "tinylm's eager path before issue 14 (benchmarks/eager_baseline.py), same process, interleaved",
        "timed_steps": len(timed),
        "real_tokens_per_batch": round(statistics.mean(tokens), 1),
    }
    for side in sides:
        out[side.name] = summarise(rec[side.name], tokens, timed_flops, timed_flops, peaks)
    out.update(compare(rec["eager_before"], rec["tinylm"]))
    diff = abs(first[0][0] - first[0][1])
    later = [abs(a - b) for a, b in zip(rec["eager_before"]["losses"], rec["tinylm"]["losses"], strict=True)]
    out["numerics"] = {"first_step_loss_before": round(first[0][0], 5), "first_step_loss_now": round(first[0][1], 5),
                       "first_step_abs_diff": round(diff, 6), "tolerance": EAGER_LOSS_TOLERANCE,
                       "ok": diff <= EAGER_LOSS_TOLERANCE,
                       "max_abs_diff_timed_steps": round(max(later), 5) if later else None}
    return out


def bench_infer(s: Setup, batch_sizes: dict[int, int], peaks: dict, root: Path | None) -> dict[str, Any]:
    """calls per batch size: batch 1 -> that many single-text calls; batch 64 -> that many 64-text calls."""
    need = max(bs * calls for bs, calls in batch_sizes.items())
    per_label = -(-need // 4) + 1
    task = load_task(TASK, root, train_per_label=0, test_per_label=per_label, seed=42)
    texts = [e.text for e in task.test]
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.permutation(len(texts))]
    seed_everything(0)
    fast = BertForClassification(s.model_cfg, task.num_labels).eval()
    ref = reference_model(fast).eval()
    tok = s.tokenizer
    n_labels = task.num_labels
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=PAD_TO)["input_ids"]]
    out: dict[str, Any] = {"workload": f"{TASK} test texts, mean {statistics.mean(lengths):.1f} tokens"}
    for bs, calls in batch_sizes.items():
        chunks = [texts[c * bs:(c + 1) * bs] for c in range(calls)]
        chunk_tokens = [sum(lengths[c * bs:(c + 1) * bs]) for c in range(calls)]

        def fast_flops(c: int, _chunks: list[list[str]] = chunks) -> int:
            # predict_proba sorts by length and pads each batch to its longest text
            enc = tok(_chunks[c], truncation=True, max_length=PAD_TO, padding=True)
            width = len(enc["input_ids"][0])
            return forward_flops(s.model_cfg, len(_chunks[c]), width, "classification", num_labels=n_labels)

        def ref_flops(c: int, _chunks: list[list[str]] = chunks) -> int:
            return forward_flops(s.model_cfg, len(_chunks[c]), PAD_TO, "classification", num_labels=n_labels)

        sides = [
            Side("reference", lambda c, _ch=chunks, _bs=bs: reference_predict(ref, tok, _ch[c], batch_size=_bs),
                 ref_flops),
            Side("tinylm_fp32", lambda c, _ch=chunks, _bs=bs: predict_proba(
                fast, tok, _ch[c], batch_size=_bs, precision="fp32", device=DEVICE), fast_flops),
            Side("tinylm_bf16", lambda c, _ch=chunks, _bs=bs: predict_proba(
                fast, tok, _ch[c], batch_size=_bs, precision="bf16", device=DEVICE), fast_flops),
        ]
        warm = min(3, calls)
        for c in range(warm):
            for side in sides:
                side.step(c)
        timed = range(calls)
        with torch.inference_mode():
            rec = interleave(sides, [], timed)
        useful = [fast_flops(c) for c in timed]
        res: dict[str, Any] = {"calls": calls, "texts_per_call": bs}
        for side in sides:
            r = summarise(rec[side.name], chunk_tokens, [side.flops(c) for c in timed], useful, peaks)
            secs = rec[side.name]["seconds"]
            r["median_latency_ms"] = round(statistics.median(secs) * 1e3, 2)
            r["texts_per_s"] = round(bs * len(secs) / sum(secs), 1)
            res[side.name] = r
        for name in ("tinylm_fp32", "tinylm_bf16"):
            res[f"ratio_{name}"] = compare(rec["reference"], rec[name])["ratio"]
        out[f"batch_{bs}"] = res
    return out


def epoch_estimates(results: dict[str, Any]) -> dict[str, Any]:
    """How long one pre-training epoch of each preset takes with tinylm here, from the measured step times."""
    est = {}
    for preset, cfg in PRETRAIN_PRESETS.items():
        pre = results.get(cfg.model, {}).get("pretrain")
        if pre is None or "tinylm" not in pre:  # not measured against the reference in this run
            continue
        steps = -(-cfg.articles // cfg.batch_size)
        secs = steps * pre["tinylm"]["median_step_s"]
        est[preset] = {"model": cfg.model, "articles": cfg.articles, "steps_per_epoch": steps,
                       "epoch_seconds": round(secs, 1), "epoch_hours": round(secs / 3600, 2),
                       "epochs": cfg.epochs, "run_hours": round(secs * cfg.epochs / 3600, 2)}
    return est


# -------------------------------------------------------------------------------------------------- printing


def table(results: dict[str, Any]) -> Iterator[str]:
    peaks = results["peak"]
    yield (f"matmul peak: fp32 {peaks['fp32_flops_per_s'] / 1e9:.0f} GFLOP/s, "
           f"bf16 {peaks['bf16_flops_per_s'] / 1e9:.0f} GFLOP/s ({peaks['bf16_over_fp32']}x)")
    head = f"{'model':7} {'workload':10} {'ref tok/s':>10} {'tinylm tok/s':>12} {'ratio':>6} " \
           f"{'ref MFU fp32':>12} {'tinylm MFU bf16':>15} {'ref step s':>10} {'tinylm step s':>13}"
    yield head
    yield "-" * len(head)
    for model in results["models"]:
        for kind in ("pretrain", "finetune"):
            r = results[model].get(kind)
            if not r or "reference" not in r:
                continue
            ref, fast = r["reference"], r["tinylm"]
            yield (f"{model:7} {kind:10} {ref['tokens_per_s']:>10.0f} {fast['tokens_per_s']:>12.0f} "
                   f"{r['ratio']:>5.2f}x {ref['mfu_executed_vs_fp32_peak']:>12.1%} "
                   f"{fast['mfu_executed_vs_bf16_peak']:>15.1%} {ref['median_step_s']:>10.3f} "
                   f"{fast['median_step_s']:>13.3f}")
    for model in results["models"]:
        for kind in ("pretrain", "finetune"):
            vs = results[model].get(kind, {}).get("vs_eager")
            if vs:
                yield (f"{model:7} {kind:10} vs eager before issue 14: {vs['eager_before']['tokens_per_s']:.0f} -> "
                       f"{vs['tinylm']['tokens_per_s']:.0f} tok/s, {vs['ratio']:.2f}x, MFU vs bf16 peak "
                       f"{vs['tinylm']['mfu_executed_vs_bf16_peak']:.1%}; first-step loss diff "
                       f"{vs['numerics']['first_step_abs_diff']:.1e}")
    for model in results["models"]:
        r = results[model].get("finetune")
        if r and "first_pass" in r:
            f = r["first_pass"]
            yield (f"{model:7} finetune first pass (widths met for the first time): reference "
                   f"{f['reference_tokens_per_s']:.0f} tok/s, tinylm {f['tinylm_tokens_per_s']:.0f} tok/s, "
                   f"{f['ratio']:.2f}x")
    for model in results["models"]:
        r = results[model].get("infer")
        if not r:
            continue
        for key, res in r.items():
            if not key.startswith("batch_"):
                continue
            ref, f32, b16 = res["reference"], res["tinylm_fp32"], res["tinylm_bf16"]
            yield (f"{model:7} infer b{res['texts_per_call']:<3} latency ms: reference {ref['median_latency_ms']:.1f}, "
                   f"tinylm fp32 {f32['median_latency_ms']:.1f} ({res['ratio_tinylm_fp32']:.2f}x), "
                   f"tinylm bf16 {b16['median_latency_ms']:.1f} ({res['ratio_tinylm_bf16']:.2f}x); "
                   f"texts/s {ref['texts_per_s']:.0f} / {f32['texts_per_s']:.0f} / {b16['texts_per_s']:.0f}")
    for preset, e in results.get("epoch_estimates", {}).items():
        yield (f"preset {preset!r} ({e['model']}, {e['articles']} articles): one pre-training epoch "
               f"{e['steps_per_epoch']} steps = {e['epoch_seconds'] / 60:.1f} min; {e['epochs']} epochs "
               f"{e['run_hours']:.2f} h")


# ------------------------------------------------------------------------------------------------------ main


def merged(old: dict[str, Any], new: dict[str, Any], models: Sequence[str]) -> dict[str, Any]:
    """`old` results with `new`'s parts laid over them, per model and part (a part's keys replace the old ones);
    the merged parts record the command, peak and machine they come from."""
    out = dict(old)
    stamp = {"command": new["command"], "peak_bf16_flops_per_s": new["peak"]["bf16_flops_per_s"]}
    for model in models:
        target = out.setdefault(model, {})
        for key, value in new.get(model, {}).items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value, "merged_from": stamp}
            else:
                target[key] = value
    out["models"] = list(dict.fromkeys([*old.get("models", []), *models]))
    out.setdefault("merged_runs", []).append({**stamp, "parts": new["parts"], "seconds": new["seconds"]})
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS),
                   help="bert-6: the paper preset; cpu-1: the cpu preset (the default); demo: the demo preset")
    p.add_argument("--only", choices=["pretrain", "finetune", "infer", "eager"], action="append",
                   help="run only these parts (repeatable; eager: the small presets' training step against "
                        "tinylm's eager path before issue 14, and bert-6's with `--only eager --models bert-6`); "
                        "default: all")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per side for BERT-6 (others: 5x)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed pre-training warm-up steps per side for BERT-6 (others: 3x); fine-tuning warms up "
                        "on a first pass over its batches")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 timed steps, few inference calls")
    p.add_argument("--compile", action="store_true", help="torch.compile tinylm's pre-training model")
    p.add_argument("--ref-fused-adamw", action="store_true",
                   help="give the reference fused AdamW (HF Trainer's default since torch 2.8, after the paper)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time steps and the peak in this thread's CPU time instead of wall time: on a busy machine "
                        "it leaves out the time other processes hold the core (1 thread only: TINYLM_THREADS=1)")
    p.add_argument("--no-tune-malloc", action="store_true",
                   help="skip tinylm's allocator setting (tinylm.runtime.tune_cpu_allocator, process-wide: "
                        "it applies to both sides)")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: TINYLM_DATA or ../shared/data)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--merge", action="store_true",
                   help="merge this run's parts into the results already in --out (per model and part) instead "
                        "of replacing the file; each part keeps the command, peak and load it was measured with")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
    parts = args.only or ["pretrain", "finetune", "infer", "eager"]
    global REF_FUSED_ADAMW, CLOCK
    REF_FUSED_ADAMW = args.ref_fused_adamw
    configure_threads()  # what pretrain() and finetune() do first
    if args.cpu_time:
        if torch.get_num_threads() != 1:
            p.error("--cpu-time times one thread: set TINYLM_THREADS=1")
        CLOCK = time.thread_time
    malloc_tuned = False if args.no_tune_malloc else tune_cpu_allocator()  # what train_loop does on a CPU
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "parts": parts,
        "models": args.models,
        "settings": {
            "reference": "transformers BertForMaskedLM / BertForSequenceClassification (attention "
                         f"'{reference_attn_implementation()}'), fp32, padded to {PAD_TO}, full-vocabulary MLM "
                         f"logits, torch.optim.AdamW ({'fused' if REF_FUSED_ADAMW else 'default, not fused'})",
            "tinylm": "tinylm.train.loop.train_step: bf16 autocast, MLM head at masked positions, fused AdamW; "
                      "fine-tuning batches length-bucketed and padded to their longest text",
            "malloc_tuned_both_sides": malloc_tuned,
            "timing": "interleaved: each timed batch runs on both sides back to back, order alternating; "
                      + ("thread CPU time" if args.cpu_time else "wall time"),
        },
    }
    print(json.dumps(results["machine"]))
    with OtherLoad() as load:
        results["peak"] = measure_peaks([1024, 2048, 4096] if not args.quick else [1024, 2048], reps=5)
    results["peak"]["other_load_cores"] = load.cores
    print(f"peak: {results['peak']}", flush=True)
    for name in args.models:
        scale = 1 if name == "bert-6" else 5
        s = make_setup(name, args.data)
        res: dict[str, Any] = {"model_config": s.model_cfg.to_dict(),
                               "parameters": sum(p.numel() for p in BertForMLM(s.model_cfg).parameters())}
        results[name] = res
        warmup = args.warmup * (1 if scale == 1 else 3)
        if "pretrain" in parts:
            with OtherLoad() as load:
                res["pretrain"] = bench_pretrain(s, warmup, args.steps * scale, results["peak"], args.compile)
            res["pretrain"]["other_load_cores"] = load.cores
            print(f"{name} pretrain: ratio {res['pretrain']['ratio']} (other load {load.cores} cores)", flush=True)
        if "finetune" in parts:
            with OtherLoad() as load:
                res["finetune"] = bench_finetune(s, (args.steps + 2) * scale, results["peak"], args.data)
            res["finetune"]["other_load_cores"] = load.cores
            print(f"{name} finetune: ratio {res['finetune']['ratio']} (other load {load.cores} cores)", flush=True)
        if "infer" in parts:
            full = {1: 24, 64: 3} if name == "bert-6" else {1: 100, 64: 10}
            calls = {1: 4, 64: 1} if args.quick else full
            with OtherLoad() as load:
                res["infer"] = bench_infer(s, calls, results["peak"], args.data)
            res["infer"]["other_load_cores"] = load.cores
            print(f"{name} infer done (other load {load.cores} cores)", flush=True)
        if "eager" in parts and (name in SMALL or args.only == ["eager"]):  # bert-6 only when asked for by name
            for kind, n_steps in (("pretrain", args.steps * scale), ("finetune", (args.steps + 2) * scale)):
                with OtherLoad() as load:
                    vs = bench_vs_eager(s, kind, warmup, n_steps, results["peak"], args.data)
                vs["other_load_cores"] = load.cores
                part = res.setdefault(kind, {})
                part["vs_eager"] = vs
                part["ratio_vs_eager"] = vs["ratio"]
                if kind == "pretrain":
                    part["mfu_vs_bf16_peak"] = vs["tinylm"]["mfu_executed_vs_bf16_peak"]
                print(f"{name} {kind} vs eager before issue 14: ratio {vs['ratio']}, numerics "
                      f"{'ok' if vs['numerics']['ok'] else 'NOT OK'} (other load {load.cores} cores)", flush=True)
    results["epoch_estimates"] = epoch_estimates(results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and args.out.is_file():
        results = merged(json.loads(args.out.read_text()), results, args.models)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    for line in table(results):
        print(line)
    loads = [results["peak"]["other_load_cores"]] + [
        results[m][k].get("other_load_cores") for m in args.models for k in parts if k in results[m]]
    if any(x is not None and x > 0.1 for x in loads):
        print(f"WARNING: other processes used up to {max(x for x in loads if x is not None):.2f} cores during "
              "this run; its figures are not clean measurements")
    print(f"\nwritten {args.out} in {results['seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
