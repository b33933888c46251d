"""Multi-label: a cell holds a set of labels; a sigmoid and binary cross-entropy per label.

In delimited text the labels are joined by the separator (``|`` by default, ``--label-separator``);
a JSON Lines or Parquet cell may also be a list. An empty cell means "no value for this task"; a row
where none of the labels applies says so with ``[]``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from mtlcli import vocabulary as vocab
from mtlcli.data import rows as rows_mod
from mtlcli.data.tables import Labels
from mtlcli.errors import UserError, shown
from mtlcli.registry import task_types
from mtlcli.tasks import metrics
from mtlcli.tasks.base import Task, TaskType, Where, first_row
from mtlcli.tasks.classification import label_order

if TYPE_CHECKING:  # imported by the methods that run on a model's outputs (see tasks/base.py)
    import torch

DEFAULT_THRESHOLD = 0.5
MIN_POSITIVES = 5  # validation rows a label needs before its threshold is tuned (else 0.5)
F1_MARGIN = 0.05  # macro-F1 must beat the constant answer's by this much to count as learned
NONE = "[]"  # a cell that says: none of the labels applies


def split_cell(cell: str, separator: str) -> list[str] | None:
    """The labels of a cell, or None when it is not a valid set (an empty label between separators)."""
    if cell == NONE:
        return []
    if cell.startswith("[") and cell.endswith("]"):  # a JSON list, as JSON Lines and Parquet give one
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
            return [v.strip() for v in value]
    parts = [p.strip() for p in cell.split(separator)]
    return parts if all(parts) else None


def cell_sets(task: str, cells: Labels, where: Where, separator: str) -> list[list[str] | None]:
    """Each distinct cell's labels (None: the empty cell), checked: a bad cell names its line."""
    out: list[list[str] | None] = []
    for code, cell in enumerate(cells.names):
        if not cell:
            out.append(None)
            continue
        labels = split_cell(cell, separator)
        if labels is None:
            row = first_row(cells, code)
            if row is None:
                out.append(None)  # only in rows of the other split, which report it themselves
                continue
            raise UserError(f"{where(row)}: '{shown(cell)}' in multi-label column '{shown(task)}' has an empty label; "
                            f"join labels with '{separator}', and write {NONE} for a row where none applies")
        out.append(labels)
    return out


