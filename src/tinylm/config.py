"""Typed configs and named presets for models, pre-training and fine-tuning.

The `paper` presets follow ../shared/docs/paper.md exactly; the `cpu`/`demo` presets are scaled down so every
effect of the paper can be seen on a 2-core laptop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from tinylm.data.tasks import TASKS
from tinylm.validation import Allowed, each, integer, number, one_of, optional, validate

Precision = Literal["fp32", "bf16", "fp16"]
DROPOUT = number(0, 1)  # a probability of dropping, so 1 (drop everything) is out


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a tiny BERT. Field names follow Hugging Face's BertConfig where one exists."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 128
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    # Convolutional front block of the paper's BERT-1 variants: one kernel size per conv layer (empty = none).
    conv_kernels: tuple[int, ...] = ()
    conv_channels: int = 0

    def __post_init__(self) -> None:
        validate(self)  # first: the checks below divide by and compare these fields
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.conv_kernels and self.conv_channels <= 0:
            raise ValueError("conv_kernels given but conv_channels is not positive")

    def rules(self) -> dict[str, Allowed]:
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size")
        return {
            **dict.fromkeys(sizes, integer(1)),
            "hidden_dropout_prob": DROPOUT,
            "attention_probs_dropout_prob": DROPOUT,
            "layer_norm_eps": number(0, open_low=True),
            "initializer_range": number(0),
            "pad_token_id": integer(0),
            "conv_kernels": each(integer(1), allow_empty=True),
            "conv_channels": integer(0),
        }

    def with_dropout(self, p: float | None) -> ModelConfig:
        """This config with hidden and attention dropout `p` (None: unchanged), as fine-tuning sets it."""
        if p is None:
            return self
        return dataclasses.replace(self, hidden_dropout_prob=p, attention_probs_dropout_prob=p)

    @property
    def is_plain_bert(self) -> bool:
        """True when the model is exactly a Hugging Face BERT (loadable by transformers)."""
        return not self.conv_kernels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "conv_kernels" in values:
            values["conv_kernels"] = tuple(values["conv_kernels"])
        return cls(**values)


def _bert(layers: int, heads: int = 12, **kw: Any) -> ModelConfig:
    """The paper's sizing rule: hidden = 64 x heads, intermediate = 4 x hidden."""
    hidden = 64 * heads
    return ModelConfig(
        num_hidden_layers=layers,
        num_attention_heads=heads,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        **kw,
    )


