"""Score a trained run on labelled data: the same evaluation training ran on its validation rows.

``score`` returns a plain dict (JSON-ready) so the CLI, files and tests all read the same numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data import tables as data_mod
from mtlcli import vocabulary as vocab
from mtlcli.tasks import columns, metrics
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind
from mtlcli.scoring import quality
from mtlcli.errors import UserError


def unknown_labels(table: data_mod.Table, tasks: dict[str, Task]) -> dict[str, dict[str, int]]:
    """Per task, the labels in ``table`` the run never saw and how many rows carry each."""
    found = {name: kind(task).unknown(task, table.labels[name]) for name, task in tasks.items() if name in table.labels}
    return {name: labels for name, labels in found.items() if labels}


def score(loaded, path: str | Path, text_column: str | None = None, ignore_unknown: bool = False,
          batch_size: int | None = None, delimiter: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each task's loss and its type's metrics: for classification accuracy, macro-F1, per-class
    P/R/F1/support and the confusion matrix; for multi-label the F1s, subset accuracy and per-label
    scores at the run's thresholds; for regression MAE, RMSE, Spearman and R².

    Every task of the run that has a column in the file is scored; a row with an empty cell is left
    out of that task. A label the run never saw is an error, or with ``ignore_unknown`` that row is
    left out of that task (the counts come back under ``"ignored"``).

    Returns the report and, per task whose outputs are values (regression), its ``points``: the
    true and predicted value of each labelled row (too many for the report; pictures draw them).
    """
    from mtlcli.data.batching import encode

    text_column = text_column or loaded.text_column
    tasks = loaded.tasks
    header = data_mod.read_header(path, delimiter)
    present = [t for t in tasks if t in header]
    if not present:
        raise UserError(f"{path}:1: no column for any task of the run (tasks: {', '.join(tasks)}; "
                        f"columns: {', '.join(header)})")
    table = data_mod.read_table(path, text_column, present, delimiter)
    ignored = unknown_labels(table, tasks) if ignore_unknown else {}
    targets = columns.encode_targets(table, tasks, ignore_unknown=ignore_unknown,
                                     hint="; --ignore-unknown leaves such rows out of that task")
    encoded = encode(loaded.tokenizer, table.texts, targets, loaded.max_length)
    report, result = score_encoded(loaded, encoded, batch_size)
    if ignored:
        report["ignored"] = ignored
    found = {name: points(tasks[name], r["outputs"], encoded.labels[name]) for name, r in result["tasks"].items()}
    return report, {name: p for name, p in found.items() if p is not None}


def points(task: Task, outputs: np.ndarray, targets: np.ndarray) -> dict[str, list[float]] | None:
    """A value task's labelled rows as (true, predicted) values in the column's units, for a
    predicted-vs-true chart; None for a task whose outputs are not values."""
    kind_ = kind(task)
    if not hasattr(kind_, "values") or outputs.ndim != 1:
        return None
    labelled = np.asarray(kind_.labelled(targets))
    return {"true": [float(v) for v in kind_.values(task, np.asarray(targets)[labelled])],
            "predicted": [float(v) for v in outputs[labelled]]}


def score_encoded(loaded, encoded, batch_size: int | None = None,
                  per_row: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one scoring routine of a run on labelled rows, for ``mtl eval`` and the report's validation
    analysis: validation's evaluation with the run's objective (class weights, label smoothing) and
    decisions (thresholds), so every loss is the one training minimised. Returns the JSON-ready
    report, and evaluation's own result (with each row's outputs, and loss when ``per_row``)."""
    from mtlcli.scoring.evaluation import evaluate

    result = evaluate(loaded.model, loaded.combiner, encoded, loaded.tasks, loaded.device, loaded.amp,
                      loaded.pad_id, loaded.max_length, loaded.objective, batch_size=batch_size, per_row=per_row,
                      precision=loaded.precision)
    report: dict[str, Any] = {"n": len(encoded), "loss": _finite(result["loss"]), "tasks": {}}
    for name, r in result["tasks"].items():
        task = loaded.tasks[name]
        entry = task_entry(task, r)
        check = quality.check_task(task, r, encoded.labels[name])
        if check:
            entry["baseline"] = {k: _finite(v) if isinstance(v, float) else v for k, v in check.items()
                                 if k != "warning" and k not in r}  # a constant's Spearman is NaN: null
            if "warning" in check:
                entry["warning"] = check["warning"]
        report["tasks"][name] = entry
    return report, result


def task_entry(task: Task, r: dict[str, Any]) -> dict[str, Any]:
    """One task's part of the report: its type, rows, loss and metrics, and its type's details."""
    if "confusion_matrix" in r:
        return {"type": task.type, **task_report(r["confusion_matrix"], task.labels, r["loss"])}
    entry = {"type": task.type, "n": r["n"], "loss": _finite(r["loss"]),
             **{m.name: _finite(r[m.name]) for m in kind(task).metrics if m.name in r and m != vocab.LOSS}}
    if task.labels:
        entry["labels"] = list(task.labels)
    for key in ("thresholds",):
        if key in task.params:
            entry[key] = [round(float(v), 6) for v in task.params[key]]
    if "per_label" in r:
        entry["per_label"] = r["per_label"]
    return entry


def task_report(cm: np.ndarray, labels: list[str], loss: float) -> dict[str, Any]:
    precision, recall, f1, support = metrics.per_class(cm)
    return {
        "n": int(cm.sum()),
        "loss": _finite(loss),
        "accuracy": _finite(metrics.accuracy(cm)),
        "macro_f1": _finite(metrics.macro_f1(cm)),
        "labels": list(labels),
        "confusion_matrix": cm.astype(int).tolist(),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
    }


def _finite(value: float) -> float | None:
    """NaN (a task with no labelled rows) becomes null: JSON has no NaN."""
    return None if value is None or math.isnan(value) else float(value)
