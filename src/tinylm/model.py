"""A tiny BERT encoder, its MLM and classification heads, and the paper's convolutional variant, in one file.

Numerically this is Hugging Face's BertForMaskedLM / BertForSequenceClassification (post-LayerNorm, GELU,
tied MLM decoder), written out so that training can take the fast paths that matter on a CPU:
scaled-dot-product attention, and an MLM head evaluated only at the masked positions.
Weights map one-to-one onto Hugging Face's names (see checkpoint.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinylm.config import ModelConfig

IGNORE_INDEX = -100


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
        # slower than autograd through two bmm and a softmax (README, "The CPU-scale models' training step").
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


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))


class Layer(nn.Module):
    """One post-LayerNorm transformer layer, as in BERT."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.attn_dropout = cfg.attention_probs_dropout_prob
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(h, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, h = x.shape
        return x.view(b, t, self.num_heads, h // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        b, t, h = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        a = attention(q, k, v, attn_mask, self.attn_dropout, self.training)
        a = a.transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(x + self.dropout(self.attn_out(a)))
        y = self.ffn_out(F.gelu(self.ffn_in(x)))
        return self.ffn_norm(x + self.dropout(y))


class ConvBlock(nn.Module):
    """The paper's convolutional front block: the (sequence x hidden) activation is a 1-channel image.

    It ignores the attention mask, as in the authors' code, and replaces encoder layer 0.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        blocks: list[nn.Module] = []
        channels = 1
        for kernel in cfg.conv_kernels:
            blocks += [
                nn.Conv2d(channels, cfg.conv_channels, kernel, padding="same"),
                nn.BatchNorm2d(cfg.conv_channels),
                nn.GELU(),
            ]
            channels = cfg.conv_channels
        blocks += [nn.Conv2d(channels, 1, 1), nn.BatchNorm2d(1), nn.GELU()]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(1)).squeeze(1)


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
        if input_ids.shape[1] > self.cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                f"{self.cfg.max_position_embeddings}"
            )
        x = self.embeddings(input_ids, token_type_ids)
        if self.conv is not None:
            x = self.conv(x)
        # Boolean key mask broadcast over heads and queries; None lets SDPA take its fastest kernel.
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return x


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

    def _vocab_logits(self, h: Tensor) -> Tensor:
        h = self.head_norm(F.gelu(self.head_dense(h)))
        return F.linear(h, self.bert.embeddings.word_embeddings.weight, self.head_bias)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> ModelOutput:
        h = self.bert(input_ids, attention_mask, token_type_ids)
        if labels is None:
            return ModelOutput(logits=self._vocab_logits(h))
        # Only the ~15 % masked positions carry a loss: project just those onto the vocabulary.
        selected = labels != IGNORE_INDEX
        logits = self._vocab_logits(h[selected])
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
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        self.apply(lambda m: init_weights(m, cfg.initializer_range))

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> ModelOutput:
        h = self.bert(input_ids, attention_mask, token_type_ids)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return ModelOutput(logits=logits, loss=loss)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
