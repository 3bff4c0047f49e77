"""Device, precision and seeding: the few things every entry point decides the same way."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from tinylm.config import Precision


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU. Under torchrun, LOCAL_RANK picks the GPU of a plain "cuda"."""
    if requested and requested != "cuda":
        return torch.device(requested)
    if requested == "cuda" or torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK")
        return torch.device(f"cuda:{local_rank}" if local_rank is not None else "cuda")
    return torch.device("cpu")


def effective_precision(precision: Precision, device: torch.device) -> Precision:
    """fp16 exists for GPUs without bf16; on a CPU it falls back to bf16."""
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp16"
    if device.type == "cpu" and precision == "fp16":
        return "bf16"
    return precision


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed for one optimizer step: resuming at any step replays the same dropout and masks.

    Each data-parallel rank draws its own dropout masks (rank r > 0 shifts the stream), so the ranks' rows are
    not dropped alike; rank 0 (and a single process) keeps the original stream.
    """
    return (seed * 1_000_003 + step + rank * (1 << 40)) % 2**63


def configure_threads() -> None:
    """Respect TINYLM_THREADS (or OMP_NUM_THREADS); PyTorch's default is the physical core count."""
    n = os.environ.get("TINYLM_THREADS")
    if n:
        torch.set_num_threads(int(n))
