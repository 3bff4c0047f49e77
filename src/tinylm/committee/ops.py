"""The ops of model.py's forward pass over stacked tensors (member axis first): one batched op serves all members.

model.py's functions (`encode`, `layer`, the heads) run a committee as they run one model, with `MemberOps` in
place of model.Ops: `affine` is nn.Linear via torch.baddbmm, `layer_norm` nn.LayerNorm, `embedding` nn.Embedding
(each member looks up its own table), with member j's weights at index j. `StackedView` reaches stacked tensors
held in a dict by attribute, as model.py's functions reach a module's weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tinylm.model import Ops


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


class MemberOps(Ops):
    """model.Ops for n members: activations [n, ..., h], weights [n, *member shape]."""

    def __init__(self, n: int):
        self.members = n

    def affine(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x [n, ..., in] with weight [n, out, in] and bias [n, out]."""
        shape = x.shape
        out = torch.baddbmm(bias[:, None, :], x.reshape(shape[0], -1, shape[-1]), weight.transpose(1, 2))
        return out.view(*shape[:-1], weight.shape[1])

    def layer_norm(self, x: Tensor, m: Any, eps: float) -> Tensor:  # the size as an int, as in model.Ops
        y = F.layer_norm(x, (int(x.shape[-1]),), None, None, eps)
        return y * expand_member(m.weight, x.ndim) + expand_member(m.bias, x.ndim)

    def embedding(self, ids: Tensor, table: Tensor, padding_idx: int | None) -> Tensor:
        return gather_rows(table, ids, self.members, padding_idx)

    def per_member(self, t: Tensor) -> Tensor:
        return t.unsqueeze(1)  # [n, rows, h] -> [n, 1, rows, h]


class StackedView:
    """Stacked tensors by name, reached as attributes: view.bert.layers[0].query.weight is
    tensors["bert.layers.0.query.weight"] (a member subset's tensors, which no module holds)."""

    def __init__(self, tensors: dict[str, Tensor], prefix: str = ""):
        self.tensors, self.prefix = tensors, prefix

    def __getattr__(self, name: str) -> Any:
        key = self.prefix + name
        found = self.tensors.get(key)
        return found if found is not None else StackedView(self.tensors, key + ".")

    def __getitem__(self, i: int) -> StackedView:
        return StackedView(self.tensors, f"{self.prefix}{i}.")


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Per-row mean of `values` [n, m] over `valid` entries (F.cross_entropy's mean with ignore_index)."""
    return (values * valid).sum(1) / valid.sum(1)
