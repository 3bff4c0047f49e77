"""Training a committee as one model: the optimizer, per-member gradient clipping, the step, and member batches.

The loss is the sum of the member losses, so one backward and one optimizer step train all members independently
(their parameters are disjoint). AdamW is elementwise, so AdamW on the stacked tensors equals AdamW on each member,
provided the weight-decay groups follow the member's parameter shape and clipping is per member.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tinylm.committee.model import Committee
from tinylm.config import Precision
from tinylm.model import IGNORE_INDEX
from tinylm.train.loop import train_step


def make_committee_optimizer(
    committee: Committee, lr: float, weight_decay: float, device: torch.device | str = "cpu"
) -> torch.optim.Optimizer:
    """AdamW over the stacked parameters, equal to train.loop.make_optimizer applied to each member."""
    device = torch.device(device)
    return torch.optim.AdamW(committee.optimizer_groups(weight_decay), lr=lr,
                             fused=device.type in ("cuda", "cpu"))


@torch.no_grad()
def clip_grad_norm_per_member_(committee: Committee, max_norm: float) -> Tensor:
    """Clip each member's gradient to total norm `max_norm`, as nn.utils.clip_grad_norm_ on that member alone
    would (coefficient max_norm / (norm + 1e-6), at most 1). Returns the members' norms before clipping, [N]."""
    grads = [p.grad for p in committee.members.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(committee.n)
    sq = torch.stack([g.float().pow(2).reshape(g.shape[0], -1).sum(1) for g in grads]).sum(0)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype).view(g.shape[0], *([1] * (g.ndim - 1))))
    return norms


def committee_train_step(
    committee: Committee,
    batch: dict[str, Tensor],
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    device: torch.device,
    grad_clip: float | None,
) -> Tensor:
    """train.loop.train_step for a committee: the summed loss, per-member clipping; returns the member losses [N]."""
    out = train_step(committee, batch, opt, scaler, precision, device, grad_clip, clip=clip_grad_norm_per_member_)
    return out.member_losses.detach()


def stack_member_batches(batches: Sequence[dict[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """N ordinary batches (input_ids/attention_mask [B_j, L_j], labels [B_j] or [B_j, L_j]) -> one committee batch
    [N, B, L]: columns padded with pad_id / mask 0 / IGNORE_INDEX, missing rows with a pad-only row (mask on its
    first token only) whose label is IGNORE_INDEX. Padding never changes a member's loss or gradients (padded keys
    are masked; ignored labels carry no loss), except through the conv variants' batch statistics."""
    if not batches:
        raise ValueError("no batches")
    rows = max(bt["input_ids"].shape[0] for bt in batches)
    width = max(bt["input_ids"].shape[1] for bt in batches)
    n = len(batches)
    ids = torch.full((n, rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, rows, width), dtype=torch.long)
    mask[:, :, 0] = 1
    out: dict[str, Tensor] = {"input_ids": ids, "attention_mask": mask}
    has_labels = "labels" in batches[0]
    if has_labels:
        token_labels = batches[0]["labels"].ndim == 2
        out["labels"] = torch.full((n, rows, width) if token_labels else (n, rows), IGNORE_INDEX, dtype=torch.long)
    for j, bt in enumerate(batches):
        r, w = bt["input_ids"].shape
        ids[j, :r, :w] = bt["input_ids"]
        mask[j, :r, :] = 0
        mask[j, :r, :w] = bt.get("attention_mask", torch.ones_like(bt["input_ids"]))
        if has_labels:
            if token_labels:
                out["labels"][j, :r, :w] = bt["labels"]
            else:
                out["labels"][j, :r] = bt["labels"]
    return out