@task_types.register("multilabel")
class MultiLabel(TaskType):
    name = "multilabel"
    metrics = vocab.MULTILABEL
    headline = vocab.MACRO_F1
    min_labels = 1
    describe = "a set of labels per row (sigmoid, binary cross-entropy, a tuned threshold per label)"
    # Most labels of a tag set are rare (GoEmotions: 0.2% to 33% of rows), and unweighted, a rare
    # label's few positives hardly move its loss: its probability stays low everywhere and no
    # threshold finds it. Weighing its positives by negatives / positives lifted the 28 emotions'
    # validation macro-F1 from 0.389 to 0.518 after one epoch; the tuned thresholds keep precision.
    default_class_weight = "balanced"

    def fit(self, name: str, cells: Labels, where: Where, settings: dict[str, Any]) -> Task:
        separator = settings.get("label_separator") or "|"
        present = set(cells.present())
        found = {label for code, labels in enumerate(cell_sets(name, cells, where, separator))
                 if labels and cells.names[code] in present for label in labels}
        labels = sorted(found, key=label_order)
        return Task(name, self.name, labels, {"separator": separator,
                                              "thresholds": [DEFAULT_THRESHOLD] * len(labels)})

    def targets(self, task: Task, cells: Labels, where: Where, ignore_unknown: bool = False,
                hint: str = "") -> np.ndarray:
        index = {label: i for i, label in enumerate(task.labels)}
        table = np.zeros((len(cells.names), len(task.labels)), dtype=np.float32)
        for code, labels in enumerate(cell_sets(task.name, cells, where, task.params["separator"])):
            if labels is None:
                table[code] = np.nan
                continue
            for label in labels:
                if label in index:
                    table[code, index[label]] = 1.0
                elif ignore_unknown:
                    table[code] = np.nan
                    break
                elif (row := first_row(cells, code)) is not None:
                    raise UserError(f"{where(row)}: label '{shown(label)}' of task '{shown(task.name)}' is not one "
                                    f"the model knows (known: {rows_mod.listed(task.labels)}){hint}")
        return table[cells.codes]

    def unknown(self, task: Task, cells: Labels) -> dict[str, int]:
        known, found = set(task.labels), {}
        counts = np.bincount(cells.codes, minlength=len(cells.names))
        for code, labels in enumerate(cell_sets(task.name, cells, lambda i: "", task.params["separator"])):
            for label in labels or []:
                if label not in known and counts[code]:
                    found[label] = found.get(label, 0) + int(counts[code])
        return found

    def loss(self, task: Task, logits: torch.Tensor, targets: torch.Tensor, objective: Any,
             reduction: str = "sum") -> torch.Tensor:
        """Each labelled row's mean binary cross-entropy over the labels (so a row weighs as much as
        in a classification task, however many labels there are)."""
        from torch.nn import functional as F

        labelled = targets[:, 0] == targets[:, 0]
        y = targets.nan_to_num(nan=0.0)
        per_label = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none",
                                                       pos_weight=objective.weight(task.name, targets.device))
        rows = per_label.mean(-1) * labelled
        return rows.sum() if reduction == "sum" else rows

    def outputs(self, task: Task, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid()

    def predicted(self, task: Task, outputs: np.ndarray) -> np.ndarray:
        """0/1 per label: a label is predicted where its probability reaches its threshold."""
        return outputs >= np.asarray(task.params["thresholds"], dtype=np.float32)

    def tune(self, task: Task, targets: np.ndarray, outputs: np.ndarray) -> None:
        """Each label's threshold: the one that maximises its F1 on the validation rows."""
        task.params["thresholds"] = metrics.best_thresholds(targets, outputs, MIN_POSITIVES, DEFAULT_THRESHOLD).tolist()

    def score(self, task: Task, targets: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
        predicted = self.predicted(task, outputs)
        precision, recall, f1, support = metrics.per_label(targets, predicted)
        return {**metrics.multilabel_scores(targets, predicted),
                "per_label": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                              for label, p, r, f, n in zip(task.labels, precision, recall, f1, support)}}

    def baseline(self, task: Task, val: np.ndarray) -> dict[str, Any]:
        """Always each label's training frequency as its probability: whatever the threshold, that
        predicts a label on every row or on none; the better of the two is taken per label."""
        always = np.ones_like(val)
        best = np.where(metrics.per_label(val, always)[2] > 0, always, 0.0)
        return {"answer": "always each label's frequency", **metrics.multilabel_scores(val, best)}

    def learned(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> bool:
        return scores["macro_f1"] >= base["macro_f1"] + F1_MARGIN

    def decide(self, task: Task, outputs: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        """``{"labels": [...], "scores": [...], "top": [[label, p], ...]}``: the labels at or above
        their thresholds, most likely first, and the ``top_k`` most likely whatever the thresholds."""
        predicted = self.predicted(task, outputs)
        order = np.argsort(-outputs, axis=1, kind="stable")
        out = []
        for row, chosen, ranked in zip(outputs.tolist(), predicted.tolist(), order.tolist()):
            picked = [j for j in ranked if chosen[j]]
            out.append({"labels": [task.labels[j] for j in picked], "scores": [row[j] for j in picked],
                        "top": [[task.labels[j], row[j]] for j in ranked[:max(1, top_k)]]})
        return out

    def class_weights(self, task: Task, targets: np.ndarray) -> list[float]:
        """A positive weight per label, negatives / positives over the labelled rows: a rare label's
        few positives weigh as much in its loss as its many negatives."""
        rows = targets[targets[:, 0] == targets[:, 0]]
        positives = rows.sum(0)
        return [float((len(rows) - p) / p) if p else 1.0 for p in positives.tolist()]
