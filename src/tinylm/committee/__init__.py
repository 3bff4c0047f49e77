"""A soft committee of N tiny BERTs of one configuration, computed in one vectorised pass.

The paper's claim 4: a committee of 32 independently pre-trained and fine-tuned BERT-1s, whose output is the mean
of the members' softmax outputs, matches a pre-trained BERT-6 at a lower latency (the members run side by side,
BERT-6 runs six layers in series).

How the N members are held and run:

- Parameters are stacked: every parameter of a member model (model.py's BertForClassification or BertForMLM)
  becomes one tensor with a leading member axis, `committee.members.<member name>` of shape [N, *member shape]
  (built with torch.func.stack_module_state). The `members` container has the member model's module tree, so
  state_dict names are the member's names; its modules are never called (their parameters are stacked).
- The forward pass is written out with batched matrix products (torch.baddbmm over the member axis), one
  scaled-dot-product attention call over (members x batch) and grouped convolutions for the convolutional
  variants, so N members cost one op sequence instead of N.
  We measured torch.vmap(functional_call(member model)) instead and dropped it on CPU: torch 2.13 has no
  batching rule for the CPU flash-attention kernel (vmap falls back to a per-member loop there), and the
  batching rule of nn.Embedding copies the whole stacked embedding table on every call. At the cpu-1 shape,
  N = 32, batch 1 (AG News texts), one thread, fp32, p50: vmap 73 ms, a Python loop over the members 15.6 ms,
  the batched forward here 10.8 ms with the full last layer and 4.4 ms with the default [CLS]-only last layer
  (bf16 weights: 37 / 13.6 / 5.3 / 2.5 ms); benchmarks/committee_latency.py measures all of them.
- A classifier reads only the [CLS] position of the last layer, so by default the last layer computes keys and
  values for every token but queries, attention output and feed-forward for [CLS] only (`cls_only`). This is
  the same function (equal to rounding), not an approximation, and it is most of the committee's speed-up at
  batch 1: a BERT-1 spends about 5/6 of its FLOPs in the part of its only layer that [CLS] does not need.
- Inference at large batches on a CPU runs the members in chunks (`chunk_elements`): one pass over 32 members x 64
  texts has activations of hundreds of MB, which is memory-bound there; chunks sized to the cache are faster.
- Inference: the same batch [B, L] goes to every member. Training: either the same batch, or one batch per
  member, [N, B, L] (own data order, own MLM masks); `stack_member_batches` pads a list of ordinary batches to
  one such batch. Dropout masks are drawn independently per member.
- Training: the loss is the sum of the member losses, so one backward and one optimizer step train all members
  independently (their parameters are disjoint, so gradients never mix). AdamW is elementwise, so AdamW on the
  stacked tensors equals AdamW on each member, provided the weight-decay groups are chosen by the member's
  parameter shape (`make_committee_optimizer`; training.make_optimizer would decay stacked biases) and gradient
  clipping is per member (`clip_grad_norm_per_member_`). tests/test_committee.py checks both against a loop.
  With fp16 a GradScaler is shared: an overflow in one member skips the step for all of them.

Persistence: `save_committee` writes one folder (config.json with model_type "tinylm_committee", the member
count, the member config and the labels; model.safetensors with the stacked tensors under Hugging Face BERT
names, member axis first; tokenizer files). `load_committee` reads it; `extract_member` writes member i as an
ordinary model folder (checkpoint.save_model), which tinylm's load_model and, for plain BERTs, transformers load.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn

from tinylm.checkpoint import (  # the renaming table is checkpoint.py's own, so both layouts agree
    CONV_MODEL_TYPE,
    _rename,
    _to_hf_table,
    from_hf_state_dict,
    hf_config_dict,
    label_names_of,
    read_model_config,
    save_model,
    write_model_folder,
)
from tinylm.config import ModelConfig, Precision
from tinylm.data.encoding import encode, map_by_length
from tinylm.model import IGNORE_INDEX, BertForClassification, BertForMLM, ModelOutput, attention, dropout
from tinylm.runtime import autocast, effective_precision
from tinylm.train.loop import train_step

COMMITTEE_MODEL_TYPE = "tinylm_committee"
FORMAT_VERSION = 1
HEADS = ("classification", "mlm")
# Inference runs members in chunks whose widest activation (tokens x max(hidden, intermediate)) holds at most this
# many numbers (16 MB in fp32): beyond that the batched pass stops fitting in cache and goes memory-bound on a CPU.
# cpu-1 at batch 1 is one chunk of all 32 members; at batch 64 x 100 tokens, one member per chunk.
CHUNK_ELEMENTS = 1 << 22

Member = BertForClassification | BertForMLM


@dataclass
class CommitteeOutput(ModelOutput):
    """logits: [N, B, C] (classification), [N, B, L, V] (MLM, no labels) or [N, K, V] (MLM at the K masked
    positions of the member with the most, padded). loss: the sum of member_losses ([N], each member's mean)."""

    member_losses: Tensor | None = None

    def logged_loss(self) -> Tensor | None:
        """The mean member's loss: comparable with one model's, where `loss` (the sum) grows with N."""
        return self.loss if self.member_losses is None else self.member_losses.mean()


def _build_member(cfg: ModelConfig, head: str, num_labels: int | None) -> Member:
    if head == "classification":
        if not num_labels:
            raise ValueError("a classification committee needs num_labels")
        return BertForClassification(cfg, num_labels)
    if head == "mlm":
        return BertForMLM(cfg)
    raise ValueError(f"unknown head {head!r}; use 'classification' or 'mlm'")


def _head_of(model: nn.Module) -> str:
    if isinstance(model, BertForClassification):
        return "classification"
    if isinstance(model, BertForMLM):
        return "mlm"
    raise TypeError(f"a committee member must be a tinylm BertForClassification or BertForMLM, not {type(model)}")


def _set_tensor(root: nn.Module, name: str, value: Tensor, is_param: bool) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = root.get_submodule(module_name) if module_name else root
    if is_param:
        setattr(module, leaf, nn.Parameter(value, requires_grad=value.requires_grad))
    else:
        module.register_buffer(leaf, value)


class Committee(nn.Module):
    """N members of one ModelConfig and head, with stacked parameters (member axis first)."""

    def __init__(
        self,
        cfg: ModelConfig,
        n: int,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor] | None = None,
        *,
        head: str = "classification",
        num_labels: int | None = None,
        label_names: list[str] | None = None,
    ):
        """Wrap stacked tensors (names as in the member model, shape [n, *member shape]). Prefer the
        constructors `from_members`, `init` and `load_committee`."""
        super().__init__()
        if n < 1:
            raise ValueError("a committee needs at least one member")
        self.cfg, self.n, self.head = cfg, n, head
        self.num_labels = num_labels if head == "classification" else None
        self.label_names = label_names
        self.cls_only = True  # classification: last layer at [CLS] only (same function, fewer FLOPs)
        self.chunk_elements = CHUNK_ELEMENTS  # inference: members per chunk bounded by activation size (0: no chunks)
        with torch.device("meta"):
            self.members = _build_member(cfg, head, num_labels)
        buffers = buffers or {}
        want_p = dict(self.members.named_parameters())
        want_b = dict(self.members.named_buffers())
        if set(params) != set(want_p) or set(buffers) != set(want_b):
            missing = sorted((set(want_p) - set(params)) | (set(want_b) - set(buffers)))
            extra = sorted((set(params) - set(want_p)) | (set(buffers) - set(want_b)))
            raise KeyError(f"stacked tensors do not match the member model: missing {missing[:5]}, extra {extra[:5]}")
        for name, value in list(params.items()) + list(buffers.items()):
            ref = want_p.get(name, want_b.get(name))
            if tuple(value.shape) != (n, *ref.shape):
                raise ValueError(f"{name}: stacked shape {tuple(value.shape)}, expected {(n, *ref.shape)}")
            _set_tensor(self.members, name, value, name in want_p)
        self._conv_plan = self._plan_conv()

    # ----- construction -----

    @classmethod
    def from_members(cls, models: Sequence[Member], label_names: list[str] | None = None) -> Committee:
        """Stack ordinary tinylm models (same class, config and labels) into a committee; weights are copied."""
        if not models:
            raise ValueError("no members given")
        first = models[0]
        head = _head_of(first)
        num_labels = getattr(first, "num_labels", None)
        for m in models:
            if _head_of(m) != head or m.cfg != first.cfg or getattr(m, "num_labels", None) != num_labels:
                raise ValueError("all committee members must share one class, ModelConfig and label count")
        params, buffers = torch.func.stack_module_state(list(models))
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        committee = cls(first.cfg, len(models), params, buffers, head=head, num_labels=num_labels,
                        label_names=label_names)
        return committee.train(first.training)

    @classmethod
    def init(
        cls,
        cfg: ModelConfig,
        n: int,
        seeds: Sequence[int] | None = None,
        *,
        head: str = "classification",
        num_labels: int | None = None,
        label_names: list[str] | None = None,
    ) -> Committee:
        """n freshly initialised members; member i is exactly the model that torch.manual_seed(seeds[i])
        followed by BertForClassification(cfg, num_labels) (or BertForMLM(cfg)) builds. Default seeds: 0..n-1.
        The global RNG state is left as it was. Members are built one at a time into the stacked tensors."""
        seeds = list(range(n)) if seeds is None else list(seeds)
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} members")
        if num_labels is None and label_names:
            num_labels = len(label_names)
        params: dict[str, Tensor] = {}
        buffers: dict[str, Tensor] = {}
        with torch.random.fork_rng(devices=[]):
            for i, seed in enumerate(seeds):
                torch.manual_seed(seed)
                model = _build_member(cfg, head, num_labels)
                for store, items in ((params, model.named_parameters()), (buffers, model.named_buffers())):
                    for name, t in items:
                        if name not in store:
                            store[name] = torch.empty((n, *t.shape), dtype=t.dtype)
                        store[name][i] = t.detach()
        params = {k: v.requires_grad_(True) for k, v in params.items()}
        return cls(cfg, n, params, buffers, head=head, num_labels=num_labels, label_names=label_names)

    def member(self, i: int, copy: bool = True) -> Member:
        """Member i as an ordinary tinylm model (eval mode) with identical weights: copied, or, with
        copy=False, views sharing the committee's storage (no extra memory; its training changes the committee)."""
        if not -self.n <= i < self.n:
            raise IndexError(f"member {i} of a committee of {self.n}")
        with torch.device("meta"):
            model = _build_member(self.cfg, self.head, self.num_labels)
        state = {}
        for name, t in list(self.members.named_parameters()) + list(self.members.named_buffers()):
            v = t.detach()[i]
            state[name] = v.clone() if copy else v
        model.load_state_dict(state, assign=True)
        for p in model.parameters():
            p.requires_grad_(True)
        return model.eval()

    def __len__(self) -> int:
        return self.n

    # ----- the vectorised forward pass -----

    def stacked(self, members: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Name -> stacked tensor (parameters and buffers), optionally restricted to `members` (a copy unless
        they form a contiguous ascending range; training a conv variant on a non-contiguous subset therefore
        does not update its batch-norm running statistics)."""
        out = dict(self.members.named_parameters())
        out.update(self.members.named_buffers())
        if members is None:
            return out
        idx = [int(i) % self.n for i in members]
        if not idx:
            raise ValueError("empty member subset")
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return {k: v[idx[0]:idx[0] + len(idx)] for k, v in out.items()}
        index = torch.tensor(idx, device=next(iter(out.values())).device)
        return {k: v.index_select(0, index) for k, v in out.items()}

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        members: Sequence[int] | None = None,
    ) -> CommitteeOutput:
        """All (or the listed) members on one batch [B, L] shared by all, or on one batch each [N, B, L].

        labels: [B] / [N, B] class ids (classification), [B, L] / [N, B, L] with IGNORE_INDEX at unmasked positions
        (MLM). Returns per-member logits, per-member mean losses and their sum as `loss`.

        On a CPU, without gradients and labels (inference), members are run in chunks whose widest activation holds
        at most `chunk_elements` numbers: at large batches one huge batched pass is memory-bound there; at batch 1
        the whole committee is one chunk. GPUs always get one pass.
        """
        b, t = input_ids.shape[-2:]
        per_member = b * t * max(self.cfg.hidden_size, self.cfg.intermediate_size)
        idx = list(range(self.n)) if members is None else [int(i) % self.n for i in members]
        size = max(1, self.chunk_elements // per_member) if self.chunk_elements else len(idx)
        if labels is not None or torch.is_grad_enabled() or size >= len(idx) or input_ids.device.type != "cpu":
            return self._forward(input_ids, attention_mask, token_type_ids, labels, members)

        def part(x: Tensor | None, a: int) -> Tensor | None:
            return x[a:a + size] if x is not None and input_ids.ndim == 3 else x

        logits = [self._forward(part(input_ids, a), part(attention_mask, a), part(token_type_ids, a), None,
                                idx[a:a + size]).logits for a in range(0, len(idx), size)]
        return CommitteeOutput(logits=torch.cat(logits))

    def _forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        labels: Tensor | None,
        members: Sequence[int] | None,
    ) -> CommitteeOutput:
        p = self.stacked(members)
        n = next(iter(p.values())).shape[0]
        per_member = input_ids.ndim == 3
        if per_member and input_ids.shape[0] != n:
            raise ValueError(f"input_ids has {input_ids.shape[0]} member batches for {n} members")
        if input_ids.ndim not in (2, 3):
            raise ValueError("input_ids must be [B, L] (shared) or [N, B, L] (one batch per member)")
        b, t = input_ids.shape[-2:]
        if t > self.cfg.max_position_embeddings:
            raise ValueError(f"sequence length {t} exceeds max_position_embeddings {self.cfg.max_position_embeddings}")

        x = self._embed(p, n, input_ids, token_type_ids)  # [n, b, t, h]
        if self._conv_plan:
            x = self._conv(p, n, x)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            m = attention_mask.bool()
            m = m.reshape(n * b, t) if per_member else m.unsqueeze(0).expand(n, b, t).reshape(n * b, t)
            mask = m[:, None, None, :]
        last = self.cfg.num_hidden_layers - 1
        for i in range(self.cfg.num_hidden_layers):
            cls_only = i == last and self.head == "classification" and self.cls_only
            x = self._layer(p, f"bert.layers.{i}.", x, mask, cls_only)
        if self.head == "classification":
            return self._classify(p, x, labels)
        return self._mlm(p, x, labels)

    def _embed(self, p: dict[str, Tensor], n: int, ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        pre = "bert.embeddings."
        t = ids.shape[-1]
        x = _gather_rows(p[pre + "word_embeddings.weight"], ids, n, self.cfg.pad_token_id)
        x = x + p[pre + "position_embeddings.weight"][:, None, :t]
        tt = p[pre + "token_type_embeddings.weight"]
        x = x + (tt[:, None, None, 0] if token_type_ids is None else _gather_rows(tt, token_type_ids, n, None))
        return self._dropout(_layer_norm(x, p, pre + "norm.", self.cfg.layer_norm_eps))

    def _dropout(self, x: Tensor) -> Tensor:
        return dropout(x, self.cfg.hidden_dropout_prob, self.training)

    def _layer(self, p: dict[str, Tensor], pre: str, x: Tensor, mask: Tensor | None, cls_only: bool) -> Tensor:
        n, b, _, h = x.shape
        heads = self.cfg.num_attention_heads
        eps = self.cfg.layer_norm_eps

        def split(y: Tensor) -> Tensor:  # [n, b, s, h] -> [n*b, heads, s, h/heads]
            return y.reshape(n * b, y.shape[2], heads, h // heads).transpose(1, 2)

        xq = x[:, :, :1] if cls_only else x
        q, k, v = split(_linear(xq, p, pre + "query.")), split(_linear(x, p, pre + "key.")), split(
            _linear(x, p, pre + "value."))
        a = attention(q, k, v, mask, self.cfg.attention_probs_dropout_prob, self.training)
        a = a.transpose(1, 2).reshape(n, b, xq.shape[2], h)
        y = _layer_norm(xq + self._dropout(_linear(a, p, pre + "attn_out.")), p, pre + "attn_norm.", eps)
        z = _linear(F.gelu(_linear(y, p, pre + "ffn_in.")), p, pre + "ffn_out.")
        return _layer_norm(y + self._dropout(z), p, pre + "ffn_norm.", eps)

    def _classify(self, p: dict[str, Tensor], x: Tensor, labels: Tensor | None) -> CommitteeOutput:
        pooled = torch.tanh(_linear(x[:, :, 0], p, "pooler."))
        logits = _linear(self._dropout(pooled), p, "classifier.")  # [n, b, c]
        if labels is None:
            return CommitteeOutput(logits=logits)
        n, b, c = logits.shape
        labels = labels.expand(n, b) if labels.ndim == 1 else labels
        nll = F.cross_entropy(logits.float().reshape(n * b, c), labels.reshape(n * b), reduction="none")
        member_losses = _masked_mean(nll.view(n, b), labels != IGNORE_INDEX)
        return CommitteeOutput(logits=logits, loss=member_losses.sum(), member_losses=member_losses)

    def _vocab_logits(self, p: dict[str, Tensor], h: Tensor) -> Tensor:
        h = _layer_norm(F.gelu(_linear(h, p, "head_dense.")), p, "head_norm.", self.cfg.layer_norm_eps)
        shape = h.shape
        w = p["bert.embeddings.word_embeddings.weight"]  # tied decoder, [n, V, h]
        out = torch.baddbmm(p["head_bias"][:, None, :], h.reshape(shape[0], -1, shape[-1]), w.transpose(1, 2))
        return out.view(*shape[:-1], w.shape[1])

    def _mlm(self, p: dict[str, Tensor], x: Tensor, labels: Tensor | None) -> CommitteeOutput:
        if labels is None:
            return CommitteeOutput(logits=self._vocab_logits(p, x))
        n, b, t, h = x.shape
        labels = (labels.expand(n, b, t) if labels.ndim == 2 else labels).reshape(n, b * t)
        selected = labels != IGNORE_INDEX
        counts = selected.sum(1)
        k = max(int(counts.max()), 1)
        # Positions of each member's masked tokens, in row-major order (as h[selected] in model.py), padded to k.
        order = torch.sort((~selected).to(torch.uint8), dim=1, stable=True).indices[:, :k]
        valid = torch.arange(k, device=x.device)[None, :] < counts[:, None]
        picked = torch.gather(x.reshape(n, b * t, h), 1, order[..., None].expand(n, k, h))
        targets = torch.where(valid, torch.gather(labels, 1, order), torch.full_like(order, IGNORE_INDEX))
        logits = self._vocab_logits(p, picked)  # [n, k, V]
        # Over rows of [n * k, V]: a log_softmax along the strided class dim of [n, V, k] was ~20x slower on CPU.
        nll = F.cross_entropy(logits.float().reshape(n * k, -1), targets.reshape(n * k), reduction="none").view(n, k)
        member_losses = _masked_mean(nll, valid)
        return CommitteeOutput(logits=logits, loss=member_losses.sum(), member_losses=member_losses)

    # The convolutional front block (paper's BERT-1 variants) as grouped convolutions: member j's channels are
    # group j, so one conv2d / batch_norm call serves all members, each with its own weights and statistics.
    def _plan_conv(self) -> list[tuple[str, str, nn.Module]]:
        conv = self.members.bert.conv
        if conv is None:
            return []
        plan = []
        for idx, module in enumerate(conv.net):
            kind = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.GELU: "gelu"}.get(type(module))
            if kind is None:
                raise TypeError(f"unsupported conv block module {module}")
            plan.append((kind, f"bert.conv.net.{idx}.", module))
        return plan

    def _conv(self, p: dict[str, Tensor], n: int, x: Tensor) -> Tensor:
        _, b, t, h = x.shape
        y = x.permute(1, 0, 2, 3)  # [b, n, t, h]: member j's 1-channel image is channel j
        for kind, pre, module in self._conv_plan:
            if kind == "conv":
                w = p[pre + "weight"]  # [n, out, in, kh, kw]
                y = F.conv2d(y, w.reshape(-1, *w.shape[2:]), p[pre + "bias"].reshape(-1), padding=module.padding,
                             groups=n)
            elif kind == "bn":
                rm, rv = p[pre + "running_mean"], p[pre + "running_var"]
                if self.training and module.track_running_stats:
                    p[pre + "num_batches_tracked"].add_(1)
                y = F.batch_norm(y, rm.view(-1), rv.view(-1), p[pre + "weight"].reshape(-1),
                                 p[pre + "bias"].reshape(-1), self.training, module.momentum, module.eps)
            else:
                y = F.gelu(y)
        return y.reshape(b, n, t, h).permute(1, 0, 2, 3)

    # ----- prediction -----

    @torch.no_grad()
    def member_proba(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        members: Sequence[int] | None = None,
    ) -> Tensor:
        """Each member's class probabilities, fp32 [n_members, B, C] (softmax of its logits)."""
        self._need_classifier()
        logits = self(input_ids, attention_mask, token_type_ids, members=members).logits
        return torch.softmax(logits.float(), dim=-1)

    def predict_proba(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        members: Sequence[int] | None = None,
    ) -> Tensor:
        """The soft vote: the mean of the members' softmax probabilities, [B, C]."""
        return soft_vote(self.member_proba(input_ids, attention_mask, token_type_ids, members))

    def predict_hard(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        members: Sequence[int] | None = None,
    ) -> Tensor:
        """The hard (majority) vote, [B] class ids; see hard_vote for ties."""
        return hard_vote(self.member_proba(input_ids, attention_mask, token_type_ids, members))

    def _need_classifier(self) -> None:
        if self.head != "classification":
            raise ValueError("class probabilities need a classification committee")

    # ----- training support -----

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups as training.make_optimizer builds them for one member: no decay on biases and norms,
        judged by the member's parameter shape (a stacked bias is 2-D)."""
        decay, no_decay = [], []
        for name, p in self.members.named_parameters():
            (no_decay if p.ndim - 1 < 2 or "norm" in name else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _gather_rows(table: Tensor, ids: Tensor, n: int, padding_idx: int | None) -> Tensor:
    """table [n, V, h], ids [B, L] (shared) or [n, B, L] -> [n, B, L, h]: each member looks up its own table.

    Like nn.Embedding(padding_idx=...), the padding row gets no gradient."""
    vocab = table.shape[1]
    offsets = torch.arange(n, device=ids.device).mul_(vocab).view(n, 1, 1)
    flat = F.embedding(ids.unsqueeze(0) + offsets if ids.ndim == 2 else ids + offsets, table.reshape(n * vocab, -1))
    if padding_idx is not None and torch.is_grad_enabled() and table.requires_grad:
        pad = (ids == padding_idx).unsqueeze(-1)
        flat = torch.where(pad if ids.ndim == 3 else pad.unsqueeze(0), flat.detach(), flat)
    return flat


def _expand_member(t: Tensor, ndim: int) -> Tensor:
    """[n, d] -> [n, 1, ..., 1, d] with `ndim` dimensions in all."""
    return t.view(t.shape[0], *([1] * (ndim - 2)), t.shape[-1])


def _linear(x: Tensor, p: dict[str, Tensor], pre: str) -> Tensor:
    """Per-member nn.Linear: x [n, ..., in] with weight [n, out, in] and bias [n, out]."""
    w, bias = p[pre + "weight"], p[pre + "bias"]
    shape = x.shape
    out = torch.baddbmm(bias[:, None, :], x.reshape(shape[0], -1, shape[-1]), w.transpose(1, 2))
    return out.view(*shape[:-1], w.shape[1])


def _layer_norm(x: Tensor, p: dict[str, Tensor], pre: str, eps: float) -> Tensor:
    y = F.layer_norm(x, (x.shape[-1],), None, None, eps)
    return y * _expand_member(p[pre + "weight"], x.ndim) + _expand_member(p[pre + "bias"], x.ndim)


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Per-row mean of `values` [n, m] over `valid` entries (F.cross_entropy's mean with ignore_index)."""
    return (values * valid).sum(1) / valid.sum(1)


# ----- votes over per-member probabilities (also for subsets of size k, from one pass over all members) -----


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


# ----- optimizer and step -----


def make_committee_optimizer(
    committee: Committee, lr: float, weight_decay: float, device: torch.device | str = "cpu"
) -> torch.optim.Optimizer:
    """AdamW over the stacked parameters, equal to training.make_optimizer applied to each member."""
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
    """training.train_step for a committee: the summed loss, per-member clipping; returns the member losses [N]."""
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


# ----- texts in, probabilities out -----


@torch.inference_mode()
def predict_member_proba(
    committee: Committee,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    precision: Precision = "fp32",
    members: Sequence[int] | None = None,
    device: torch.device | None = None,
) -> np.ndarray:
    """Per-member class probabilities of texts, [n_members, len(texts), C] (batched by length, like
    evaluate.predict_proba). One pass gives every subset's soft and hard vote (soft_vote / hard_vote)."""
    committee._need_classifier()
    device = device or next(committee.parameters()).device
    precision = effective_precision(precision, device)
    committee.eval()
    max_length = min(max_length, committee.cfg.max_position_embeddings)
    n = committee.n if members is None else len(members)

    def run(batch: list[str]) -> np.ndarray:
        enc = {k: torch.from_numpy(v).to(device) for k, v in encode(tokenizer, batch, max_length).items()}
        with autocast(device, precision):
            logits = committee(enc["input_ids"], enc["attention_mask"], members=members).logits
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    return map_by_length(texts, run, batch_size, (n,), committee.num_labels)


class SoftVote(nn.Module):
    """A classification committee seen as one classifier (what evaluate.predict_proba and Classifier expect):
    forward returns logits = log(soft vote), so softmax(logits) is the mean of the member probabilities."""

    def __init__(self, committee: Committee, members: Sequence[int] | None = None):
        super().__init__()
        committee._need_classifier()
        self.committee = committee
        self.members = list(members) if members is not None else None
        self.cfg = committee.cfg
        self.num_labels = committee.num_labels

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> ModelOutput:
        logits = self.committee(input_ids, attention_mask, token_type_ids, members=self.members).logits
        mean = torch.softmax(logits.float(), dim=-1).mean(0)
        out_logits = mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
        loss = None if labels is None else F.nll_loss(out_logits, labels)
        return ModelOutput(logits=out_logits, loss=loss)


# ----- persistence -----


def _hf_names(committee: Committee) -> dict[str, str]:
    """Member (tinylm) name -> Hugging Face BERT name, exactly as checkpoint.to_hf_state_dict renames them."""
    out = {}
    for name in committee.stacked():
        hf = _rename(name, _to_hf_table())
        if hf is None:
            raise KeyError(f"no Hugging Face name for parameter {name}")
        out[name] = hf
    return out


def save_committee(
    committee: Committee,
    folder: str | os.PathLike,
    tokenizer: Any = None,
    label_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the committee to one folder, atomically: config.json, model.safetensors (stacked, member axis first,
    Hugging Face BERT names), tokenizer files, and `extra` in tinylm_meta.json."""
    label_names = label_names or committee.label_names
    if committee.head == "classification" and label_names and len(label_names) != committee.num_labels:
        raise ValueError(f"{len(label_names)} label names for {committee.num_labels} labels")
    with torch.device("meta"):
        template = _build_member(committee.cfg, committee.head, committee.num_labels)
    config = hf_config_dict(committee.cfg, template, label_names)
    config["architectures"] = ["TinylmCommittee"]
    config["model_type"] = COMMITTEE_MODEL_TYPE
    config["num_members"] = committee.n
    config["tinylm"]["committee"] = {"format": FORMAT_VERSION, "members": committee.n,
                                     "member_model_type": "bert" if committee.cfg.is_plain_bert else CONV_MODEL_TYPE}
    names = _hf_names(committee)
    state = {names[k]: v.detach().contiguous().cpu() for k, v in committee.stacked().items()}
    return write_model_folder(folder, state, config, tokenizer, extra,
                              metadata={"tinylm_committee_members": str(committee.n)})


def is_committee_folder(folder: str | os.PathLike) -> bool:
    cfg_file = Path(folder) / "config.json"
    if not cfg_file.is_file():
        return False
    return json.loads(cfg_file.read_text()).get("model_type") == COMMITTEE_MODEL_TYPE


def _read_committee_config(folder: Path) -> tuple[ModelConfig, dict[str, Any], int, str, list[str] | None]:
    if not is_committee_folder(folder):
        raise ValueError(f"{folder}: not a committee folder (config.json model_type is not {COMMITTEE_MODEL_TYPE})")
    cfg, raw = read_model_config(folder)
    info = raw["tinylm"]["committee"]
    if info.get("format", 1) > FORMAT_VERSION:
        raise ValueError(f"{folder}: committee format {info['format']} is newer than this tinylm reads")
    head = raw["tinylm"]["head"]
    labels = label_names_of(folder) if head == "classification" else None
    return cfg, raw, int(info["members"]), head, labels


def load_committee(folder: str | os.PathLike, device: str | torch.device | None = None) -> Committee:
    """Load a folder written by save_committee (eval mode)."""
    folder = Path(folder)
    cfg, _, n, head, labels = _read_committee_config(folder)
    state: dict[str, Tensor] = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt", device=str(device or "cpu")) as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            state[name] = f.get_tensor(name)
    state = from_hf_state_dict(state)
    with torch.device("meta"):
        template = _build_member(cfg, head, len(labels) if labels else None)
    param_names = {k for k, _ in template.named_parameters()}
    params = {k: v.requires_grad_(True) for k, v in state.items() if k in param_names}
    buffers = {k: v for k, v in state.items() if k not in param_names}
    committee = Committee(cfg, n, params, buffers, head=head, num_labels=len(labels) if labels else None,
                          label_names=labels)
    return committee.eval()


def extract_member(folder: str | os.PathLike, i: int, out_folder: str | os.PathLike) -> Path:
    """Write member i of a committee folder as an ordinary model folder (checkpoint.save_model), reading only
    that member's slice of each tensor. tinylm's load_model loads it, and transformers too for plain BERTs."""
    folder = Path(folder)
    cfg, _, n, head, labels = _read_committee_config(folder)
    if not 0 <= i < n:
        raise IndexError(f"member {i} of a committee of {n}")
    state: dict[str, Tensor] = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt", device="cpu") as f:
        for name in f.keys():  # noqa: SIM118
            state[name] = f.get_slice(name)[i:i + 1][0].clone()
    with torch.device("meta"):
        model = _build_member(cfg, head, len(labels) if labels else None)
    model.load_state_dict(from_hf_state_dict(state), assign=True)
    tokenizer = None
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
        from tinylm.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(folder)
    meta: dict[str, Any] = {"committee": {"source": str(folder), "member": i, "members": n}}
    if (folder / "tinylm_meta.json").is_file():
        meta["committee_meta"] = json.loads((folder / "tinylm_meta.json").read_text())
    return save_model(model, out_folder, tokenizer, label_names=labels, extra=meta)


__all__ = [
    "COMMITTEE_MODEL_TYPE",
    "Committee",
    "CommitteeOutput",
    "SoftVote",
    "clip_grad_norm_per_member_",
    "committee_train_step",
    "extract_member",
    "hard_vote",
    "is_committee_folder",
    "load_committee",
    "make_committee_optimizer",
    "predict_member_proba",
    "save_committee",
    "soft_vote",
    "stack_member_batches",
]
