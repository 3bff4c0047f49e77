"""The one way to get a run's task sample: `task_sample` reads what a fine-tuning config asks for (a
FinetuneConfig, a stored config's dict, or parsed arguments with the same names): the user's own data
(LabelledSource's fields) or, when it names none, the built-in task, sampled as the config says."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from tinylm.data.examples import TaskData
from tinylm.data.user_files import LabelledSource, load_task_data

# A config's sampling settings, with the defaults FinetuneConfig has.
SETTINGS: dict[str, Any] = {"task": None, "train_per_label": None, "test_per_label": None, "data_seed": 42,
                            "fewrel_markers": False, "data_source": "local"}


def task_sample(cfg: Any, root: str | os.PathLike | None = None, *, test_only: bool = False,
                label_names: Sequence[str] | None = None, **overrides: Any) -> TaskData:
    """The examples `cfg` asks for. `overrides` replace any of SETTINGS (None keeps cfg's); test_only: the test
    sample alone (no training examples, so no validation split either), as evaluation and export read it;
    label_names: the labels the user's test file must use (a model's own)."""
    spec = SimpleNamespace(**cfg) if isinstance(cfg, Mapping) else cfg
    value = {k: overrides[k] if overrides.get(k) is not None else getattr(spec, k, d) for k, d in SETTINGS.items()}
    source = LabelledSource.of(spec)
    if test_only:
        source, value["train_per_label"] = dataclasses.replace(source, validation_fraction=0.0), 0
    elif source.given:
        source.require(train=True)
    return load_task_data(source, value["task"], root, train_per_label=value["train_per_label"],
                          test_per_label=value["test_per_label"], seed=value["data_seed"],
                          fewrel_markers=value["fewrel_markers"], data_source=value["data_source"],
                          label_names=label_names)


__all__ = ["SETTINGS", "task_sample"]
