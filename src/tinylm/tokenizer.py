"""WordPiece tokenizers: the paper's bert-base-uncased vocabulary, or a small one trained on the articles.

Both come back as a `transformers.PreTrainedTokenizerFast`, so a saved model folder carries a tokenizer that
`AutoTokenizer.from_pretrained` reads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import tokenizers
from tokenizers import BertWordPieceTokenizer
from transformers import PreTrainedTokenizerFast

from tinylm.config import SHIPPED_MODELS, SHIPPED_VOCABS  # defined with the configs, which check tokenizer names
from tinylm.data.paths import cache_dir, data_root

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_VOCAB = "vocab/bert-base-uncased-vocab.txt"


def _wrap(backend: BertWordPieceTokenizer, max_length: int) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend._tokenizer,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )
    return tok


def from_vocab_file(path: str | os.PathLike, max_length: int = 128) -> PreTrainedTokenizerFast:
    """A lower-casing BERT WordPiece tokenizer over a vocab.txt (one token a line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocabulary file not found")
    # tokenizers' own constructor: transformers 5's BertTokenizer(vocab_file=...) silently ignores the file.
    return _wrap(BertWordPieceTokenizer(str(path), lowercase=True), max_length)


def train_wordpiece(texts: Sequence[str], vocab_size: int, max_length: int = 128) -> PreTrainedTokenizerFast:
    """Train a lower-casing WordPiece vocabulary on `texts`, cached by (texts, size).

    The `tokenizers` trainer breaks frequency ties in hash-map order, so two trainings on the same texts can
    differ by a few tokens and in id order. Caching the first result (in $TINYLM_CACHE) makes every later run
    on this machine use the very same vocabulary; ship the vocab.txt (as the demo does) for bit-identical
    runs across machines.
    """
    h = hashlib.sha256(f"wordpiece-{vocab_size}-{tokenizers.__version__}".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    cached = cache_dir() / f"vocab-{h.hexdigest()[:20]}.txt"
    if cached.is_file():
        return from_vocab_file(cached, max_length)
    backend = BertWordPieceTokenizer(lowercase=True)
    backend.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    vocab = sorted(backend.get_vocab().items(), key=lambda kv: kv[1])
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    os.replace(tmp, cached)
    return from_vocab_file(cached, max_length)


def shipped_folder(spec: str | os.PathLike) -> str | os.PathLike:
    """A shipped model's name (config.SHIPPED_MODELS) as its installed folder (checkpoint.shipped_model); any other
    spec as it is."""
    if str(spec) not in SHIPPED_MODELS:
        return spec
    from tinylm.checkpoint import shipped_model  # checkpoint loads torch; most specs never need it

    return shipped_model(spec) or spec


def vocabulary_file(spec: str | os.PathLike, root: str | os.PathLike | None = None) -> Path | None:
    """The file a tokenizer spec's vocabulary is read from: the shipped vocab.txt, the data folder's bert-base-uncased
    vocabulary, a vocab.txt given as a file, or a folder's (or a shipped model's) tokenizer.json (else its vocab.txt);
    None for bert-base-uncased when the data folder lacks it (the hub's copy). FileNotFoundError where the spec
    names none."""
    spec_str = str(shipped_folder(spec))
    if spec_str in SHIPPED_VOCABS:
        return SHIPPED_VOCABS[spec_str]
    if spec_str == "bert-base-uncased":
        local = data_root(root) / BERT_VOCAB
        return local if local.is_file() else None
    path = Path(spec_str)
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).is_file():
                return path / name
    raise FileNotFoundError(f"{spec_str}: no tokenizer here (want 'bert-base-uncased', a folder or a vocab.txt)")


def load_tokenizer(spec: str | os.PathLike, root: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """'bert-base-uncased' (the shared vocabulary, else the hub), 'tinylm-wiki-4k', a shipped model's name
    ('tinylm-mini'), a folder, or a vocab.txt."""
    spec = shipped_folder(spec)
    path = vocabulary_file(spec, root)
    if path is None:
        from transformers import AutoTokenizer  # online users: the hub's copy

        return AutoTokenizer.from_pretrained("bert-base-uncased")
    if path.name == "tokenizer.json" and path.parent == Path(str(spec)):  # a tokenizer folder
        return PreTrainedTokenizerFast.from_pretrained(str(path.parent))
    return from_vocab_file(path)
