"""How much language a pre-trained MLM has learned, measured on text it never trained on.

Training loss says little about whether MLM has left the unigram stage (predicting frequent tokens everywhere).
Three measures make that a number, on a fixed held-out set of Wikipedia openings that no pre-training subset
contains (the last heldout_count(pool) of the data seed's permutation; subsets are the first N):

- masked-token loss and top-1 accuracy at a fixed, seeded 15 % of the held-out positions (all replaced by
  [MASK], so every run is scored on the very same inputs);
- the unigram baseline on the same positions: the loss and accuracy of predicting the training subset's token
  frequencies everywhere (add-one smoothed) — the level an MLM that learned no context would reach;
- a small cloze probe: sentences with one [MASK] and a known answer, scored top-1 and top-5.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from tinylm.data import load_articles
from tinylm.data.encoding import encode_cached
from tinylm.data.errors import DataError
from tinylm.data.wikipedia import articles_path, read_articles

HELDOUT_ARTICLES = 500
EVAL_MASK_PROB = 0.15
EVAL_MASK_SEED = 1234

# (sentence with one [MASK], answer). Answers are common words, so a small vocabulary holds them as one token.
CLOZE_PROBE: tuple[tuple[str, str], ...] = (
    ("the capital of france is [MASK].", "paris"),
    ("the capital of england is [MASK].", "london"),
    ("january, february, [MASK], april.", "march"),
    ("monday, tuesday, [MASK], thursday.", "wednesday"),
    ("one, two, three, [MASK], five.", "four"),
    ("the sun rises in the [MASK].", "east"),
    ("he was born in the united [MASK].", "states"),
    ("she is a member of the united [MASK] security council.", "nations"),
    ("the river flows into the [MASK].", "sea"),
    ("he played for the national football [MASK].", "team"),
    ("the war ended in 1945 after six [MASK] of fighting.", "years"),
    ("the album was released by the [MASK].", "band"),
    ("he studied at the [MASK] of oxford.", "university"),
    ("the population of the city is about one [MASK] people.", "million"),
    ("she was the first woman to win the nobel [MASK].", "prize"),
    ("the film was directed by steven [MASK].", "spielberg"),
    ("world war [MASK] began in 1939.", "ii"),
    ("the church was built in the 12th [MASK].", "century"),
    ("he is an american [MASK] and songwriter.", "singer"),
    ("new york is the largest [MASK] in the united states.", "city"),
    ("the company is headquartered in new [MASK] city.", "york"),
    ("two children and three [MASK].", "grandchildren"),
)


def heldout_count(pool: int) -> int:
    """How many articles of a pool are held out: HELDOUT_ARTICLES, or a tenth of a small pool (test samples)."""
    return min(HELDOUT_ARTICLES, pool // 10)


def heldout_texts(root: str | os.PathLike | None = None, *, seed: int = 42) -> tuple[list[str], int]:
    """The held-out openings (the last heldout_count articles of the `seed` permutation of the local file) and
    the pool size. Subsets of up to pool - heldout_count(pool) articles never contain them."""
    pool = sum(1 for _ in read_articles(articles_path(root)))
    n = heldout_count(pool)
    if n < 1:
        raise DataError(articles_path(root), f"{pool} articles: too few to hold any out")
    articles = load_articles(pool, seed=seed, root=root)
    return [a.text for a in articles[pool - n:]], pool


def _fixed_masks(ids: np.ndarray, special: np.ndarray) -> np.ndarray:
    """The positions scored: a seeded EVAL_MASK_PROB of the non-special tokens, the same for every model."""
    rng = np.random.default_rng(EVAL_MASK_SEED)
    return (rng.random(ids.shape) < EVAL_MASK_PROB) & ~special


def unigram_log_probs(train_ids: np.ndarray, vocab_size: int, special_ids: list[int]) -> np.ndarray:
    """log p(token) of the training subset's token frequencies, add-one smoothed, special tokens excluded."""
    counts = np.bincount(train_ids.ravel(), minlength=vocab_size).astype(np.float64)[:vocab_size]
    counts[special_ids] = 0
    counts += 1
    counts[special_ids] = 0
    return np.log(counts / counts.sum(), where=counts > 0, out=np.full(vocab_size, -np.inf))


