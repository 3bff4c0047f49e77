"""Per-member layers over stacked tensors (member axis first): one batched op serves all members.

Each function is the committee counterpart of one nn module of model.py, with member j's weights at index j:
`linear` is nn.Linear via torch.baddbmm, `layer_norm` nn.LayerNorm, `gather_rows` nn.Embedding, and `conv_front`
the convolutional front block of the paper's BERT-1 variants as grouped convolutions: member j's channels are
group j, so one conv2d / batch_norm call serves all members, each with its own weights and statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gather_rows(table: Tensor, ids: Tensor, n: int, padding_idx: int | None) -> Tensor:
    """table [n, V, h], ids [B, L] (shared) or [n, B, L] -> [n, B, L, h]: each member looks up its own table.

    Like nn.Embedding(padding_idx=...), the padding row gets no gradient."""
    vocab = table.shape[1]
    offsets = torch.arange(n, device=ids.device).mul_(vocab).view(n, 1, 1)
    flat = F.embedding(ids.unsqueeze(0) + offsets if ids.ndim == 2 else ids + offsets, table.reshape(n * vocab, -1))
    if padding_idx is not None and torch.is_grad_enabled() and table.requires_grad:
        pad = (ids == padding_idx).unsqueeze(-1)
        flat = torch.where(pad if ids.ndim == 3 else pad.unsqueeze(0), flat.detach(), flat)
    return flat


def expand_member(t: Tensor, ndim: int) -> Tensor:
    """[n, d] -> [n, 1, ..., 1, d] with `ndim` dimensions in all."""
    return t.view(t.shape[0], *([1] * (ndim - 2)), t.shape[-1])


def linear(x: Tensor, p: dict[str, Tensor], pre: str) -> Tensor:
    """Per-member nn.Linear: x [n, ..., in] with weight [n, out, in] and bias [n, out]."""
    w, bias = p[pre + "weight"], p[pre + "bias"]
    shape = x.shape
    out = torch.baddbmm(bias[:, None, :], x.reshape(shape[0], -1, shape[-1]), w.transpose(1, 2))
    return out.view(*shape[:-1], w.shape[1])


def layer_norm(x: Tensor, p: dict[str, Tensor], pre: str, eps: float) -> Tensor:
    """Per-member nn.LayerNorm over the last axis."""
    # int(): under ONNX tracing a size is a graph value, which the LayerNormalization symbolic refuses; the
    # hidden size is fixed, so a constant changes nothing.
    y = F.layer_norm(x, (int(x.shape[-1]),), None, None, eps)
    return y * expand_member(p[pre + "weight"], x.ndim) + expand_member(p[pre + "bias"], x.ndim)


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Per-row mean of `values` [n, m] over `valid` entries (F.cross_entropy's mean with ignore_index)."""
    return (values * valid).sum(1) / valid.sum(1)


ConvPlan = list[tuple[str, str, nn.Module]]


def conv_plan(member: nn.Module) -> ConvPlan:
    """(kind, stacked-name prefix, module) for each layer of a member model's conv block; [] without one."""
    conv = member.bert.conv
    if conv is None:
        return []
    plan = []
    for idx, module in enumerate(conv.net):
        kind = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.GELU: "gelu"}.get(type(module))
        if kind is None:
            raise TypeError(f"unsupported conv block module {module}")
        plan.append((kind, f"bert.conv.net.{idx}.", module))
    return plan


def conv_front(p: dict[str, Tensor], n: int, x: Tensor, plan: ConvPlan, training: bool) -> Tensor:
    """The conv block on embeddings x [n, b, t, h], each member with its own weights and batch statistics."""
    _, b, t, h = x.shape
    y = x.permute(1, 0, 2, 3)  # [b, n, t, h]: member j's 1-channel image is channel j
    for kind, pre, module in plan:
        if kind == "conv":
            w = p[pre + "weight"]  # [n, out, in, kh, kw]
            y = F.conv2d(y, w.reshape(-1, *w.shape[2:]), p[pre + "bias"].reshape(-1), padding=module.padding,
                         groups=n)
        elif kind == "bn":
            rm, rv = p[pre + "running_mean"], p[pre + "running_var"]
            if training and module.track_running_stats:
                p[pre + "num_batches_tracked"].add_(1)
            y = F.batch_norm(y, rm.view(-1), rv.view(-1), p[pre + "weight"].reshape(-1),
                             p[pre + "bias"].reshape(-1), training, module.momentum, module.eps)
        else:
            y = F.gelu(y)
    return y.reshape(b, n, t, h).permute(1, 0, 2, 3)
