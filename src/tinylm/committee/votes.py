"""Votes over per-member class probabilities [N, B, C]; `members` picks a subset, so one pass over all members
gives every subset's vote."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    return x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))


def soft_vote(member_probs: Tensor | np.ndarray, members: Sequence[int] | None = None) -> Tensor:
    """[N, B, C] member probabilities -> [B, C], their mean (over `members` only, when given)."""
    probs = _as_tensor(member_probs)
    if members is not None:
        probs = probs[list(members)]
    return probs.mean(0)


def hard_vote(member_probs: Tensor | np.ndarray, members: Sequence[int] | None = None) -> Tensor:
    """[N, B, C] member probabilities -> [B] majority vote of the members' argmax; a tie goes to the tied class
    with the highest soft vote (then to the lowest class id)."""
    probs = _as_tensor(member_probs)
    if members is not None:
        probs = probs[list(members)]
    votes = F.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)  # [B, C]
    tied = votes == votes.max(-1, keepdim=True).values
    return torch.where(tied, probs.mean(0).float(), -math.inf).argmax(-1)
