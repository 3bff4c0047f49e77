"""Device, precision and seeding: the few things every entry point decides the same way."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
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


_ALLOCATOR_TUNED = False


def tune_cpu_allocator(enable: bool = True) -> bool:
    """Make glibc keep freed memory in the process: no mmap for large blocks, no trimming of the heap.

    A training step frees and re-allocates the same large activation buffers every step. By default glibc
    serves each block over its mmap threshold with a fresh mapping that the kernel zeroes and faults in again,
    step after step. Process-wide; the process keeps its peak memory. That suits one model's steady shapes,
    but not a large committee, whose many blocks of varying size fragment a heap that is never trimmed, so
    committees train with `enable=False`, which restores the defaults. Returns whether the tuning is in force:
    never off Linux/glibc, nor with TINYLM_TUNE_MALLOC=0.
    """
    global _ALLOCATOR_TUNED
    if enable == _ALLOCATOR_TUNED:
        return _ALLOCATOR_TUNED
    if os.environ.get("TINYLM_TUNE_MALLOC", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4  # mallopt parameters from glibc's malloc.h
    if enable:
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok = ok and libc.mallopt(m_trim_threshold, 1 << 40) == 1 and libc.mallopt(m_top_pad, 64 << 20) == 1
        _ALLOCATOR_TUNED = ok
    else:  # glibc's defaults
        libc.mallopt(m_mmap_max, 65536)
        libc.mallopt(m_trim_threshold, 128 * 1024)
        libc.mallopt(m_top_pad, 128 * 1024)
        libc.malloc_trim(0)
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED
