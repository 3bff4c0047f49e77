"""A tiny BERT encoder, its MLM and classification heads, and the paper's convolutional variant, in one file.

Numerically this is Hugging Face's BertForMaskedLM / BertForSequenceClassification (post-LayerNorm, GELU,
tied MLM decoder), written out so that training can take the fast paths that matter on a CPU:
scaled-dot-product attention, and an MLM head evaluated only at the masked positions.
Weights map one-to-one onto Hugging Face's names (see checkpoint.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinylm.config import ModelConfig

IGNORE_INDEX = -100
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # the conv block's batch norms (nn.BatchNorm2d's defaults)


class _CpuDropout(torch.autograd.Function):
    """Inverted dropout whose mask costs a quarter of a random draw per element.

    PyTorch's CPU dropout draws one Bernoulli sample per element in scalar code: about a fifth of a BERT-6
    training step on the reference machine. Here one 64-bit draw yields four 16-bit uniforms, so the drop
    probability is p rounded to a multiple of 1/65536 and the scale is exact for that rounded p. The draws
    come from the default generator, so torch.manual_seed fixes the mask as it does for F.dropout.
    The mask is kept as 1.0/0.0 in x's dtype: multiplying by a bool tensor takes a slow mixed-dtype path on
    CPU (about 8x a same-dtype multiply). The products are the same numbers as with a bool mask.
    """

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # type: ignore[override]
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        uniform16 = words.view(torch.int16)[:n].view(x.shape)  # each lane uniform over [-32768, 32767]
        dropped = round(p * 65536)
        keep = torch.ge(uniform16, dropped - 32768, out=torch.empty_like(x))
        ctx.scale = 65536 / (65536 - dropped)
        ctx.save_for_backward(keep)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """F.dropout, with a faster mask on CPU (see _CpuDropout)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    return _CpuDropout.apply(x, p)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, training: bool) -> Tensor:
    """Scaled-dot-product attention over [..., heads, seq, head_dim]; `mask` is True where keys count."""
    dropout_p = dropout_p if training else 0.0
    if q.device.type == "cpu" and (dropout_p > 0 or (q.requires_grad and torch.is_grad_enabled())):
        # On CPU, training takes the plain matmul-softmax-matmul path: SDPA's CPU kernels have no dropout (it
        # would fall back to its math path and the slow scalar mask), and their flash-attention backward is
        # slower than autograd through two bmm and a softmax (docs/speed.md, "The CPU-scale models' training step").
        scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if mask is not None:  # an additive -inf bias: the same scores as masked_fill, cheaper on CPU
            scores = scores + torch.zeros(mask.shape, dtype=scores.dtype, device=mask.device).masked_fill_(
                ~mask, float("-inf"))
        return dropout(scores.softmax(-1), dropout_p, True).to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class Dropout(nn.Module):
    """nn.Dropout with the CPU fast path; same name and no parameters, so checkpoints are unchanged."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass
class ModelOutput:
    logits: Tensor
    loss: Tensor | None = None

    def logged_loss(self) -> Tensor | None:
        """The loss a training log shows: the loss itself (a committee shows its mean member's)."""
        return self.loss


class Ops:
    """The ops the forward pass below applies to its weights, for one model: nn.Linear, nn.LayerNorm, nn.Embedding.

    The forward pass (`embed`, `layer`, `conv_front`, `encode` and the heads) is written once, against weights
    reached as attributes (`w.query.weight`) and these ops. A committee (committee/ops.py's MemberOps) runs the
    same functions over stacked weights, member axis first, with per-member batched ops."""

    members = 1  # the member axis' length; one model has none

    def affine(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def linear(self, x: Tensor, m: Any) -> Tensor:
        return self.affine(x, m.weight, m.bias)

    def layer_norm(self, x: Tensor, m: Any, eps: float) -> Tensor:
        # int(): under ONNX tracing a size is a graph value, which the LayerNormalization symbolic refuses; the
        # hidden size is fixed, so a constant changes nothing.
        return F.layer_norm(x, (int(x.shape[-1]),), m.weight, m.bias, eps)

    def embedding(self, ids: Tensor, table: Tensor, padding_idx: int | None) -> Tensor:
        return F.embedding(ids, table, padding_idx)

    def per_member(self, t: Tensor) -> Tensor:
        """A weight slice [..., rows, h] made to broadcast over activations [..., batch, rows, h]."""
        return t


ONE_MODEL = Ops()


def embed(w: Any, cfg: ModelConfig, ops: Ops, input_ids: Tensor, token_type_ids: Tensor | None,
          training: bool) -> Tensor:
    """Word + position + token-type embeddings, LayerNorm, dropout; `w` holds the Embeddings weights."""
    t = input_ids.shape[-1]
    x = ops.embedding(input_ids, w.word_embeddings.weight, cfg.pad_token_id)
    x = x + ops.per_member(w.position_embeddings.weight[..., :t, :])
    types = w.token_type_embeddings.weight
    x = x + (ops.per_member(types[..., :1, :]) if token_type_ids is None
             else ops.embedding(token_type_ids, types, None))
    return dropout(ops.layer_norm(x, w.norm, cfg.layer_norm_eps), cfg.hidden_dropout_prob, training)


def layer(w: Any, cfg: ModelConfig, ops: Ops, x: Tensor, mask: Tensor | None, training: bool,
          cls_only: bool = False) -> Tensor:
    """One post-LayerNorm transformer layer on x [..., B, T, h]; `mask` [prod(...), 1, 1, T] is True where keys
    count. cls_only: queries, attention output and feed-forward at [CLS] only (what a classifier's last layer
    needs: the same function, fewer FLOPs), giving [..., B, 1, h]."""
    h, heads, eps, p = x.shape[-1], cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_dropout_prob

    def split(y: Tensor) -> Tensor:  # [..., B, S, h] -> [prod(..., B), heads, S, h / heads]
        return y.reshape(-1, y.shape[-2], heads, h // heads).transpose(1, 2)

    xq = x[..., :1, :] if cls_only else x
    q, k, v = split(ops.linear(xq, w.query)), split(ops.linear(x, w.key)), split(ops.linear(x, w.value))
    a = attention(q, k, v, mask, cfg.attention_probs_dropout_prob, training)
    a = a.transpose(1, 2).reshape(*x.shape[:-2], xq.shape[-2], h)
    y = ops.layer_norm(xq + dropout(ops.linear(a, w.attn_out), p, training), w.attn_norm, eps)
    z = ops.linear(F.gelu(ops.linear(y, w.ffn_in)), w.ffn_out)
    return ops.layer_norm(y + dropout(z, p, training), w.ffn_norm, eps)


def conv_front(w: Any, cfg: ModelConfig, ops: Ops, x: Tensor, training: bool) -> Tensor:
    """The paper's convolutional front block (ConvBlock's weights in `w`) on x [B, T, h], or [N, B, T, h] for N
    members: member j's (T x h) activation is a 1-channel image, channel j, so grouped convolutions and one
    batch norm serve all members, each with its own weights and batch statistics."""
    stacked = x.ndim == 4
    n, b, t, h = (x if stacked else x[None]).shape
    y = (x if stacked else x[None]).permute(1, 0, 2, 3)  # [B, N, T, h]
    for j in range(len(cfg.conv_kernels) + 1):  # (Conv2d, BatchNorm2d, GELU) per kernel, then the 1x1 one
        conv, bn = w.net[3 * j], w.net[3 * j + 1]
        y = F.conv2d(y, conv.weight.reshape(-1, *conv.weight.shape[-3:]), conv.bias.reshape(-1), padding="same",
                     groups=n)
        if training:
            bn.num_batches_tracked.add_(1)
        y = F.gelu(F.batch_norm(y, bn.running_mean.view(-1), bn.running_var.view(-1), bn.weight.reshape(-1),
                                bn.bias.reshape(-1), training, BN_MOMENTUM, BN_EPS))
    y = y.reshape(b, n, t, h).permute(1, 0, 2, 3)
    return y if stacked else y[0]


def encode(w: Any, cfg: ModelConfig, ops: Ops, input_ids: Tensor, attention_mask: Tensor | None = None,
           token_type_ids: Tensor | None = None, training: bool = False, cls_only: bool = False) -> Tensor:
    """The encoder (weights of an Encoder in `w`) on ids [B, T] -> [B, T, h]; with a committee's ops, on ids
    [B, T] shared by all members or [N, B, T] one batch each -> [N, B, T, h]. cls_only: the last layer at [CLS]
    only (T becomes 1)."""
    t = input_ids.shape[-1]
    if t > cfg.max_position_embeddings:
        raise ValueError(f"sequence length {t} exceeds max_position_embeddings {cfg.max_position_embeddings}")
    x = embed(w.embeddings, cfg, ops, input_ids, token_type_ids, training)
    if cfg.conv_kernels:
        x = conv_front(w.conv, cfg, ops, x, training)
    # Boolean key mask broadcast over heads and queries; None lets SDPA take its fastest kernel.
    mask = None
    if attention_mask is not None and not bool(attention_mask.all()):
        mask = attention_mask.bool().expand(*x.shape[:-2], t).reshape(-1, t)[:, None, None, :]
    last = cfg.num_hidden_layers - 1
    for i in range(cfg.num_hidden_layers):
        x = layer(w.layers[i], cfg, ops, x, mask, training, cls_only and i == last)
    return x


def class_logits(w: Any, cfg: ModelConfig, ops: Ops, h: Tensor, training: bool) -> Tensor:
    """BERT's pooler ([CLS] -> dense -> tanh) and the linear classifier: [..., B, T, h] -> [..., B, C]."""
    pooled = torch.tanh(ops.linear(h[..., 0, :], w.pooler))
    return ops.linear(dropout(pooled, cfg.hidden_dropout_prob, training), w.classifier)


def vocab_logits(w: Any, cfg: ModelConfig, ops: Ops, h: Tensor) -> Tensor:
    """The MLM head: dense, GELU, LayerNorm, then the decoder tied to the word embeddings: [..., h] -> [..., V]."""
    h = ops.layer_norm(F.gelu(ops.linear(h, w.head_dense)), w.head_norm, cfg.layer_norm_eps)
    return ops.affine(h, w.bert.embeddings.word_embeddings.weight, w.head_bias)


# The modules below hold the weights under Hugging Face's names (checkpoint.py); their forward passes are the
# functions above.


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class Layer(nn.Module):
    """One post-LayerNorm transformer layer, as in BERT (computed by `layer`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden_size
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(h, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)


class ConvBlock(nn.Module):
    """The paper's convolutional front block (computed by `conv_front`): the (sequence x hidden) activation is a
    1-channel image. It ignores the attention mask, as in the authors' code, and replaces encoder layer 0."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        blocks: list[nn.Module] = []
        channels = 1
        for kernel in cfg.conv_kernels:
            blocks += [
                nn.Conv2d(channels, cfg.conv_channels, kernel, padding="same"),
                nn.BatchNorm2d(cfg.conv_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
                nn.GELU(),
            ]
            channels = cfg.conv_channels
        blocks += [nn.Conv2d(channels, 1, 1), nn.BatchNorm2d(1, eps=BN_EPS, momentum=BN_MOMENTUM), nn.GELU()]
        self.net = nn.Sequential(*blocks)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.conv = ConvBlock(cfg) if cfg.conv_kernels else None
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        return encode(self, self.cfg, ONE_MODEL, input_ids, attention_mask, token_type_ids, self.training)


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std) weights, zero biases, identity LayerNorms, zero padding embedding."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertForMLM(nn.Module):
    """Encoder + MLM head whose decoder is tied to the word embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.bert = Encoder(cfg)
        self.head_dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.head_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.apply(lambda m: init_weights(m, cfg.initializer_range))

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> ModelOutput:
        h = encode(self.bert, self.cfg, ONE_MODEL, input_ids, attention_mask, token_type_ids, self.training)
        if labels is None:
            return ModelOutput(logits=vocab_logits(self, self.cfg, ONE_MODEL, h))
        # Only the ~15 % masked positions carry a loss: project just those onto the vocabulary.
        selected = labels != IGNORE_INDEX
        logits = vocab_logits(self, self.cfg, ONE_MODEL, h[selected])
        loss = F.cross_entropy(logits.float(), labels[selected])
        return ModelOutput(logits=logits, loss=loss)


class BertForClassification(nn.Module):
    """Encoder + BERT pooler ([CLS] -> dense -> tanh) + linear classifier."""

    def __init__(self, cfg: ModelConfig, num_labels: int):
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.bert = Encoder(cfg)
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        self.apply(lambda m: init_weights(m, cfg.initializer_range))

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        cls_only: bool = False,
    ) -> ModelOutput:
        """cls_only: the last layer at [CLS] only (encode), the inference path: the same logits up to rounding."""
        h = encode(self.bert, self.cfg, ONE_MODEL, input_ids, attention_mask, token_type_ids, self.training, cls_only)
        logits = class_logits(self, self.cfg, ONE_MODEL, h, self.training)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return ModelOutput(logits=logits, loss=loss)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
