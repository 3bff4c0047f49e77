"""Texts to token ids: fixed-length id arrays for pre-training (cached on disk), and the length-sorted batching
loop every prediction path shares (sorting by length keeps each batch's padding small; results come back in
input order)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

import numpy as np
from transformers import PreTrainedTokenizerFast

from tinylm.data.paths import cache_dir


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


def encode_texts(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Token ids of each text's first `max_length` tokens ([CLS] ... [SEP]), right-padded, as int32."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding="max_length")
    return np.asarray(enc["input_ids"], dtype=np.int32)


def encode_cached(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int) -> np.ndarray:
    """encode_texts, cached on disk by (vocabulary, texts, length) so repeated runs skip tokenisation."""
    h = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    h.update(str(max_length).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    path = cache_dir() / f"tokens-{h.hexdigest()[:20]}.npy"
    if path.is_file():
        return np.load(path)
    ids = encode_texts(tokenizer, texts, max_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
    np.save(tmp, ids)
    os.replace(tmp, path)
    return ids
