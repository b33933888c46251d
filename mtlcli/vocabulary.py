"""What an epoch logs, by name: the one place that spells and reads the keys of metrics.jsonl.

A row of metrics.jsonl (and summary.json's ``best_metrics``) holds one epoch's numbers. A task's
score on a split is ``{split}_{task}_{suffix}`` (``val_sentiment_acc``, ``train_topic_loss``); the
combined objective is ``{split}_loss``. Training writes keys with ``key``, readers take them apart
with ``parse`` and ``tasks``, so the file's format is written down once and old runs read the same.

A metric is a name plus what a reader needs to show it (``Metric``); a task type brings its own
list of them (``CLASSIFICATION``), and ``METRICS`` knows every one a row may hold.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Iterable, NamedTuple

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)  # test: --test's scores, which summary.json holds (never a metrics.jsonl row)

# an epoch's other entries: its number, how long it took, and how fast training went
EPOCH = "epoch"
SECONDS = "seconds"
TRAIN_SECONDS = f"{TRAIN}_seconds"
TRAIN_SPEED = f"{TRAIN}_sentences_per_s"


@dataclass(frozen=True)
class Metric:
    """One score of a task: ``name`` as scoring returns it, ``suffix`` as metrics.jsonl spells it,
    ``label`` as a page shows it, ``column`` as a narrow table heads it."""

    name: str
    suffix: str
    label: str
    column: str
    higher_is_better: bool = True


LOSS = Metric("loss", "loss", "loss", "loss", higher_is_better=False)
ACCURACY = Metric("accuracy", "acc", "accuracy", "acc")
MACRO_F1 = Metric("macro_f1", "f1", "macro-F1", "macro-F1")

MICRO_F1 = Metric("micro_f1", "microf1", "micro-F1", "micro-F1")
SAMPLES_F1 = Metric("samples_f1", "samplesf1", "samples-F1", "samp-F1")
SUBSET_ACCURACY = Metric("subset_accuracy", "subsetacc", "subset accuracy", "subset")
MAE = Metric("mae", "mae", "MAE", "MAE", higher_is_better=False)
RMSE = Metric("rmse", "rmse", "RMSE", "RMSE", higher_is_better=False)
SPEARMAN = Metric("spearman", "spearman", "Spearman", "Spearman")
R2 = Metric("r2", "r2", "R²", "R²")

# What each built-in task type logs, in the file's order (a suffix never holds '_', so keys parse
# without doubt whatever the task is called)
CLASSIFICATION = (LOSS, ACCURACY, MACRO_F1)
MULTILABEL = (LOSS, MACRO_F1, MICRO_F1, SAMPLES_F1, SUBSET_ACCURACY)
REGRESSION = (LOSS, RMSE, MAE, SPEARMAN, R2)
METRICS = {m.suffix: m for m in CLASSIFICATION + MULTILABEL + REGRESSION}  # every metric a row may hold, by suffix


def add_metrics(metrics: Iterable[Metric]) -> None:
    """Make a plugin task type's own metrics known, so rows holding them parse like the built-ins'."""
    for metric in metrics:
        if "_" in metric.suffix:
            raise ValueError(f"metric suffix '{metric.suffix}' holds '_': keys would not parse")
        known = METRICS.setdefault(metric.suffix, metric)
        if known != metric:
            raise ValueError(f"metric suffix '{metric.suffix}' is taken by {known.name}")


class Key(NamedTuple):
    split: str
    task: str | None  # None: the combined objective (``val_loss``)
    metric: Metric


def on_split(split: str, name: str) -> str:
    """``val`` + ``loss`` -> ``val_loss``; ``train`` + ``topic_acc`` -> ``train_topic_acc``."""
    return f"{split}_{name}"


def key(split: str, task: str | None, metric: Metric) -> str:
    """The key of ``metric`` of ``task`` on ``split`` (``task`` None: the combined objective)."""
    return on_split(split, metric.suffix if task is None else f"{task}_{metric.suffix}")


def split_of(name: str) -> str | None:
    """The split a key of a row is about (``train_seconds`` too), or None (``epoch``, ``lr_heads``)."""
    split, sep, _ = name.partition("_")
    return split if sep and split in SPLITS else None


def without_split(name: str) -> str:
    """``val_topic_acc`` -> ``topic_acc``; a key about no split as it is."""
    split = split_of(name)
    return name[len(split) + 1:] if split else name


def parse(name: str) -> Key | None:
    """``val_topic_acc`` -> (val, topic, ACCURACY); ``val_loss`` -> (val, None, LOSS); None for other keys."""
    split = split_of(name)
    if split is None:
        return None
    task, _, suffix = without_split(name).rpartition("_")
    metric = METRICS.get(suffix)
    if metric is None:
        return None
    return Key(split, task or None, metric)


VAL_LOSS = key(VAL, None, LOSS)  # what early stopping and the best checkpoint go by
TRAIN_LOSS = key(TRAIN, None, LOSS)


def improves(val_loss: float, best: float, min_delta: float = 0.0) -> bool:
    """Is an epoch with ``val_loss`` a new best over ``best``? Only a fall of more than ``min_delta``
    counts (NaN never does): the rule early stopping, the best checkpoint, plots and reports share."""
    return val_loss < best - min_delta


def best_epoch(val_losses: Iterable[tuple[int, float]], min_delta: float = 0.0) -> int | None:
    """The epoch training keeps as best for these (epoch, validation loss) pairs, in order: the
    first, then each that ``improves`` on the best so far; None if none counts (no epoch, or only
    NaN losses)."""
    best, kept = math.inf, None
    for epoch, loss in val_losses:
        if improves(loss, best, min_delta):
            best, kept = loss, epoch
    return kept


def tasks(names: Iterable[str]) -> list[str]:
    """The tasks a row (or any keys) has scores for, in the row's order."""
    found = (parse(n) for n in names)
    return list(dict.fromkeys(k.task for k in found if k is not None and k.task is not None))


