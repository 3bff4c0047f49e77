"""FewRel: the strict reader of its {relation id: [instances]} files, instance texts and relation names."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tinylm.data.errors import DataError, RecordError
from tinylm.data.examples import Example, TaskData
from tinylm.data.paths import data_root, read_text
from tinylm.data.sampling import balanced_split


def read_fewrel(path: str | os.PathLike[str], markers: bool = False) -> tuple[list[Example], list[str]]:
    """FewRel {relation id: [instances]} -> (examples, relation ids); label i is the i-th id in sorted order.

    Text is the tokens joined by single spaces (blank tokens dropped). markers=True wraps the first span of
    the head entity in [E1] ... [/E1] and of the tail in [E2] ... [/E2]. FewRel files are one JSON line, so
    a malformed instance is located by relation id and 1-based instance number instead of a line.
    """
    path = Path(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON: {err.msg} (column {err.colno})", err.lineno) from None
    if not isinstance(data, dict) or not data:
        raise DataError(path, "expected a non-empty JSON object {relation id: [instances]}")
    relation_ids = sorted(data)
    examples: list[Example] = []
    for label, relation in enumerate(relation_ids):
        instances = data[relation]
        if not isinstance(instances, list) or not instances:
            raise DataError(path, f"relation {relation}: expected a non-empty list of instances")
        for n, instance in enumerate(instances, 1):
            try:
                examples.append(Example(fewrel_text(instance, markers), label))
            except RecordError as err:
                raise DataError(path, f"relation {relation}, instance {n}: {err}") from None
    return examples, relation_ids


def fewrel_text(instance: object, markers: bool = False) -> str:
    """One FewRel instance as text (see read_fewrel); RecordError if it is malformed."""
    if not isinstance(instance, Mapping):
        raise RecordError(f"expected a JSON object, got {type(instance).__name__}")
    for key in ("tokens", "h", "t"):
        if key not in instance:
            raise RecordError(f"missing field {key!r}")
    tokens = instance["tokens"]
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise RecordError("'tokens' must be a non-empty list of strings")
    head = _entity_span(instance["h"], "head", len(tokens))
    tail = _entity_span(instance["t"], "tail", len(tokens))
    opens: dict[int, list[tuple[int, str]]] = {}
    closes: dict[int, list[tuple[int, str]]] = {}
    if markers:
        for (first, last), tag in ((head, "E1"), (tail, "E2")):
            opens.setdefault(first, []).append((-last, f"[{tag}]"))  # the longer span opens first
            closes.setdefault(last, []).append((-first, f"[/{tag}]"))  # the later-opened span closes first
    pieces: list[str] = []
    for i, token in enumerate(tokens):
        pieces += [tag for _, tag in sorted(opens.get(i, []))]
        pieces.append(token.strip())
        pieces += [tag for _, tag in sorted(closes.get(i, []))]
    text = " ".join(p for p in pieces if p)
    if not text:
        raise RecordError("all tokens are blank")
    return text


def _entity_span(entity: object, role: str, num_tokens: int) -> tuple[int, int]:
    """(first, last) token of an entity's first listed span; checks every listed position is in the sentence."""
    if not isinstance(entity, list | tuple) or len(entity) < 3 or not isinstance(entity[2], list) or not entity[2]:
        raise RecordError(f"{role} entity must be [name, id, [[token positions], ...]]")
    for span in entity[2]:
        if not isinstance(span, list) or not span:
            raise RecordError(f"{role} entity has an empty or malformed position list {span!r}")
        for pos in span:
            if not isinstance(pos, int) or isinstance(pos, bool):
                raise RecordError(f"{role} entity position {pos!r} is not an integer")
            if not 0 <= pos < num_tokens:
                raise RecordError(f"{role} entity position {pos} out of range (sentence has {num_tokens} tokens)")
    first = entity[2][0]
    return min(first), max(first)


def fewrel_label_names(path: str | os.PathLike[str], relation_ids: Sequence[str]) -> list[str]:
    """Readable relation names from the pid2name.json beside `path` ({id: [name, description]}).

    Without that file, or for an id it lacks, the id itself is the name; a name shared by two ids gets the
    id appended so label names stay unique.
    """
    mapping_path = Path(path).parent / "pid2name.json"
    if not mapping_path.is_file():
        return list(relation_ids)
    try:
        mapping = json.loads(read_text(mapping_path))
    except json.JSONDecodeError as err:
        raise DataError(mapping_path, f"invalid JSON: {err.msg} (column {err.colno})", err.lineno) from None
    if not isinstance(mapping, dict):
        raise DataError(mapping_path, "expected a JSON object {relation id: [name, description]}")
    names = [_relation_name(mapping.get(rid), rid) for rid in relation_ids]
    return [f"{name} ({rid})" if names.count(name) > 1 else name
            for name, rid in zip(names, relation_ids, strict=True)]


def _relation_name(entry: object, relation_id: str) -> str:
    """The name in a pid2name entry, or the id when the entry is missing or not [name, ...]."""
    if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0].strip():
        return entry[0].strip()
    return relation_id


def load_fewrel(
    root: str | os.PathLike[str] | None, n_train: int, n_test: int, seed: int, markers: bool
) -> TaskData:
    """FewRel from train_wiki.json (the paper's 64 relations) if present, else val_wiki.json, split per relation."""
    folder = data_root(root) / "fewrel"
    path = folder / "train_wiki.json"
    if not path.is_file():
        path = folder / "val_wiki.json"
    examples, relation_ids = read_fewrel(path, markers)
    label_names = fewrel_label_names(path, relation_ids)
    train, test = balanced_split(examples, n_train, n_test, len(relation_ids), seed,
                                 source=str(path), label_names=label_names)
    return TaskData("fewrel", label_names, train, test)
