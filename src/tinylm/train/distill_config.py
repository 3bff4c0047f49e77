"""The distillation recipe's settings (tinylm.train.distill trains with them), kept free of torch so that building the
CLI's parser stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from tinylm.config import MAX_SEED, MIN_TOKENS, TRAINING_RULES, TrainArgs, model_preset
from tinylm.data.tasks import TASKS
from tinylm.validation import TEXT, Allowed, integer, number, one_of, optional, validate

INIT_MEMBER, INIT_SCRATCH = "member", "scratch"


@dataclass
class DistillConfig(TrainArgs):
    """Distillation recipe, and TrainArgs. Fields left None take the teacher's fine-tuning settings (task sample,
    data seed, max length), so the student trains on the committee's training texts and is tested on its test
    texts."""

    LOOP_AFTER: ClassVar[str] = "max_length"

    teacher: str  # a fine-tuned committee folder (or a single fine-tuned model), or its run folder
    init: str = INIT_MEMBER  # "member": a pre-trained committee member's encoder; "scratch"; or a model folder
    pretrained: str | None = None  # init="member": the pre-trained committee (default: the teacher's fine-tuning init)
    member: int = 0  # init="member": which member
    model: str | None = None  # init="scratch": a model preset (default: the teacher's member shape)
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft (KL) term; 1 - alpha weighs the labels' cross-entropy
    unlabeled: Literal["none", "pool", "wikipedia"] = "none"  # extra unlabeled text, soft targets only
    unlabeled_texts: int = 0  # how many extra texts (pool: drawn balanced over the labels, labels dropped)
    task: str | None = None
    train_per_label: int | None = None
    test_per_label: int | None = None
    max_length: int | None = None
    # TrainArgs' fields here, with this recipe's defaults; seed: the student's initialisation (head), data order
    # and dropout; data_seed: the task sample's (default: the teacher's), extra texts use data_seed + 1
    epochs: int = field(default=10, kw_only=True)
    data_seed: int | None = field(default=None, kw_only=True)
    compile: bool = False

    def __post_init__(self) -> None:
        validate(self)
        if (self.unlabeled == "none") != (self.unlabeled_texts == 0):
            raise ValueError("DistillConfig: give both unlabeled (pool or wikipedia) and unlabeled_texts > 0, "
                             "or neither")
        if self.model is not None and self.init != INIT_SCRATCH:
            raise ValueError("DistillConfig.model: a preset applies to a scratch student only (init='scratch')")

    def rules(self) -> dict[str, Allowed]:
        return {
            **TRAINING_RULES,
            "teacher": TEXT,
            "init": TEXT,
            "pretrained": optional(TEXT, "the teacher's fine-tuning init"),
            "member": integer(0),
            "model": optional(model_preset(), "the teacher's member shape"),
            "temperature": number(0, open_low=True),
            "alpha": number(0, 1, open_high=False),
            "unlabeled_texts": integer(0),
            "task": optional(one_of(TASKS, "task"), "the teacher's"),
            "train_per_label": optional(integer(1), "the teacher's"),
            "test_per_label": optional(integer(1), "the teacher's"),
            "max_length": optional(integer(MIN_TOKENS), "the teacher's"),
            "data_seed": optional(integer(0, MAX_SEED), "the teacher's"),
        }

    def to_dict(self) -> dict[str, Any]:
        return self.flat_dict()


DISTILL_HELP = {
    "teacher": "the fine-tuned committee (or model) folder, or its run folder, whose soft votes the student learns",
    "init": "member (a pre-trained member's encoder, default), scratch, or a model folder",
    "pretrained": "init member: the pre-trained committee (default: the one the teacher was fine-tuned from)",
    "member": "init member: which member (default 0)",
    "model": "init scratch: a model preset (default: the teacher's member shape)",
    "temperature": "softmax temperature of both sides of the KL term (default 2)",
    "alpha": "weight of the soft (KL) term; 1 - alpha weighs the labels' cross-entropy (default 0.5)",
    "unlabeled": "extra unlabeled text with soft targets only: none, pool (the task's unused training pool, "
                 "labels dropped) or wikipedia (article openings)",
    "unlabeled_texts": "how many extra texts (with --unlabeled)",
}