def metrics(names: Iterable[str], task: str, split: str | None = None) -> list[Metric]:
    """The metrics a row holds for ``task`` (on ``split``, or on any), in the row's order."""
    found = (parse(n) for n in names)
    return list(dict.fromkeys(k.metric for k in found
                              if k is not None and k.task == task and split in (None, k.split)))


def task_metrics(names: Iterable[str], split: str | None = None) -> list[Metric]:
    """The metrics a row holds for any task (on ``split``, or on any), in the row's order: a table's columns."""
    found = (parse(n) for n in names)
    return list(dict.fromkeys(k.metric for k in found
                              if k is not None and k.task is not None and split in (None, k.split)))


def groups(names: Iterable[str], tasks: Iterable[str], split: str | None = None) -> list[tuple[list[Metric], list[str]]]:
    """``tasks`` grouped by the metrics the row holds for them (on ``split``, or on any), in the row's
    order: tasks of one type fall together, so a table per group has no empty cells."""
    names = list(names)
    out: dict[tuple[Metric, ...], list[str]] = {}
    for task in tasks:
        out.setdefault(tuple(metrics(names, task, split)), []).append(task)
    return [(list(found), members) for found, members in out.items() if found]


def headline(names: Iterable[str], task: str) -> Metric | None:
    """The score a short view shows for ``task``: the first metric the row holds that is not its loss."""
    return next((m for m in metrics(names, task) if m != LOSS), None)


def keys_of(names: Iterable[str], task: str | None, metric: Metric) -> list[str]:
    """The keys of ``metric`` of ``task`` the row holds, training's first."""
    names = set(names)
    return [k for k in (key(split, task, metric) for split in SPLITS) if k in names]


def scores(task: str, split: str, values: dict[str, Any]) -> dict[str, Any]:
    """A row's entries for ``task`` on ``split`` from scores by name (``{"loss": .., "accuracy": ..}``)."""
    by_name = {m.name: m for m in METRICS.values()}
    return {key(split, task, by_name[name]): value for name, value in values.items()}


def scores_on_test(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json's --test scores as keys of this vocabulary (``test_loss``, ``test_topic_acc``);
    {} for a run without them."""
    test = summary.get("test")
    if not isinstance(test, dict) or not isinstance(test.get("tasks"), dict):
        return {}
    by_name = {m.name: m for m in METRICS.values()}
    out = {key(TEST, None, LOSS): test.get("loss")}
    for task, found in test["tasks"].items():
        if isinstance(found, dict):  # summary.json is read from any run folder: a broken one shows less
            out.update({key(TEST, task, by_name[name]): value for name, value in found.items() if name in by_name})
    return out


def of_split(row: dict[str, Any], split: str) -> dict[str, Any]:
    """The entries of a row about ``split`` (``val_loss``, ``val_topic_acc``, ...)."""
    return {k: v for k, v in row.items() if split_of(k) == split}
