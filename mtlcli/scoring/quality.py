"""Did a task learn anything? Each task's scores against a constant answer its type chooses: always
the most common label (classification), each label's frequency (multi-label), the training mean
(regression).

A fine-tuned model that does not clearly beat that constant answer has learned little or nothing
for the task, and a user must hear so rather than find out in production.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtlcli import vocabulary as vocab
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind


def check_task(task: Task, scores: dict[str, Any], val: np.ndarray) -> dict[str, Any] | None:
    """The task's scores (by metric name) beside the constant answer's on the validation targets
    ``val``, with a warning when it is not clearly beaten; None without labelled rows or scores."""
    kind_ = kind(task)
    val = val[np.asarray(kind_.labelled(val))]
    if not len(val) or any(scores.get(m.name) is None for m in kind_.metrics if m != vocab.LOSS):
        return None
    base = kind_.baseline(task, val)
    learned = kind_.learned(task, scores, base)
    check = {**kind_.check_entries(task, scores, base), "learned": learned}
    if not learned:
        check["warning"] = kind_.warning(task, scores, base)
    return check


def task_checks(row: dict[str, Any], val, tasks: dict[str, Task]) -> dict[str, dict[str, Any]]:
    """Every task of a training run's best epoch (``row``, a metrics row) on the validation rows
    ``val`` (an Encoded, whose labels are the targets)."""
    checks = {}
    for name, task in tasks.items():
        scores = {m.name: row.get(vocab.key(vocab.VAL, name, m)) for m in kind(task).metrics}
        check = check_task(task, scores, val.labels[name])
        if check:
            checks[name] = check
    return checks
