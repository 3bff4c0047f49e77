"""tinylm's eager training path as it was before issue 14, for the `ratio_vs_eager` figures of train_speed.py.

Issue 14 changed two functions of tinylm.model, and nothing else on the training path:
- `attention`: training without dropout went through SDPA's CPU flash kernel (whose backward is slow); a
  key mask was applied with masked_fill;
- `dropout`: the CPU fast path multiplied by a bool mask (a slow mixed-dtype multiply).
`baseline()` swaps those two functions back in (tinylm.model's names, which the committee's forward pass runs too),
so the same model object runs either path: train_speed.py runs step i of both, back to back, on the same batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

import tinylm.model


class _BoolMaskDropout(torch.autograd.Function):
    """tinylm.model._CpuDropout before issue 14: the same draws and mask, kept as a bool tensor."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # type: ignore[override]
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        uniform16 = words.view(torch.int16)[:n].view(x.shape)
        dropped = round(p * 65536)
        keep = uniform16 >= dropped - 32768
        ctx.scale = 65536 / (65536 - dropped)
        ctx.save_for_backward(keep)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    return _BoolMaskDropout.apply(x, p)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, training: bool) -> Tensor:
    if training and dropout_p > 0 and q.device.type == "cpu":
        scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return dropout(scores.softmax(-1), dropout_p, True).to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0)


_MODULES = (tinylm.model,)


@contextlib.contextmanager
def baseline() -> Iterator[None]:
    """Within the block, tinylm's models train on the pre-issue-14 attention and dropout."""
    saved = [(m, m.attention, m.dropout) for m in _MODULES]
    for m in _MODULES:
        m.attention, m.dropout = attention, dropout
    try:
        yield
    finally:
        for m, a, d in saved:
            m.attention, m.dropout = a, d
