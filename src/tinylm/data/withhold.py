"""Token types kept out of MLM pre-training (PretrainConfig.withhold), for the overlap-control experiment.

The intervention works on the tokenised openings, after tokenisation and before masking: every occurrence of a
withheld token id is replaced by one replacement id, in place. Nothing moves: each sequence keeps its length,
its padding and every other token where it was, so a withheld subset has the same sequences, the same tokens
per sequence, the same optimizer steps and the same remaining text as the untouched one.

Pre-training uses [UNK] as the replacement. [UNK] is a special token, and MLM never picks a special token as a
target (train.pretrain.MLMBatches), so a withheld position is never a target either; the overlap measures
(analysis.overlap) do not count special tokens, so a replaced position counts as no token type. The 10 % of
targets that BERT's masking replaces by a random token draw from the ids that are not withheld
(`random_token_ids`), so a withheld id never enters the inputs that way either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

WITHHELD_KEY = "token_ids"  # the list of ids in a withhold file (other keys document the choice)
REPLACEMENT = "[UNK]"  # what a withheld token becomes in pre-training (the tokenizer's unk_token)


def withhold_tokens(ids: np.ndarray, token_ids: Iterable[int], replacement: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace every occurrence of `token_ids` in the id array `ids` by `replacement`.

    Returns (the new ids, same shape and dtype; target_mask: True where a position kept its token, False where
    one was withheld, so no withheld position may be an MLM target). `ids` itself is left unchanged.
    """
    withheld = np.asarray(sorted(set(int(t) for t in token_ids)), dtype=np.int64)
    if replacement in set(withheld.tolist()):
        raise ValueError(f"the replacement id {replacement} is itself withheld")
    hit = np.isin(ids, withheld)
    out = ids.copy()
    out[hit] = replacement
    return out, ~hit


def read_withheld(path: str | os.PathLike) -> list[int]:
    """The withheld token ids of a withhold file (a JSON object with a `token_ids` list)."""
    data = json.loads(Path(path).read_text())
    ids = data.get(WITHHELD_KEY) if isinstance(data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise ValueError(f"{path}: expected a JSON object with {WITHHELD_KEY!r}, a list of token ids")
    return ids


def random_token_ids(vocab_size: int, withheld: Iterable[int]) -> np.ndarray:
    """The ids a masked position may be replaced by at random: the vocabulary less the withheld ids."""
    keep = np.ones(vocab_size, dtype=bool)
    keep[np.asarray(list(withheld), dtype=np.int64)] = False
    return np.flatnonzero(keep)
