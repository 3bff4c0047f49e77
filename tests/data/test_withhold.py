"""Withholding token types from pre-training (data.withhold): nothing moves, no withheld id survives in the
inputs, and MLM never takes a withheld position as a target, nor draws a withheld id as a random token."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinylm.config import PRETRAIN_PRESETS, PretrainConfig, config_hash
from tinylm.data import load_articles
from tinylm.data.encoding import encode_texts
from tinylm.data.withhold import random_token_ids, read_withheld, withhold_tokens
from tinylm.model import IGNORE_INDEX
from tinylm.tokenizer import load_tokenizer
from tinylm.train.pretrain import MLMBatches


def test_withheld_ids_become_the_replacement_and_nothing_else_moves() -> None:
    ids = np.array([[2, 10, 11, 12, 10, 3, 0, 0], [2, 13, 11, 3, 0, 0, 0, 0]], dtype=np.int32)
    new, targets = withhold_tokens(ids, [10, 13], replacement=1)
    assert new.shape == ids.shape and new.dtype == ids.dtype
    assert not np.isin(new, [10, 13]).any()
    assert np.array_equal(~targets, np.isin(ids, [10, 13]))  # exactly the withheld positions lose their target
    assert np.array_equal(new[targets], ids[targets])  # every other position keeps its token
    assert (new[~targets] == 1).all() and ids[0, 1] == 10  # the input array is left as it was
    with pytest.raises(ValueError, match="itself withheld"):
        withhold_tokens(ids, [1, 10], replacement=1)


def test_a_withhold_file_round_trips_and_the_random_ids_leave_it_out(tmp_path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"token_ids": [5, 7], "tokens": ["a", "b"]}))
    assert read_withheld(path) == [5, 7]
    assert random_token_ids(10, [5, 7]).tolist() == [0, 1, 2, 3, 4, 6, 8, 9]
    path.write_text(json.dumps({"ids": [5]}))
    with pytest.raises(ValueError, match="token_ids"):
        read_withheld(path)


def test_mlm_never_targets_or_inputs_a_withheld_type(tmp_path, data_root) -> None:
    tokenizer = load_tokenizer("tinylm-wiki-4k", data_root)
    assert tokenizer.unk_token_id in tokenizer.all_special_ids  # why a replaced position is never a target
    texts = [a.text for a in load_articles(24, seed=42, root=data_root)]
    raw = encode_texts(tokenizer, texts, 64)
    special = set(tokenizer.all_special_ids)
    # Half of the vocabulary, the frequent types among them: a random draw from the whole vocabulary would hit it.
    withheld = [i for i in range(len(tokenizer)) if i % 2 == 0 and i not in special]
    path = tmp_path / "withhold.json"
    path.write_text(json.dumps({"token_ids": withheld}))
    ids, targets = withhold_tokens(raw, withheld, tokenizer.unk_token_id)
    assert (~targets).sum() > 100
    cfg = PretrainConfig(tokenizer="tinylm-wiki-4k", seq_len=64, batch_size=8, mask_prob=0.6, withhold=str(path))
    batches = MLMBatches(ids, tokenizer, cfg, epoch=0)
    banned = torch.tensor(withheld)
    randomised = 0
    for i, batch in enumerate(batches):
        rows = torch.from_numpy(batches.order[i * 8:(i + 1) * 8])
        width = batch["input_ids"].shape[1]
        kept = torch.from_numpy(targets)[rows][:, :width]
        assert not torch.isin(batch["input_ids"], banned).any()
        assert (batch["labels"][~kept] == IGNORE_INDEX).all()  # no withheld position is a target
        assert not torch.isin(batch["labels"], banned).any()
        original = torch.from_numpy(ids)[rows][:, :width].long()
        randomised += int(((batch["input_ids"] != original) & (batch["input_ids"] != tokenizer.mask_token_id)).sum())
    assert randomised > 20  # the random 10 % did draw tokens, none of them withheld


def test_withhold_is_left_out_of_the_config_and_its_hash_when_unset() -> None:
    cpu = PRETRAIN_PRESETS["cpu"]
    assert "withhold" not in cpu.to_dict()
    marked = PretrainConfig(**{**cpu.__dict__, "withhold": "w.json"})
    assert marked.to_dict()["withhold"] == "w.json" and config_hash(marked) != config_hash(cpu)
    with pytest.raises(ValueError, match="withhold"):
        PretrainConfig(withhold="")
