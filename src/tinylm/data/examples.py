"""The labelled-example types every task reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One labelled text; label is 0-based."""

    text: str
    label: int


@dataclass
class TaskData:
    """A task's sampled train and test examples and its label names (label i is label_names[i]); validation holds
    examples set aside from the training ones when a run asks for them (data.user_files.with_validation)."""

    name: str
    label_names: list[str]
    train: list[Example]
    test: list[Example]
    validation: list[Example] = field(default_factory=list)
    duplicates: int = 0  # rows of the user's files dropped as repeats (data.user_files.load_labelled)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)
