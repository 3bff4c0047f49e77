"""MLM pre-training: Wikipedia openings -> token ids (cached) -> masked batches -> the shared training loop.

New weights, or (PretrainConfig.init) the weights, architecture and tokenizer of a model folder, whose
pre-training continues on the run's texts: the shipped model's on a user's domain corpus, for instance."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from tinylm.checkpoint import load_model, model_folder, read_model_config, save_model
from tinylm.config import MODEL_PRESETS, ModelConfig, PretrainConfig, replace, resolve_model_config
from tinylm.data import load_articles
from tinylm.data.corpus import load_corpus
from tinylm.data.encoding import encode_cached
from tinylm.data.user_files import content_hash
from tinylm.data.withhold import random_token_ids, read_withheld, withhold_tokens
from tinylm.distributed import World, main_first
from tinylm.io import write_json
from tinylm.model import IGNORE_INDEX, BertForMLM
from tinylm.runtime import seed_everything
from tinylm.tokenizer import load_tokenizer, train_wordpiece
from tinylm.train.loop import Batch, LoopConfig, train_loop
from tinylm.train.mlm_quality import quality_or_reason
from tinylm.train.run import finish, loop_meta, one_writer_per_run, start, write_config

SNAPSHOTS = "snapshots"
# The fields that make two architectures the same shape (vocabulary size and dropout aside).
SHAPE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings",
         "type_vocab_size", "conv_kernels", "conv_channels")


def mask_tokens(
    ids: Tensor, special: Tensor, vocab_size: int, mask_id: int, prob: float, gen: torch.Generator,
    random_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: pick `prob` of the non-special tokens; of those 80 % -> [MASK], 10 % random, 10 % kept.

    random_ids: the ids the random 10 % are drawn from (default: the whole vocabulary; a run that withholds
    tokens passes the rest, data.withhold.random_token_ids).
    """
    labels = ids.clone()
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & ~special
    labels[~chosen] = IGNORE_INDEX
    roll = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = mask_id
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    if random_ids is None:
        inputs[randomise] = torch.randint(vocab_size, ids.shape, generator=gen)[randomise]
    else:
        inputs[randomise] = random_ids[torch.randint(len(random_ids), ids.shape, generator=gen)][randomise]
    return inputs, labels


