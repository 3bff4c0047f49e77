"""The paper-style reference: what the authors' Hugging Face code does, on a CPU.

The paper's code (see ../shared/docs/paper.md) trains `transformers.BertForMaskedLM` /
`BertForSequenceClassification` with the HF Trainer: every sample padded to 128 tokens, the MLM loss taken
from logits over the full vocabulary at every position (`labels=`), fp32 (its mixed precision is a GPU
setting), and `torch.optim.AdamW` with the Trainer's decay grouping (no decay on biases and LayerNorm
weights) in its default (non-fused, single-tensor on CPU) implementation. Clipping follows the recipe being
compared (the paper preset does not clip).

The reference models are built from a tinylm model and take its weights (the names map one to one, see
tinylm.checkpoint), so both sides start from the same point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, PreTrainedTokenizerFast

from tinylm.checkpoint import hf_config_dict, to_hf_state_dict
from tinylm.model import IGNORE_INDEX, BertForClassification, BertForMLM

PAD_TO = 128  # the paper's code pads every sample to its max length
# Entries of a tinylm model's config.json that are not BertConfig fields.
_NOT_BERT = ("tinylm", "architectures", "model_type")


def reference_model(model: BertForMLM | BertForClassification) -> BertForMaskedLM | BertForSequenceClassification:
    """The Hugging Face model with the same config and the same weights as a tinylm (plain BERT) model."""
    if not model.cfg.is_plain_bert:
        raise ValueError("the reference is a plain Hugging Face BERT; conv variants have no reference")
    hf_cfg = BertConfig(**{k: v for k, v in hf_config_dict(model.cfg, model).items() if k not in _NOT_BERT})
    cls = BertForSequenceClassification if isinstance(model, BertForClassification) else BertForMaskedLM
    hf = cls(hf_cfg)
    result = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    # The decoder weight and bias are tied to the word embeddings and cls.predictions.bias: nothing else may miss.
    missing = [k for k in result.missing_keys if not k.startswith("cls.predictions.decoder.")]
    if missing or result.unexpected_keys:
        raise KeyError(f"weights do not map onto the reference: missing {missing}, unexpected {result.unexpected_keys}")
    return hf


def reference_optimizer(
    model: nn.Module, lr: float, weight_decay: float, fused: bool = False
) -> torch.optim.Optimizer:
    """torch.optim.AdamW as the HF Trainer of the paper's time builds it ("adamw_torch"): biases and LayerNorm
    weights without decay, PyTorch's default implementation (on a CPU: one tensor at a time).

    fused=True is what Trainer picks by default from torch 2.8 on ("adamw_torch_fused"), after the paper.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, fused=True if fused else None)


def pad_batch_to(batch: dict[str, Tensor], pad_id: int, length: int = PAD_TO) -> dict[str, Tensor]:
    """A tinylm batch padded on the right to `length` columns: the fixed padding of the paper's tokenisation.

    Padded positions get attention 0 and (for per-token MLM labels) label -100, so they add work, not loss.
    """
    width = batch["input_ids"].shape[1]
    if width > length:
        raise ValueError(f"batch is {width} tokens wide, more than the {length} it is to be padded to")
    extra = length - width
    out = {
        "input_ids": nn.functional.pad(batch["input_ids"], (0, extra), value=pad_id),
        "attention_mask": nn.functional.pad(batch["attention_mask"], (0, extra), value=0),
    }
    labels = batch.get("labels")
    if labels is not None:
        out["labels"] = nn.functional.pad(labels, (0, extra), value=IGNORE_INDEX) if labels.ndim == 2 else labels
    return out


def reference_train_step(
    model: nn.Module, batch: dict[str, Tensor], opt: torch.optim.Optimizer, grad_clip: float | None
) -> Tensor:
    """One fp32 step as the HF Trainer takes it: forward with labels (full-vocabulary MLM logits), backward,
    optional clipping, optimizer step. Returns the detached loss."""
    loss = model(**batch).loss
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


@torch.inference_mode()
def reference_predict(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = PAD_TO,
) -> np.ndarray:
    """Class probabilities with every text padded to `max_length`, fp32, in the given order."""
    model.eval()
    probs = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=max_length,
                        padding="max_length", return_tensors="pt")
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        probs.append(torch.softmax(logits.float(), dim=-1).numpy())
    return np.concatenate(probs)
