"""Data loading for tinylm: Wikipedia articles for pre-training and the fine-tuning tasks, strictly checked."""

from tinylm.data.errors import DataError
from tinylm.data.examples import Example, TaskData
from tinylm.data.fewrel import fewrel_label_names, fewrel_text, read_fewrel
from tinylm.data.paths import data_root
from tinylm.data.sampling import balanced_sample, balanced_split
from tinylm.data.tasks import (
    HUB_DATASETS,
    PAPER_SAMPLING,
    TASKS,
    clean_text,
    examples_from_hub,
    hub_label_names,
    load_task,
    read_classes,
    read_label_csv,
    read_label_jsonl,
)
from tinylm.data.wikipedia import (
    HUB_WIKIPEDIA,
    Article,
    article_from_record,
    articles_from_records,
    articles_path,
    load_articles,
    read_articles,
)

__all__ = [
    "HUB_DATASETS",
    "HUB_WIKIPEDIA",
    "PAPER_SAMPLING",
    "TASKS",
    "Article",
    "DataError",
    "Example",
    "TaskData",
    "article_from_record",
    "articles_from_records",
    "articles_path",
    "balanced_sample",
    "balanced_split",
    "clean_text",
    "data_root",
    "examples_from_hub",
    "fewrel_label_names",
    "fewrel_text",
    "hub_label_names",
    "load_articles",
    "load_task",
    "read_articles",
    "read_classes",
    "read_fewrel",
    "read_label_csv",
    "read_label_jsonl",
]
