"""Time and memory per run of `tinylm reproduce all|committee --scale paper` on 1 and on 8 GPUs (an ESTIMATE).

No training step has been timed on a GPU. The estimate combines measured numbers with stated assumptions:

- work per step: the matmul FLOPs benchmarks/train_speed.py counts (3 x forward; MLM head at the 15 % masked
  positions; fine-tuning batches at the mean padded width measured on the paper's samples with the
  bert-base-uncased vocabulary);
- compute time: those FLOPs at the GPU's dense bf16 peak x the MFU tinylm reaches on the reference CPU
  (benchmarks/results/train_speed.json: bert-6 pre-training 53 %, fine-tuning 58 % of the measured bf16
  peak). ASSUMPTION: the same fraction of a GPU's peak;
- a floor per step: at batch 32 (4 rows per GPU on 8 GPUs) a GPU step is bound by kernel launches, not
  arithmetic. Floor = 3 x the eager forward latency measured at batch 1 on an H200 for the same shape
  (benchmarks/results/committee_latency_cuda.json: bert-6 1.78 ms, the vectorised 32 x bert-1 committee
  0.97 ms; backward dispatches about twice the forward's kernels). ASSUMPTION: the same on an H100;
- the fused AdamW step, memory-bound: 28 bytes per trained parameter (read weight, gradient, 2 moments; write
  weight, 2 moments) at the HBM bandwidth; data parallel adds a ring all-reduce of the fp32 gradients,
  2 (K-1)/K x 4 bytes per parameter at ALLREDUCE_BUS_BW (ASSUMPTION, not overlapped with the backward);
- memory per GPU: 16 bytes per trained parameter (fp32 weights, gradients, Adam moments) + bf16 activations
  34 x hidden bytes per token per layer (Korthikanti et al. 2022, without the attention-matrix term that
  scaled-dot-product attention does not store) + the MLM head's fp32/bf16 logits and their gradient at the
  masked positions (12 bytes x vocab each) + 1 GiB for the CUDA context and allocator.

Evaluation (a forward pass over a few thousand test texts per run) and data preparation (tokenising the
articles once) are left out: seconds per run. `python scripts/gpu_estimate.py` prints the tables that
docs/gpu_runbook.md shows (tests/train/test_distributed.py checks they match).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tinylm.config import MODEL_PRESETS, ModelConfig, replace
from tinylm.experiments.committee import COMMITTEE_SCALES
from tinylm.experiments.pairs import FIRST_SEED
from tinylm.experiments.scales import SCALES, TASK_ORDER
from tinylm.model import BertForClassification, BertForMLM, count_parameters

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GPU = {"name": "H100 SXM", "bf16_peak": 989e12, "hbm_bytes_per_s": 3.35e12}  # NVIDIA's data sheet, dense bf16
ALLREDUCE_BUS_BW = 400e9  # bytes/s, NCCL all-reduce over NVLink/NVSwitch on one 8-GPU node (assumed)
CONTEXT_BYTES = 1 << 30
MASKED = 0.15
# Paper samples: training texts per task (labels x per-label count; FewRel: the 16 relations available offline)
# and the mean padded width of tinylm's length-bucketed batches of 32, measured with bert-base-uncased.
TRAIN_TEXTS = {"fewrel": 16 * 630, "ag_news": 4 * 1000, "dbpedia": 14 * 100}
LABELS = {"fewrel": 16, "ag_news": 4, "dbpedia": 14}
MEAN_WIDTH = {"fewrel": 31.6, "ag_news": 53.8, "dbpedia": 65.8}
PRETRAIN_WIDTH = 128  # 128-token Wikipedia openings are nearly all full length


@dataclass
class Measured:
    """The measured numbers the estimate rests on (benchmarks/results)."""

    mfu_pretrain: float
    mfu_finetune: float
    forward_bert6_batch1_s: float
    forward_committee_batch1_s: float

    @classmethod
    def load(cls) -> Measured:
        speed = json.loads((RESULTS / "train_speed.json").read_text())["bert-6"]
        cuda = json.loads((RESULTS / "committee_latency_cuda.json").read_text())["results"]

        def p50(system: str) -> float:
            row = next(r for r in cuda if (r["shape"], r["dtype"], r["batch"], r["system"]) ==
                       ("paper", "bf16", 1, system))
            return row["p50_ms"] / 1e3

        return cls(speed["pretrain"]["tinylm"]["mfu_executed_vs_bf16_peak"],
                   speed["finetune"]["tinylm"]["mfu_executed_vs_bf16_peak"], p50("deep"), p50("vectorised"))


def forward_flops(cfg: ModelConfig, rows: float, width: float, head_rows: float, num_labels: int) -> float:
    """benchmarks/train_speed.py's matmul count of one forward pass (MLM head when head_rows > 0)."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    tokens = rows * width
    flops = cfg.num_hidden_layers * (2 * tokens * (4 * h * h + 2 * h * inter) + 4 * rows * width * width * h)
    if head_rows:
        return flops + 2 * head_rows * (h * h + h * cfg.vocab_size)
    return flops + 2 * rows * (h * h + h * num_labels)


def parameters(cfg: ModelConfig, num_labels: int) -> int:
    with torch.device("meta"):
        return count_parameters(BertForMLM(cfg) if num_labels == 0 else BertForClassification(cfg, num_labels))


