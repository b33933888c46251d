"""Single-label classification: each cell is one class; softmax and cross-entropy."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from mtlcli import vocabulary as vocab
from mtlcli.data import rows as rows_mod
from mtlcli.data.tables import MISSING, Labels
from mtlcli.errors import UserError, shown
from mtlcli.registry import task_types
from mtlcli.tasks import metrics
from mtlcli.tasks.base import Task, TaskType, Where

if TYPE_CHECKING:  # imported by the methods that run on a model's outputs (see tasks/base.py)
    import torch

F1_MARGIN = 0.10  # macro-F1 must beat the better of the two baselines by this much to count as learned


WHOLE_AS_FLOAT = re.compile(r"[+-]?[0-9]+\.0+")  # 5.0: how pandas writes a whole number in a column with gaps


def as_known(label: str, known) -> str:
    """``label`` as the task knows it: a whole number written as a float (``5.0``) is the learned
    whole number (``5``) where that is a label and ``5.0`` itself is not; any other label is itself."""
    if label in known or not WHOLE_AS_FLOAT.fullmatch(label):
        return label
    whole = str(int(label.split(".")[0]))
    return whole if whole in known else label


def label_order(label: str):
    """Integer labels sort as numbers (2 before 10); others as strings."""
    try:
        return (0, int(label), "")
    except ValueError:
        return (1, 0, label)


@task_types.register("classification")
class Classification(TaskType):
    name = "classification"
    metrics = vocab.CLASSIFICATION
    headline = vocab.MACRO_F1
    train_metric = vocab.ACCURACY
    min_labels = 2
    describe = "one label per row (softmax, cross-entropy)"

    def fit(self, name: str, cells: Labels, where: Where, settings: dict[str, Any]) -> Task:
        return Task(name, self.name, sorted(cells.present(), key=label_order))

    def targets(self, task: Task, cells: Labels, where: Where, ignore_unknown: bool = False,
                hint: str = "") -> np.ndarray:
        unknown = MISSING if ignore_unknown else -1
        index = {label: i for i, label in enumerate(task.labels)}
        lookup = np.array([index.get(as_known(name, index), unknown) if name else MISSING for name in cells.names],
                          dtype=np.int64)
        ids = lookup[cells.codes]
        bad = np.flatnonzero(ids == -1)
        if len(bad):
            raise UserError(f"{where(bad[0])}: label '{shown(cells[bad[0]])}' of task '{shown(task.name)}' is not one "
                            f"the model knows (known: {rows_mod.listed(task.labels)}){hint}")
        return ids

    def unknown(self, task: Task, cells: Labels) -> dict[str, int]:
        known = set(task.labels)
        counts = np.bincount(cells.codes, minlength=len(cells.names))
        return {name: int(counts[code]) for code, name in enumerate(cells.names)
                if name and as_known(name, known) not in known and counts[code]}

    def labelled(self, targets):
        return targets != MISSING

    def loss(self, task: Task, logits: torch.Tensor, targets: torch.Tensor, objective: Any,
             reduction: str = "sum") -> torch.Tensor:
        from torch.nn import functional as F

        return F.cross_entropy(logits.float(), targets, weight=objective.weight(task.name, targets.device),
                               ignore_index=MISSING, reduction=reduction, label_smoothing=objective.label_smoothing)

    def train_hits(self, task: Task, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((logits.argmax(-1) == targets) & (targets != MISSING)).sum()

    def outputs(self, task: Task, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=-1)

    def score(self, task: Task, targets: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
        cm = metrics.confusion(targets, outputs.argmax(-1) if len(outputs) else targets, len(task.labels))
        return {"accuracy": metrics.accuracy(cm), "macro_f1": metrics.macro_f1(cm), "confusion_matrix": cm}

    def baseline(self, task: Task, val: np.ndarray) -> dict[str, Any]:
        """Always the most common label; and the macro-F1 of guessing at random by label frequency:
        1 / the number of labels present (each label's precision and recall are then its share). A
        constant answer has a low macro-F1 by construction, so a model that only guesses would look
        good against it alone."""
        counts = np.bincount(val, minlength=len(task.labels))
        common = int(counts.argmax())
        cm = metrics.confusion(val, np.full_like(val, common), len(task.labels))
        return {"answer": f"always answering '{task.labels[common]}'", "label": common,
                "accuracy": metrics.accuracy(cm), "macro_f1": metrics.macro_f1(cm),
                "chance_macro_f1": 1.0 / int((counts > 0).sum())}

    def learned(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> bool:
        return (scores["macro_f1"] >= max(base["macro_f1"], base["chance_macro_f1"]) + F1_MARGIN
                and scores["accuracy"] >= base["accuracy"])

    def check_entries(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                "majority_label": task.labels[base["label"]], "majority_accuracy": base["accuracy"],
                "majority_macro_f1": base["macro_f1"], "chance_macro_f1": base["chance_macro_f1"]}

    def warning(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> str:
        return (f"task '{task.name}' has not clearly learned: accuracy {scores['accuracy']:.3f} and macro-F1 "
                f"{scores['macro_f1']:.3f}, where always answering '{task.labels[base['label']]}' gives "
                f"{base['accuracy']:.3f} and {base['macro_f1']:.3f}, and random guesses a macro-F1 of "
                f"{base['chance_macro_f1']:.3f}; try more --epochs, a higher --lr-backbone or --lr-heads, "
                f"or --class-weight {task.name}=balanced")

    def decide(self, task: Task, outputs: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        """``{"label", "score", "top": [[label, p], ...]}``: the most likely label and the ``top_k`` best."""
        order = np.argsort(-outputs, axis=1, kind="stable")[:, :max(1, top_k)]
        out = []
        for row, best in zip(outputs.tolist(), order.tolist()):
            top = [[task.labels[j], row[j]] for j in best]
            out.append({"label": top[0][0], "score": top[0][1], "top": top})
        return out

    def class_weights(self, task: Task, targets: np.ndarray) -> list[float]:
        """n / (K * count_c) over the labelled rows, as scikit-learn's "balanced": a rare label counts
        as much in the loss as a common one, and the weights average 1 over the rows."""
        n_classes = len(task.labels)
        counts = np.bincount(targets[targets != MISSING], minlength=n_classes).astype(np.float64)
        n = counts.sum()
        return [float(n / (n_classes * c)) if c else 0.0 for c in counts]
