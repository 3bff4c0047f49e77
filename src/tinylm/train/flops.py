"""Training compute, counted: the FLOPs of one MLM optimizer step of a model, by PyTorch's own counter.

Comparisons "at equal compute" (a committee of N shallow models against one deep model, experiments.committee)
need each side's cost per step. Counting by hand misses what differs between presets (attention's share, the
vocabulary projection at the masked positions only), so one forward and backward pass runs under
torch.utils.flop_counter.FlopCounterMode on a fixed batch: full-length sequences, a seeded `mask_prob` of the
positions as targets. Both sides are counted on the same batch, so their ratio is what matters.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from tinylm.config import ModelConfig, resolve_model_config
from tinylm.model import IGNORE_INDEX, BertForMLM


def mlm_step_flops(model: str | ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
                   mask_prob: float) -> int:
    """FLOPs of one forward + backward pass of `model` (a preset name or config, with `vocab_size` tokens) on
    batch_size full sequences of seq_len tokens with mask_prob of them as MLM targets (the optimizer's own
    element-wise work is not counted: it is linear in the parameters and small beside the matrix products)."""
    cfg = dataclasses.replace(resolve_model_config(model), vocab_size=vocab_size)
    net = BertForMLM(cfg)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(vocab_size, (batch_size, seq_len), generator=gen)
    labels = torch.where(torch.rand(ids.shape, generator=gen) < mask_prob, ids, torch.full_like(ids, IGNORE_INDEX))
    counter = FlopCounterMode(display=False)
    with counter:
        net(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
    return int(counter.get_total_flops())
