"""Texts in, one array per text out, batched by length: the loop every prediction path shares.

Sorting texts by length before batching keeps each batch's padding small; the results go back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from transformers import PreTrainedTokenizerFast


def encode(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
    """Token ids and attention mask, int64 [B, L], padded to the longest text of the batch."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def map_by_length(
    texts: Sequence[str], run: Callable[[list[str]], np.ndarray], batch_size: int, lead: tuple[int, ...], width: int
) -> np.ndarray:
    """float32 [*lead, len(texts), width]: `run` maps a batch of B texts to [*lead, B, width] (e.g. lead = (members,)
    for a committee's per-member probabilities, () for one model's); batches hold texts of similar length."""
    out = np.zeros((*lead, len(texts), width), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        out[..., rows, :] = run([texts[i] for i in rows])
    return out