@dataclass
class Run:
    """One training run of a sweep: `members` models of `model` (1: an ordinary model, data-parallel)."""

    kind: str
    runs: int
    model: str
    members: int
    examples: int
    epochs: int
    batch: int
    task: str | None = None  # None: MLM pre-training

    def estimate(self, gpus: int, m: Measured) -> dict[str, float]:
        cfg = replace(MODEL_PRESETS[self.model], vocab_size=30522)
        labels = LABELS[self.task] if self.task else 0
        width = MEAN_WIDTH[self.task] if self.task else PRETRAIN_WIDTH
        steps = math.ceil(self.examples / self.batch) * self.epochs
        member_params = parameters(cfg, labels)
        if self.members > 1:  # committee: members split over the GPUs, each GPU its whole batch per member
            models, rows, floor = math.ceil(self.members / gpus), self.batch, 3 * m.forward_committee_batch1_s
        else:  # data parallel: each GPU its share of the rows of every batch
            models, rows, floor = 1, math.ceil(self.batch / gpus), 3 * m.forward_bert6_batch1_s
        head_rows = MASKED * rows * width if not self.task else 0
        flops = models * 3 * forward_flops(cfg, rows, width, head_rows, labels)
        compute = flops / (GPU["bf16_peak"] * (m.mfu_finetune if self.task else m.mfu_pretrain))
        trained = models * member_params
        optimizer = 28 * trained / GPU["hbm_bytes_per_s"]
        allreduce = 2 * (gpus - 1) / gpus * 4 * member_params / ALLREDUCE_BUS_BW if self.members == 1 else 0.0
        step = max(compute, floor) + optimizer + allreduce
        activations = models * rows * width * cfg.num_hidden_layers * 34 * cfg.hidden_size
        logits = models * head_rows * cfg.vocab_size * 12
        return {"steps": steps, "step_ms": 1e3 * step, "hours": steps * step / 3600,
                "gib": (16 * trained + activations + logits + CONTEXT_BYTES) / 2**30, "launch_bound": compute < floor,
                # checkpoint (weights + Adam moments, 12 bytes per parameter) + model folder (4 bytes), all members
                "disk_gib": 16 * self.members * member_params / 2**30}


def sweep_runs(experiment: str) -> list[Run]:
    """The runs `tinylm reproduce <experiment> --scale paper` trains for its default seed."""
    if experiment == "all":
        scale = SCALES["paper"]
        pre, ft = scale.pretrain, scale.finetune
        runs = [Run(f"pre-train {n // 1000}k", 1, pre.model, 1, n, pre.epochs, pre.batch_size) for n in scale.sizes]
        for task in TASK_ORDER:  # one fine-tuning per pre-trained size + the from-scratch twin
            runs += [Run(f"fine-tune {task}", len(scale.sizes) + 1, ft.model, 1, TRAIN_TEXTS[task], ft.epochs,
                         ft.batch_size, task)]
        return runs
    c = COMMITTEE_SCALES["paper"]
    pre, ft = c.pretrain, c.finetune
    runs = [Run(f"pre-train committee {c.members} x {c.member_model}", 1, c.member_model, c.members, pre.articles,
                pre.epochs, pre.batch_size),
            Run(f"pre-train {c.deep_model}", 1, c.deep_model, 1, pre.articles, pre.epochs, pre.batch_size)]
    for task in TASK_ORDER:
        runs += [Run(f"fine-tune committee {task}", 1, c.member_model, c.members, TRAIN_TEXTS[task], ft.epochs,
                     ft.batch_size, task),
                 Run(f"fine-tune {c.deep_model} {task}", 1, c.deep_model, 1, TRAIN_TEXTS[task], ft.epochs,
                     ft.batch_size, task)]
    return runs


def markdown(measured: Measured | None = None) -> str:
    m = measured or Measured.load()
    lines = [f"ESTIMATE for an {GPU['name']} (dense bf16 peak {GPU['bf16_peak'] / 1e12:.0f} TFLOP/s, HBM "
             f"{GPU['hbm_bytes_per_s'] / 1e12:.2f} TB/s), assuming MFU {m.mfu_pretrain:.0%} (pre-training) / "
             f"{m.mfu_finetune:.0%} (fine-tuning) as measured on the reference CPU, and a step floor of 3 x the "
             f"eager forward latency measured on an H200 (* = launch-bound: the floor, not the FLOPs, sets the "
             f"step). Seed {FIRST_SEED} only (`--seeds N`: N times as long). Hours and disk are per run.",
             "", "| run | runs | steps | 1 GPU: ms/step | 1 GPU: hours | 1 GPU: GiB | 8 GPUs: ms/step "
             "| 8 GPUs: hours | 8 GPUs: GiB per GPU | disk GiB |"]
    for experiment in ("all", "committee"):
        lines.append(f"| **`reproduce {experiment} --scale paper`** | | | | | | | | | |")
        totals = {1: 0.0, 8: 0.0}
        for run in sweep_runs(experiment):
            one, eight = run.estimate(1, m), run.estimate(8, m)
            for gpus, e in ((1, one), (8, eight)):
                totals[gpus] += run.runs * e["hours"]

            def ms(e: dict[str, float]) -> str:
                return f"{e['step_ms']:.1f}" + ("*" if e["launch_bound"] else "")

            lines.append(f"| {run.kind} | {run.runs} | {one['steps']:,} | {ms(one)} | {one['hours']:.2f} "
                         f"| {one['gib']:.1f} | {ms(eight)} | {eight['hours']:.2f} | {eight['gib']:.1f} "
                         f"| {one['disk_gib']:.1f} |")
        lines.append(f"| total, `reproduce {experiment}` | | | | **{totals[1]:.1f}** | | | **{totals[8]:.1f}** | | |")
    lines.insert(3, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
