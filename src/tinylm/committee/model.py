"""The stacked committee module: N members of one configuration and head, computed in one batched pass.

Every parameter of a member model (model.py's BertForClassification or BertForMLM) becomes one tensor with a
leading member axis; the forward pass is model.py's (`encode` and the heads), run with per-member batched ops
(committee/ops.py), so N members cost one op sequence instead of N. The package docstring
(tinylm/committee/__init__.py) says why it is built so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinylm.committee.ops import MemberOps, StackedView, masked_mean
from tinylm.config import ModelConfig
from tinylm.model import (
    IGNORE_INDEX,
    BertForClassification,
    BertForMLM,
    ModelOutput,
    class_logits,
    encode,
    vocab_logits,
)

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


def build_member(cfg: ModelConfig, head: str, num_labels: int | None) -> Member:
    """One member model of a committee with this head ("classification" or "mlm"): the template of its names."""
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
            self.members = build_member(cfg, head, num_labels)
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
    def sharing(cls, model: Member) -> Committee:
        """A committee of one that shares `model`'s weights (views, no copy, no gradients): the model run on the
        committee's inference path, whose last layer computes only what [CLS] needs."""
        params = {k: v.detach().unsqueeze(0) for k, v in model.named_parameters()}
        buffers = {k: v.unsqueeze(0) for k, v in model.named_buffers()}
        head = _head_of(model)
        committee = cls(model.cfg, 1, params, buffers, head=head, num_labels=getattr(model, "num_labels", None))
        return committee.train(model.training)

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
                model = build_member(cfg, head, num_labels)
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
            model = build_member(self.cfg, self.head, self.num_labels)
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
        w: Any = self.members if members is None else StackedView(self.stacked(members))
        n = self.n if members is None else len(members)
        if input_ids.ndim == 3 and input_ids.shape[0] != n:
            raise ValueError(f"input_ids has {input_ids.shape[0]} member batches for {n} members")
        if input_ids.ndim not in (2, 3):
            raise ValueError("input_ids must be [B, L] (shared) or [N, B, L] (one batch per member)")
        ops = MemberOps(n)
        classify = self.head == "classification"
        x = encode(w.bert, self.cfg, ops, input_ids, attention_mask, token_type_ids, self.training,
                   cls_only=classify and self.cls_only)  # [n, b, t, h]
        if classify:
            return self._classify(class_logits(w, self.cfg, ops, x, self.training), labels)
        return self._mlm(w, ops, x, labels)

    def _classify(self, logits: Tensor, labels: Tensor | None) -> CommitteeOutput:
        """Per-member losses of the logits [n, b, c]."""
        if labels is None:
            return CommitteeOutput(logits=logits)
        n, b, c = logits.shape
        labels = labels.expand(n, b) if labels.ndim == 1 else labels
        nll = F.cross_entropy(logits.float().reshape(n * b, c), labels.reshape(n * b), reduction="none")
        member_losses = masked_mean(nll.view(n, b), labels != IGNORE_INDEX)
        return CommitteeOutput(logits=logits, loss=member_losses.sum(), member_losses=member_losses)

    def _mlm(self, w: Any, ops: MemberOps, x: Tensor, labels: Tensor | None) -> CommitteeOutput:
        if labels is None:
            return CommitteeOutput(logits=vocab_logits(w, self.cfg, ops, x))
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
        logits = vocab_logits(w, self.cfg, ops, picked)  # [n, k, V]
        # Over rows of [n * k, V]: a log_softmax along the strided class dim of [n, V, k] was ~20x slower on CPU.
        nll = F.cross_entropy(logits.float().reshape(n * k, -1), targets.reshape(n * k), reduction="none").view(n, k)
        member_losses = masked_mean(nll, valid)
        return CommitteeOutput(logits=logits, loss=member_losses.sum(), member_losses=member_losses)

    def require_classifier(self) -> None:
        """Raise unless this committee answers with class probabilities (a classification head)."""
        if self.head != "classification":
            raise ValueError("class probabilities need a classification committee")

    # ----- training support -----

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups as train.loop.make_optimizer builds them for one member: no decay on biases and norms,
        judged by the member's parameter shape (a stacked bias is 2-D)."""
        decay, no_decay = [], []
        for name, p in self.members.named_parameters():
            (no_decay if p.ndim - 1 < 2 or "norm" in name else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# A classifier: a fine-tuned model, or a classification committee (whose answer is its soft vote).
ClassifierModel = BertForClassification | Committee