@torch.no_grad()
def masked_token_scores(
    model: nn.Module, ids: np.ndarray, tokenizer: PreTrainedTokenizerFast, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per scored position: the true token, the model's log-probability of it, and whether top-1 is right."""
    special = np.isin(ids, tokenizer.all_special_ids)
    chosen = _fixed_masks(ids, special)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    targets, logp, hits = [], [], []
    for start in range(0, len(ids), batch_size):
        rows = torch.from_numpy(ids[start:start + batch_size]).long()
        mask = torch.from_numpy(chosen[start:start + batch_size])
        attention = rows != tokenizer.pad_token_id
        inputs = rows.masked_fill(mask, tokenizer.mask_token_id)
        labels = rows.masked_fill(~mask, -100)
        out = model(inputs.to(device), attention.long().to(device), labels=labels.to(device))
        log_probs = torch.log_softmax(out.logits.float(), dim=-1).cpu()
        truth = rows[mask]
        targets.append(truth.numpy())
        logp.append(log_probs.gather(1, truth[:, None])[:, 0].numpy())
        hits.append((log_probs.argmax(-1) == truth).numpy())
    model.train(was_training)
    return np.concatenate(targets), np.concatenate(logp), np.concatenate(hits)


def _cloze_ids(tokenizer: PreTrainedTokenizerFast) -> list[tuple[str, str, int]]:
    """The probe items whose answer is one token of this vocabulary."""
    items = []
    vocab = tokenizer.get_vocab()
    for sentence, answer in CLOZE_PROBE:
        if answer in vocab:
            items.append((sentence, answer, vocab[answer]))
    return items


@torch.no_grad()
def cloze_probe(model: nn.Module, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """Top-1 / top-5 hits on the cloze probe, and each item's top-5 tokens."""
    items = _cloze_ids(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    for sentence, answer, answer_id in items:
        enc = tokenizer(sentence, return_tensors="pt")
        ids = enc["input_ids"]
        where = ids[0] == tokenizer.mask_token_id
        logits = model(ids.to(device), enc["attention_mask"].to(device)).logits[0][where.to(device)][0]
        top5 = logits.float().topk(5).indices.tolist()
        rows.append({"sentence": sentence, "answer": answer, "top5": tokenizer.convert_ids_to_tokens(top5),
                     "top1_hit": top5[0] == answer_id, "top5_hit": answer_id in top5})
    model.train(was_training)
    n = len(rows)
    return {"items": n, "skipped": len(CLOZE_PROBE) - n,
            "top1": round(sum(r["top1_hit"] for r in rows) / n, 4) if n else None,
            "top5": round(sum(r["top5_hit"] for r in rows) / n, 4) if n else None,
            "answers": rows}


def mlm_quality(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    heldout_ids: np.ndarray,
    train_ids: np.ndarray,
) -> dict[str, Any]:
    """Held-out MLM loss and accuracy against the training subset's unigram baseline, plus the cloze probe."""
    vocab_size = len(tokenizer)
    targets, logp, hits = masked_token_scores(model, heldout_ids, tokenizer)
    unigram = unigram_log_probs(train_ids, vocab_size, tokenizer.all_special_ids)
    most_frequent = int(np.argmax(unigram))
    return {
        "heldout_positions": len(targets),
        "mlm_loss": round(float(-logp.mean()), 4),
        "mlm_accuracy": round(float(hits.mean()), 4),
        "unigram_loss": round(float(-unigram[targets].mean()), 4),
        "unigram_accuracy": round(float((targets == most_frequent).mean()), 4),
        "cloze": cloze_probe(model, tokenizer),
    }


def quality_or_reason(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    train_ids: np.ndarray,
    subset_size: int,
    seq_len: int,
    *,
    root: str | os.PathLike | None,
    data_seed: int,
    source: str,
) -> dict[str, Any]:
    """mlm_quality on the held-out openings, or {"skipped": why} when there is no disjoint held-out set."""
    if source != "local":
        return {"skipped": "held-out openings are drawn from the local Wikipedia file; none with --data-source hub"}
    try:
        texts, pool = heldout_texts(root, seed=data_seed)
    except (DataError, FileNotFoundError) as err:
        return {"skipped": str(err)}
    if subset_size > pool - len(texts):
        return {"skipped": f"{subset_size} of {pool} articles trained on: the last {len(texts)} (held out) "
                           "are part of the subset"}
    ids = encode_cached(tokenizer, texts, seq_len)
    return {"heldout_articles": len(texts), **mlm_quality(model, tokenizer, ids, train_ids)}
