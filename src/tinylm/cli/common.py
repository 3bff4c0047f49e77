"""What several sub-commands share: config fields as flags, the data flags' check, the runtime flags, JSON output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Sequence
from typing import Any

from tinylm.config import replace
from tinylm.data.user_files import LabelledSource
from tinylm.validation import reading_order

# The same names as tinylm.inference.predictor.RUNTIMES, spelled out so that building the parser imports no torch.
RUNTIMES = ("torch", "onnx")


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def flag_type(hint: Any) -> tuple[Any, list[Any] | None]:
    """The argparse type (and choices) of a config field's annotation."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return type(args[0]), list(args)
    if hint is bool:
        return parse_bool, None
    if hint in (int, float, str):
        return hint, None
    # Optional[X] and other unions: take the first concrete type
    kind = next((a for a in args if a in (int, float, str)), str)
    if args and all(typing.get_origin(a) is typing.Literal for a in args if a is not type(None)):
        kind = str
    return kind, None


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, only: Sequence[str] | None = None,
                     exclude: Sequence[str] = (), helps: dict[str, str] | None = None) -> None:
    """One `--field` flag per dataclass field (or per field in `only`, less `exclude`), typed from its annotation
    (a bool's flag alone means true); default None = keep the preset's. `helps` gives some fields a help text."""
    hints = typing.get_type_hints(cls)
    for f in reading_order(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        kind, choices = flag_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        switch = {"nargs": "?", "const": True} if kind is parse_bool else {}  # `--no-header` = `--no-header true`
        parser.add_argument(flag, dest=f.name, type=kind, choices=choices, default=None,
                            help=(helps or {}).get(f.name, "(preset: see `tinylm presets`)"), **switch)


def config_from_args(cls: type, presets: dict[str, Any], args: argparse.Namespace) -> Any:
    base = presets[args.preset]
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}  # a command may offer a few
    return replace(base, **overrides)


def task_or_own_data(args: argparse.Namespace) -> LabelledSource:
    """The data flags of `evaluate` and `overlap`: --task NAME or the user's own data, exactly one of them."""
    source = LabelledSource.of(args)
    if bool(args.task) == source.given:
        raise ValueError("give --task NAME or your own data (--train-file, --test-file or --dataset), one of them")
    return source


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """--runtime and --onnx, of `predict` and `serve`."""
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="torch (default) or onnx (needs `tinylm export onnx MODEL_DIR` first)")
    parser.add_argument("--onnx", default=None, help="the ONNX graph (default: MODEL_DIR/model.onnx)")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def without_tables(result: dict[str, Any]) -> dict[str, Any]:
    """A training result as printed: the per-class table and confusion matrix stay in its metrics file."""
    return {k: v for k, v in result.items() if k not in ("per_class", "confusion_matrix")}