def _cpu(layers: int, hidden: int, heads: int, vocab: int = 8192) -> ModelConfig:
    # No dropout: CPU-scale pre-training is far from overfitting (held-out MLM loss, docs/cpu_scale.md).
    return ModelConfig(
        vocab_size=vocab,
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


MODEL_PRESETS: dict[str, ModelConfig] = {
    # The paper's models (bert-base-uncased vocabulary, max length 128).
    "bert-6": _bert(6),
    "bert-1": _bert(1),
    # The paper's BERT-1 variants, "layers1-convC-kK-dD-headsH": the conv block counts as an extra layer.
    "bert-1-conv2-k3-d64-heads12": _bert(1, 12, conv_kernels=(3, 3), conv_channels=64),
    "bert-1-conv2-k16,3-d64-heads12": _bert(1, 12, conv_kernels=(16, 3), conv_channels=64),
    "bert-1-conv2-k3-d64-heads8": _bert(1, 8, conv_kernels=(3, 3), conv_channels=64),
    "bert-1-conv3-k3-d32-heads12": _bert(1, 12, conv_kernels=(3, 3, 3), conv_channels=32),
    "bert-1-conv0-heads24": _bert(1, 24),
    # Small CPU presets (a WordPiece vocabulary of 8192 trained on the pre-training articles).
    "cpu-6": _cpu(layers=6, hidden=128, heads=2),
    "cpu-1": _cpu(layers=1, hidden=128, heads=2),
    "cpu-1-conv": dataclasses.replace(_cpu(layers=1, hidden=128, heads=2), conv_kernels=(3, 3), conv_channels=8),
    "demo": _cpu(layers=2, hidden=128, heads=2, vocab=4096),
}

# Tokenizers known by name (tinylm.tokenizer.load_tokenizer); any other spec is a folder or a vocab.txt.
# A 4,096-token WordPiece vocabulary trained on 12,000 Wikipedia openings, shipped with the package: the demo
# and the CPU-scale experiments share it, so every run and its scratch twin tokenise the same way.
SHIPPED_VOCABS = {"tinylm-wiki-4k": Path(__file__).parent / "demo_data" / "vocab.txt"}
# Pre-trained models shipped with the package (docs/pretrained_model.md), by name; `shipped` names the first.
# checkpoint.shipped_model resolves a name; a model name is a tokenizer name too (the folder's tokenizer).
SHIPPED_MODELS = {"tinylm-mini": Path(__file__).parent / "pretrained" / "tinylm-mini"}
TOKENIZER_NAMES = ("bert-base-uncased", *SHIPPED_VOCABS, *SHIPPED_MODELS)
MIN_TOKENS = 3  # a sequence of [CLS], one token and [SEP]
MAX_SEED = 2**63 - 1  # torch.manual_seed's and runtime.step_seed's range


def model_preset() -> Allowed:
    """A name in MODEL_PRESETS as it is now (callers may register presets, as tests/tiny_entry.py does)."""
    return one_of(MODEL_PRESETS, "model preset")


def tokenizer_spec(*names: str) -> Allowed:
    """A tokenizer name, or a path. Whether a path holds a tokenizer is left to load time, since a recipe may
    name a folder an earlier step writes (a scratch twin uses its pre-training run's); a bare word that is no
    known name and no existing file or folder can only be a mistyped name, so it is refused here."""
    known = (*names, *TOKENIZER_NAMES)

    def test(v: Any) -> bool:
        return isinstance(v, str) and v != "" and (v in known or "/" in v or os.sep in v or Path(v).exists())

    return Allowed(test, f"{', '.join(known)}, or the path of a tokenizer folder or vocab.txt", "tokenizer")


def _positions(preset: str) -> int | None:
    model = MODEL_PRESETS.get(preset)
    return model.max_position_embeddings if model else None


# The checks of TrainArgs' fields.
TRAINING_RULES: dict[str, Allowed] = {
    "epochs": integer(1),
    "batch_size": integer(1),
    "lr": number(0, open_low=True),
    "weight_decay": number(0),
    "warmup_ratio": number(0, 1),
    "grad_clip": number(0),
    "seed": integer(0, MAX_SEED),
    "data_seed": integer(0, MAX_SEED),
    "save_every": integer(1),
}


@dataclass(kw_only=True)
class TrainArgs:
    """The training loop's settings, one group shared by PretrainConfig, FinetuneConfig and DistillConfig
    (train.loop.LoopConfig.of reads them). A recipe lists them after its field LOOP_AFTER, in its flags, its checks
    and its to_dict, which is flat: a run's config hash is the one it had when each recipe declared these fields."""

    LOOP_AFTER: ClassVar[str]  # the recipe's own field after which these are listed

    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    schedule: Literal["step", "epoch"] = "step"  # the paper's code steps the linear schedule once per epoch
    grad_clip: float = 1.0  # max gradient norm; 0 disables (the paper's code does not clip)
    precision: Precision = "bf16"
    seed: int = 42  # initialisation, data order, masks and dropout
    data_seed: int | None = 42  # which data sample (articles, task sample) the run trains on
    save_every: int = 200  # optimizer steps between checkpoints (an epoch end always saves)

    @classmethod
    def reading_order(cls) -> tuple[dataclasses.Field, ...]:
        """The recipe's fields as it lists them: its own up to LOOP_AFTER, these, then the rest of its own."""
        shared = {f.name for f in dataclasses.fields(TrainArgs)}
        own = [f for f in dataclasses.fields(cls) if f.name not in shared]
        cut = next(i for i, f in enumerate(own) if f.name == cls.LOOP_AFTER) + 1
        loop = [f for f in dataclasses.fields(cls) if f.name in shared]
        return (*own[:cut], *loop, *own[cut:])

    def flat_dict(self) -> dict[str, Any]:
        """dataclasses.asdict in reading order."""
        values = dataclasses.asdict(self)
        return {f.name: values[f.name] for f in self.reading_order()}


@dataclass
class PretrainConfig(TrainArgs):
    """MLM pre-training recipe (and TrainArgs: the loop's settings)."""

    LOOP_AFTER: ClassVar[str] = "mask_prob"

    model: str = "cpu-1"
    tokenizer: str = "train"  # "bert-base-uncased" (vocab from the shared data or the hub), "train", or a path
    articles: int = 2000
    seq_len: int = 128
    mask_prob: float = 0.15
    # TrainArgs' fields here; data_seed picks the articles of the subset (the paper shuffles with seed 42 and takes
    # the first N)
    data_source: Literal["local", "hub"] = "local"
    compile: bool = False
    snapshots: int = 0  # also save the model at steps T/2, T/4, ..., T/2^snapshots of a T-step run
    corpus: str | None = None  # your own corpus instead of Wikipedia: a file, a folder or hub:NAME (data.corpus)
    text_field: str = "text"  # the corpus's text column when it is a table (JSON lines, CSV, Parquet) or hub dataset
    # A JSON file of token ids kept out of pre-training (data.withhold: replaced by [UNK], never MLM targets);
    # None = none withheld (tinylm.experiments.overlap_control writes these files)
    withhold: str | None = None
    init: str | None = None  # continue pre-training this model folder (its weights, shape and tokenizer)

    def __post_init__(self) -> None:
        validate(self)

    def rules(self) -> dict[str, Allowed]:
        positions = _positions(self.model)
        return {
            "model": model_preset(),
            "tokenizer": tokenizer_spec("train"),
            "articles": integer(1),
            "seq_len": integer(MIN_TOKENS, positions, f"the {self.model} model has {positions} positions")
            if positions else integer(MIN_TOKENS),
            "mask_prob": number(0, 1, open_low=True),
            **TRAINING_RULES,
            "snapshots": integer(0),
            "withhold": optional(Allowed(lambda v: isinstance(v, str) and v != "", "a JSON file of token ids"),
                                 "none withheld"),
            "init": optional(Allowed(lambda v: isinstance(v, str) and v != "", "a model folder"), "new weights"),
        }

    def to_dict(self) -> dict[str, Any]:
        d = self.flat_dict()
        if not self.snapshots:  # runs from before snapshots existed keep their config hash
            del d["snapshots"]
        return _drop_defaults(self, d, ("corpus", "text_field", "withhold", "init"))


@dataclass
class FinetuneConfig(TrainArgs):
    """Sequence-classification fine-tuning recipe (from a pre-trained checkpoint or from scratch), and TrainArgs."""

    LOOP_AFTER: ClassVar[str] = "dropout"

    task: str = "ag_news"
    init: str | None = None  # a pre-trained model folder; None trains from scratch
    model: str = "cpu-1"  # preset used when training from scratch (must match the init's shape otherwise)
    tokenizer: str | None = None  # from scratch: tokenizer folder or name; default: the init's tokenizer
    train_per_label: int | None = None  # None: the paper's sampling for the task
    test_per_label: int | None = None
    fewrel_markers: bool = False
    max_length: int = 128
    dropout: float | None = None  # fine-tuning dropout (hidden and attention); None: the model's own
    # TrainArgs' fields here, with this recipe's defaults; data_seed picks the balanced train/test sample (the paper
    # uses seed 42)
    epochs: int = field(default=5, kw_only=True)
    lr: float = field(default=5e-5, kw_only=True)
    data_source: Literal["local", "hub"] = "local"
    compile: bool = False
    # Your own labelled data instead of `task`; data.user_files.LabelledSource has the same fields and checks them.
    train_file: str | None = None
    test_file: str | None = None
    test_fraction: float = 0.0
    validation_fraction: float = 0.0  # also for a built-in task: held out of its training sample
    text_column: str = "text"
    label_column: str = "label"
    dataset: str | None = None  # a hub dataset NAME[:CONFIG]
    train_split: str | None = None
    test_split: str | None = None
    no_header: bool = False  # CSV/TSV files without a header row (columns named by 0-based numbers)

    def __post_init__(self) -> None:
        validate(self)

    def rules(self) -> dict[str, Allowed]:
        # max_length is cut to the model's positions when it trains (the model may come from init), so no upper end
        return {
            "task": one_of(TASKS, "task"),
            "init": optional(Allowed(lambda v: isinstance(v, str) and v != "", "a model folder"), "from scratch"),
            "model": model_preset(),
            "tokenizer": optional(tokenizer_spec(), "the init's"),
            "train_per_label": optional(integer(1), "the paper's sampling"),
            "test_per_label": optional(integer(1), "the paper's sampling"),
            "max_length": integer(MIN_TOKENS),
            "dropout": optional(DROPOUT, "the model's own"),
            **TRAINING_RULES,
            "test_fraction": number(0, 1),
            "validation_fraction": number(0, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        return _drop_defaults(self, self.flat_dict(), (*USER_DATA_FIELDS, "dropout"))


USER_DATA_FIELDS = ("train_file", "test_file", "test_fraction", "validation_fraction", "text_column", "label_column",
                    "dataset", "train_split", "test_split", "no_header")


PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    # Paper: 50 epochs, AdamW 5e-5, wd 0.01, batch 32, linear schedule stepped per epoch, 20k/40k/90k articles.
    "paper": PretrainConfig(
        model="bert-6", tokenizer="bert-base-uncased", articles=90_000, epochs=50, batch_size=32, lr=5e-5,
        weight_decay=0.01, schedule="epoch", grad_clip=0.0, save_every=2000,
    ),
    "cpu": PretrainConfig(model="cpu-1", tokenizer="train", articles=4000, epochs=4, lr=1e-3, warmup_ratio=0.05),
    # 11,500 of the demo sample's 12,000 openings: the other 500 are its held-out set (tinylm.train.mlm_quality).
    # 40 % masking: more MLM signal per step, which the short CPU budgets need; batch 16 at lr 2e-3: twice the
    # optimizer steps of batch 32 in the same wall time on one thread (docs/cpu_scale.md).
    "demo": PretrainConfig(
        model="demo", tokenizer="train", articles=11_500, epochs=8, batch_size=16, lr=2e-3, warmup_ratio=0.05,
        mask_prob=0.4,
    ),
}

FINETUNE_PRESETS: dict[str, FinetuneConfig] = {
    "paper": FinetuneConfig(
        model="bert-6", epochs=50, batch_size=32, lr=5e-5, schedule="epoch", grad_clip=0.0, save_every=2000
    ),
    "cpu": FinetuneConfig(model="cpu-1", epochs=4, lr=2e-4),
    # Few labelled examples (100 per class): the regime where pre-training pays off at demo scale
    # (docs/experiments.md).
    # 10 % warm-up and dropout 0.1 keep every fine-tuning from collapsing (chosen on validation texts).
    "demo": FinetuneConfig(model="demo", epochs=20, lr=5e-4, warmup_ratio=0.1, dropout=0.1, train_per_label=100,
                           test_per_label=250),
}


def resolve_model_config(name_or_config: str | ModelConfig) -> ModelConfig:
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    try:
        return MODEL_PRESETS[name_or_config]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name_or_config!r}; choose from {', '.join(MODEL_PRESETS)}"
        ) from None


def _drop_defaults(cfg: Any, d: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """`d` without those of the fields `names` that hold their default: fields added after runs were cached, so a
    config that leaves them alone keeps its config hash (and its cached run)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    return {k: v for k, v in d.items() if k not in names or v != defaults[k]}


def config_hash(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable configs (used to key caches and runs)."""
    blob = json.dumps([p.to_dict() if hasattr(p, "to_dict") else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def replace(cfg: Any, **overrides: Any) -> Any:
    """dataclasses.replace that ignores None overrides (unset CLI flags)."""
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


__all__ = [
    "FINETUNE_PRESETS",
    "MODEL_PRESETS",
    "PRETRAIN_PRESETS",
    "FinetuneConfig",
    "ModelConfig",
    "PretrainConfig",
    "TrainArgs",
    "config_hash",
    "replace",
    "resolve_model_config",
]
