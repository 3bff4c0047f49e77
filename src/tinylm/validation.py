"""The one check every recipe config runs when it is built: each field against a rule of what it may be.

A config's `rules()` says what its numeric and named fields may be; fields annotated with a `Literal` (schedule,
precision, data source) or `bool` get their rule from the annotation. `validate(cfg)` runs in each config's
`__post_init__`, so a config built by the CLI, the Python API or from a stored dict is checked before any run
starts, and a bad value is one ValueError naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Allowed:
    """What one setting may be: a test, and the words an error uses to say so.

    noun: set for names (a preset, a task): the error then reads "unknown <noun> <value>; choose from <text>".
    """

    test: Callable[[Any], bool]
    text: str
    noun: str = ""

    def problem(self, value: Any) -> str:
        if self.noun:
            return f"unknown {self.noun} {value!r}; choose from {self.text}"
        return f"{value!r} is not allowed; it must be {self.text}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:  # NaN and infinities are no setting's value
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, high: int | None = None, why: str = "") -> Allowed:
    text = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return Allowed(lambda v: _is_int(v) and low <= v and (high is None or v <= high),
                   f"{text} ({why})" if why else text)


def number(low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = True) -> Allowed:
    """A finite number in the interval from low to high (no upper end when high is None)."""

    def test(v: Any) -> bool:
        above = _is_number(v) and (v > low if open_low else v >= low)
        return above and (high is None or (v < high if open_high else v <= high))

    if high is None:
        return Allowed(test, f"a number {'>' if open_low else '>='} {low:g}")
    brackets = ("(" if open_low else "[", ")" if open_high else "]")
    return Allowed(test, f"a number in {brackets[0]}{low:g}, {high:g}{brackets[1]}")


def one_of(choices: Iterable[Any], noun: str) -> Allowed:
    names = tuple(choices)
    return Allowed(lambda v: isinstance(v, str) and v in names, ", ".join(map(str, names)), noun)


def optional(rule: Allowed, none_means: str) -> Allowed:
    return Allowed(lambda v: v is None or rule.test(v), f"{rule.text}, or None ({none_means})", rule.noun)


def each(rule: Allowed, *, allow_empty: bool = False) -> Allowed:
    """A tuple or list (non-empty unless allow_empty) whose every item passes `rule`."""
    return Allowed(lambda v: isinstance(v, tuple | list) and (allow_empty or len(v) > 0)
                   and all(rule.test(x) for x in v),
                   f"a{'' if allow_empty else ' non-empty'} sequence, each {rule.text}")


def instance_of(cls: type) -> Allowed:
    return Allowed(lambda v: isinstance(v, cls), f"a {cls.__name__}")


TEXT = Allowed(lambda v: isinstance(v, str) and v != "", "a non-empty string")
FLAG = Allowed(lambda v: isinstance(v, bool), "true or false")


@functools.cache
def _annotated_rules(cls: type) -> dict[str, Allowed]:
    """Rules a dataclass's annotations imply: a Literal's values, or true/false for a bool."""
    rules = {}
    for name, hint in typing.get_type_hints(cls).items():
        if typing.get_origin(hint) is typing.Literal:
            rules[name] = one_of(typing.get_args(hint), name.replace("_", " "))
        elif hint is bool:
            rules[name] = FLAG
    return rules


def field_rules(cfg: Any) -> dict[str, Allowed]:
    """Every rule of a config: its own `rules()` over what its annotations imply."""
    return {**_annotated_rules(type(cfg)), **cfg.rules()}


def check(owner: str, name: str, value: Any, rule: Allowed) -> None:
    if not rule.test(value):
        raise ValueError(f"{owner}.{name}: {rule.problem(value)}")


def reading_order(cls_or_cfg: Any) -> tuple[dataclasses.Field, ...]:
    """A dataclass's fields in the order its flags and checks list them (a recipe's own order, see
    config.TrainArgs), else in field order."""
    order = getattr(cls_or_cfg, "reading_order", None)
    return order() if order is not None else dataclasses.fields(cls_or_cfg)


def validate(cfg: Any) -> None:
    """Check each field of the dataclass `cfg` in its reading order (config.TrainArgs.reading_order, else field
    order); the first bad one is a ValueError."""
    rules = field_rules(cfg)
    for f in reading_order(cfg):
        if f.name in rules:
            check(type(cfg).__name__, f.name, getattr(cfg, f.name), rules[f.name])