class MLMBatches(Sequence[Batch]):
    """The masked batches of one epoch, built on demand; batch i depends only on (seed, epoch, i)."""

    def __init__(self, ids: np.ndarray, tokenizer: PreTrainedTokenizerFast, cfg: PretrainConfig, epoch: int):
        self.ids = ids
        self.cfg = cfg
        self.epoch = epoch
        self.order = np.random.default_rng([cfg.seed, epoch]).permutation(len(ids))
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special_ids = torch.tensor(tokenizer.all_special_ids)
        self.random_ids = (torch.from_numpy(random_token_ids(self.vocab_size, read_withheld(cfg.withhold)))
                           if cfg.withhold else None)

    def __len__(self) -> int:
        return -(-len(self.ids) // self.cfg.batch_size)

    def __getitem__(self, i: int) -> Batch:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        rows = self.order[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size]
        ids = torch.from_numpy(self.ids[rows]).long()
        attention_mask = ids != self.pad_id
        ids = ids[:, : int(attention_mask.sum(1).max())]  # trim columns that are padding in every row
        attention_mask = attention_mask[:, : ids.shape[1]]
        seed = np.random.SeedSequence([self.cfg.seed, self.epoch, i]).generate_state(1, np.uint64)[0]
        gen = torch.Generator().manual_seed(int(seed) % 2**63)
        special = torch.isin(ids, self.special_ids)
        inputs, labels = mask_tokens(ids, special, self.vocab_size, self.mask_id, self.cfg.mask_prob, gen,
                                     self.random_ids)
        return {"input_ids": inputs, "attention_mask": attention_mask.long(), "labels": labels}


def build_tokenizer(cfg: PretrainConfig, texts: Sequence[str], vocab_size: int, out: Path, root: Any):
    """The run's tokenizer, saved under out/tokenizer so a resumed run uses the very same vocabulary."""
    saved = out / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return load_tokenizer(saved)
    tok = pretraining_tokenizer(cfg, texts, vocab_size, root)
    tok.save_pretrained(str(saved))
    return tok


def pretraining_tokenizer(cfg: PretrainConfig, texts: Sequence[str], vocab_size: int, root: Any):
    """The tokenizer cfg names: a WordPiece trained on the texts (cached by content, so `tinylm overlap` measures
    with the very vocabulary a pre-training on the same texts trains), or a named or saved one."""
    if cfg.init:
        return load_tokenizer(model_folder(cfg.init))
    if cfg.tokenizer == "train":
        return train_wordpiece(texts, vocab_size=vocab_size, max_length=cfg.seq_len)
    return load_tokenizer(cfg.tokenizer, root)


def pretraining_texts(cfg: PretrainConfig, root: str | os.PathLike | None) -> list[str]:
    """The documents a run trains on (the first seq_len tokens of each): cfg.articles documents of the user's
    corpus when it names one, else cfg.articles Wikipedia articles."""
    if cfg.corpus:
        return load_corpus(cfg.corpus, cfg.articles, seed=cfg.data_seed, text_field=cfg.text_field)
    return [a.text for a in load_articles(cfg.articles, seed=cfg.data_seed, root=root, source=cfg.data_source)]


def prepare_pretraining(
    cfg: PretrainConfig, out: Path, root: str | os.PathLike | None, world: World, config_record: dict[str, Any]
) -> tuple[list[Any], PreTrainedTokenizerFast, np.ndarray, Any]:
    """What every MLM pre-training (one model or a committee) starts from: the texts (pretraining_texts), the run's
    tokenizer, the cached token ids and the model config sized to the vocabulary. Writes out/pretrain_config.json."""
    # Read and check all input before anything is written, so bad data leaves no partial run behind (the config
    # itself was checked by run.start).
    texts = pretraining_texts(cfg, root)
    base = init_architecture(cfg) if cfg.init else resolve_model_config(cfg.model)
    write_config(world, out, "pretrain_config.json", config_record)
    with main_first(world):  # rank 0 trains and saves the vocabulary and fills the token cache; the rest read them
        tokenizer = build_tokenizer(cfg, texts, base.vocab_size, out, root)
        ids = encode_cached(tokenizer, texts, cfg.seq_len)
    if cfg.withhold:  # the withheld types become [UNK]: a special token, so never an MLM target (data.withhold)
        ids, _ = withhold_tokens(ids, read_withheld(cfg.withhold), tokenizer.unk_token_id)
    model_cfg = replace(base, vocab_size=len(tokenizer))  # (PretrainConfig checked seq_len against its positions)
    return texts, tokenizer, ids, model_cfg


def preset_of_shape(model_cfg: ModelConfig) -> str | None:
    """The first model preset of the same shape (SHAPE) as `model_cfg`, or None."""
    return next((name for name, preset in MODEL_PRESETS.items()
                 if all(getattr(preset, f) == getattr(model_cfg, f) for f in SHAPE)), None)


def init_architecture(cfg: PretrainConfig) -> ModelConfig:
    """The architecture of the model folder cfg.init, which cfg.model must match in shape (SHAPE)."""
    assert cfg.init
    folder_cfg, _ = read_model_config(model_folder(cfg.init))
    preset = resolve_model_config(cfg.model)
    differ = [f"{f} {getattr(preset, f)} vs {getattr(folder_cfg, f)}" for f in SHAPE
              if getattr(preset, f) != getattr(folder_cfg, f)]
    if differ:
        raise ValueError(f"PretrainConfig.model: {cfg.model} is not the shape of {cfg.init} ({', '.join(differ)}); "
                         f"use the model preset {preset_of_shape(folder_cfg) or 'of its shape'}")
    return folder_cfg


@one_writer_per_run
def pretrain(
    cfg: PretrainConfig,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    device: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Pre-train a model with MLM; the finished model folder is out/model. Returns a summary dict.

    Under torchrun every rank calls this with the same arguments: the run is data-parallel over the ranks
    (train.loop.train_loop), rank 0 writes the run folder, and every rank returns once the model is saved.
    """
    dev, world = start(cfg, device)
    out = Path(out)
    articles, tokenizer, ids, model_cfg = prepare_pretraining(cfg, out, root, world, cfg.to_dict())

    seed_everything(cfg.seed)
    model = load_model(model_folder(cfg.init), head="mlm") if cfg.init else BertForMLM(model_cfg)
    assert isinstance(model, BertForMLM)
    loop = LoopConfig.of(cfg, f"pretrain {cfg.model}")
    meta = loop_meta("pretrain", cfg)
    if cfg.corpus:  # the user's corpus may change under the same name: resume only on the same documents
        meta["data"] = content_hash(articles)
    epoch_batches = lambda e: MLMBatches(ids, tokenizer, cfg, e)  # noqa: E731
    keep = snapshot_steps(cfg.epochs * len(epoch_batches(0)), cfg.snapshots)

    def after_step(state: Any) -> None:
        if state.step in keep and world.is_main:
            quality = _quality(model, tokenizer, ids, cfg, root)
            save_model(model, out / SNAPSHOTS / f"step-{state.step}", tokenizer,
                       extra={"pretrain": cfg.to_dict(), "step": state.step, "quality": quality})

    state = train_loop(
        model, epoch_batches, loop, out, dev, meta, stop_after=stop_after, world=world, compile=cfg.compile,
        after_step=after_step if keep else None,
    )
    summary = {
        "steps": state.step,
        "epochs_done": state.epoch,
        "final_loss": float(np.mean(state.losses[-20:])) if state.losses else None,
        "tokens": state.tokens,
        "seconds": round(state.seconds, 2),
        "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9), 1),
        "articles": len(articles),
        "vocab_size": len(tokenizer),
        "device": str(dev),
        "processes": world.size,
        **({"init": cfg.init} if cfg.init else {}),
    }
    if state.epoch >= cfg.epochs and world.is_main:
        summary["quality"] = _quality(model, tokenizer, ids, cfg, root)
        save_model(model.cpu(), out / "model", tokenizer, extra={"pretrain": cfg.to_dict(), "summary": summary})
        write_json(out / "summary.json", summary)
    return finish(world, summary)  # every rank returns with the run folder complete (a sweep's next run reads it)


def _quality(model: BertForMLM, tokenizer: PreTrainedTokenizerFast, ids: np.ndarray, cfg: PretrainConfig,
             root: str | os.PathLike | None) -> dict[str, Any]:
    """mlm_quality.quality_or_reason for a Wikipedia run; its held-out openings are Wikipedia's, so a run on the
    user's corpus is not scored on them."""
    if cfg.corpus:
        return {"skipped": "the held-out openings are Wikipedia's; not measured for a --corpus run"}
    return quality_or_reason(model, tokenizer, ids, len(ids), cfg.seq_len, root=root, data_seed=cfg.data_seed,
                             source=cfg.data_source)


def snapshot_steps(total_steps: int, count: int) -> set[int]:
    """The steps T/2, T/4, ..., T/2^count of a T-step run (rounded; duplicates and step 0 dropped)."""
    return {round(total_steps / 2**k) for k in range(1, count + 1)} - {0}


def snapshots(run: str | os.PathLike) -> dict[int, Path]:
    """A pre-training run's saved snapshots by step, its final model included."""
    run = Path(run)
    found = {int(p.name.removeprefix("step-")): p for p in (run / SNAPSHOTS).glob("step-*") if p.is_dir()}
    summary = run / "summary.json"
    if summary.is_file():
        found[int(load_summary(run)["steps"])] = run / "model"
    return dict(sorted(found.items()))


def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / "summary.json").read_text())
