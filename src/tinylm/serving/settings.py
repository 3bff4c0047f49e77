"""The server's limits and batching knobs, in one frozen object shared by the app, the batcher and the CLI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServeSettings:
    # Input limits: each exists so one client cannot make the server slow for everyone else.
    max_texts: int = 64  # texts in one request
    max_chars: int = 5000  # characters in one text (the model reads 128 tokens; this bounds tokenizer work)
    max_body_bytes: int = 1 << 20  # request body; larger bodies get 413 before they are parsed
    # Micro-batching: one forward pass serves the requests that arrive within max_wait_ms, up to max_batch texts.
    max_batch: int = 32
    max_wait_ms: float = 2.0
    # A micro-batch is sorted by length and run in chunks of this many texts: padding every text to the longest
    # of 32 wastes more (AG News texts range from 20 to 128 tokens) than the extra passes cost on a CPU.
    chunk: int = 8
    # Texts waiting for a forward pass; past this the server answers 503 (shed load) instead of queueing forever.
    max_queue: int = 2048

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < (0 if f.name == "max_wait_ms" else 1):
                raise ValueError(f"{f.name} must be positive, got {getattr(self, f.name)}")
        if self.max_queue < self.max_texts:
            raise ValueError(f"max_queue ({self.max_queue}) must hold at least one full request ({self.max_texts})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
