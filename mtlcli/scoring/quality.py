"""Did a task learn anything? Each task's scores against always answering its most common label.

A fine-tuned model that does not clearly beat that constant answer has learned little or nothing
for the task, and a user must hear so rather than find out in production.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtlcli.scoring import metrics
from mtlcli import vocabulary as vocab
from mtlcli.data.tables import MISSING

F1_MARGIN = 0.10  # macro-F1 must beat the better of the two baselines by this much to count as learned


def majority_baseline(y: np.ndarray, n_labels: int) -> dict[str, Any] | None:
    """Accuracy and macro-F1 of always answering the most common label of ``y`` (labelled rows only),
    and the macro-F1 of guessing at random by label frequency: 1 / the number of labels present
    (each label's precision and recall are then its share). A constant answer has a low macro-F1 by
    construction, so a model that only guesses would look good against it alone."""
    y = y[y != MISSING]
    if not len(y):
        return None
    counts = np.bincount(y, minlength=n_labels)
    common = int(counts.argmax())
    cm = metrics.confusion(y, np.full_like(y, common), n_labels)
    return {"label": common, "accuracy": metrics.accuracy(cm), "macro_f1": metrics.macro_f1(cm),
            "chance_macro_f1": 1.0 / int((counts > 0).sum())}


def check_task(task: str, accuracy: float | None, macro_f1: float | None, y: np.ndarray,
               labels: list[str]) -> dict[str, Any] | None:
    """The task's scores beside the constant answer's, with a warning when it is not clearly beaten."""
    base = majority_baseline(y, len(labels))
    if base is None or accuracy is None or macro_f1 is None:
        return None
    learned = (macro_f1 >= max(base["macro_f1"], base["chance_macro_f1"]) + F1_MARGIN
               and accuracy >= base["accuracy"])
    check = {"accuracy": accuracy, "macro_f1": macro_f1, "majority_label": labels[base["label"]],
             "majority_accuracy": base["accuracy"], "majority_macro_f1": base["macro_f1"],
             "chance_macro_f1": base["chance_macro_f1"], "learned": learned}
    if not learned:
        check["warning"] = (
            f"task '{task}' has not clearly learned: accuracy {accuracy:.3f} and macro-F1 {macro_f1:.3f}, where always "
            f"answering '{labels[base['label']]}' gives {base['accuracy']:.3f} and {base['macro_f1']:.3f}, and random "
            f"guesses a macro-F1 of {base['chance_macro_f1']:.3f}; try more --epochs, a higher --lr-backbone or "
            f"--lr-heads, or --class-weight {task}=balanced")
    return check


def task_checks(row: dict[str, Any], val, label_sets: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Every task of a training run's best epoch (``row``, a metrics row) on the validation rows ``val``."""
    checks = {}
    for task, labels in label_sets.items():
        accuracy, macro_f1 = (row.get(vocab.key(vocab.VAL, task, m)) for m in (vocab.ACCURACY, vocab.MACRO_F1))
        check = check_task(task, accuracy, macro_f1, val.labels[task], labels)
        if check:
            checks[task] = check
    return checks
