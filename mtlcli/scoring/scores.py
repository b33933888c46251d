"""Score a trained run on labelled data: the same evaluation training ran on its validation rows.

``score`` returns a plain dict (JSON-ready) so the CLI, files and tests all read the same numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data import tables as data_mod
from mtlcli.scoring import metrics
from mtlcli.scoring import quality
from mtlcli.errors import UserError


def unknown_labels(table: data_mod.Table, label_sets: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Per task, the labels in ``table`` the run never saw and how many rows carry each."""
    found: dict[str, dict[str, int]] = {}
    for task, values in table.labels.items():
        known = set(label_sets[task])
        counts = np.bincount(values.codes, minlength=len(values.names))  # rows per distinct cell
        unseen = {name: int(counts[code]) for code, name in enumerate(values.names)
                  if name and name not in known and counts[code]}
        if unseen:
            found[task] = unseen
    return found


def score(loaded, path: str | Path, text_column: str | None = None, ignore_unknown: bool = False,
          batch_size: int | None = None, delimiter: str | None = None) -> dict[str, Any]:
    """Loss, accuracy, macro-F1, per-class P/R/F1/support and the confusion matrix per task.

    Every task of the run that has a column in the CSV is scored; a row with an empty cell is left
    out of that task. A label the run never saw is an error, or with ``ignore_unknown`` that row is
    left out of that task (the counts come back under ``"ignored"``).
    """
    from mtlcli.data.batching import encode

    text_column = text_column or loaded.text_column
    tasks = list(loaded.label_sets)
    header = data_mod.read_header(path, delimiter)
    present = [t for t in tasks if t in header]
    if not present:
        raise UserError(f"{path}:1: no column for any task of the run (tasks: {', '.join(tasks)}; "
                        f"columns: {', '.join(header)})")
    table = data_mod.read_table(path, text_column, present, delimiter)
    ignored = unknown_labels(table, loaded.label_sets) if ignore_unknown else {}
    label_ids = data_mod.encode_labels(table, loaded.label_sets, ignore_unknown=ignore_unknown,
                                       unknown_hint="; --ignore-unknown leaves such rows out of that task")
    encoded = encode(loaded.tokenizer, table.texts, label_ids, loaded.max_length)
    report, _ = score_encoded(loaded, encoded, batch_size)
    if ignored:
        report["ignored"] = ignored
    return report


def score_encoded(loaded, encoded, batch_size: int | None = None,
                  per_row: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one scoring routine of a run on labelled rows, for ``mtl eval`` and the report's validation
    analysis: validation's evaluation with the run's objective (class weights, label smoothing), so
    every loss is the one training minimised. Returns the JSON-ready report, and evaluation's own
    result (with each row's probabilities and loss when ``per_row``)."""
    from mtlcli.scoring.evaluation import evaluate

    result = evaluate(loaded.model, loaded.combiner, encoded, loaded.label_sets, loaded.device, loaded.amp,
                      loaded.pad_id, loaded.max_length, loaded.objective, batch_size=batch_size, per_row=per_row)
    report: dict[str, Any] = {"n": len(encoded), "loss": _finite(result["loss"]), "tasks": {}}
    for task, r in result["tasks"].items():
        report["tasks"][task] = task_report(r["confusion_matrix"], loaded.label_sets[task], r["loss"])
        check = quality.check_task(task, report["tasks"][task]["accuracy"], report["tasks"][task]["macro_f1"],
                                   encoded.labels[task], loaded.label_sets[task])
        if check:
            report["tasks"][task]["baseline"] = {k: check[k] for k in ("majority_label", "majority_accuracy",
                                                                       "majority_macro_f1", "chance_macro_f1",
                                                                       "learned")}
            if "warning" in check:
                report["tasks"][task]["warning"] = check["warning"]
    return report, result


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
