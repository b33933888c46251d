"""Ordinal regression for ordered levels such as star ratings 1..5 (``--task-type rating=ordinal``).

K levels get K-1 outputs, one per cut "level > k", each a logit trained with binary cross-entropy
(the cumulative-link approach of CORAL, Cao et al. 2020). A wrong answer one level away costs one cut,
two levels away two: unlike classification, the loss knows that 4 is nearer 5 than 1 is.

Outputs are a probability per level: P(level > k) made non-increasing in k, then differenced. The
predicted level is the median of those probabilities (the first level whose cumulative probability
reaches one half), which is also CORAL's rule "count the cuts above one half".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from mtlcli.plugin import (ACCURACY, LOSS, MACRO_F1, MAE, Labels, Metric, Task, TaskType, UserError, Where,
                           first_row, metrics, read_number, shown)

WITHIN_ONE = Metric("within_one", "within1", "within-one accuracy", "±1")  # the plugin's own metric
MAE_MARGIN = 0.05  # MAE must be this share below always answering the training median to count as learned


class Ordinal(TaskType):
    name = "ordinal"
    metrics = (LOSS, MAE, ACCURACY, MACRO_F1, WITHIN_ONE)
    headline = MAE
    min_labels = 2
    describe = "ordered levels such as ratings 1-5 (K-1 cumulative logits 'level > k', binary cross-entropy)"

    # ---- cells -> targets ----------------------------------------------------------------------
    def fit(self, name: str, cells: Labels, where: Where, settings: dict[str, Any]) -> Task:
        """The levels are the training rows' distinct values, in numeric order; each must be a number."""
        for code, cell in enumerate(cells.names):
            row = first_row(cells, code)
            if cell and row is not None and read_number(cell) is None:
                raise UserError(f"{where(row)}: '{shown(cell)}' in ordinal column '{shown(name)}' is not a number; "
                                "levels are numbers whose order is their rank (1, 2, 3)")
        levels = sorted(cells.present(), key=read_number)
        counts = np.bincount(cells.codes, minlength=len(cells.names))
        cumulative = np.cumsum([counts[cells.names.index(level)] for level in levels])
        median = int(np.searchsorted(cumulative, cumulative[-1] / 2)) if levels else 0
        return Task(name, self.name, levels, {"median": median})

    def targets(self, task: Task, cells: Labels, where: Where, ignore_unknown: bool = False,
                hint: str = "") -> np.ndarray:
        """The level's index per row as a float (NaN: no label)."""
        index = {level: float(i) for i, level in enumerate(task.labels)}
        lookup = np.full(len(cells.names), np.nan, dtype=np.float32)
        for code, cell in enumerate(cells.names):
            if not cell:
                continue
            if cell in index:
                lookup[code] = index[cell]
            elif not ignore_unknown and (row := first_row(cells, code)) is not None:
                raise UserError(f"{where(row)}: level '{shown(cell)}' of task '{shown(task.name)}' is not one the "
                                f"model knows (known: {', '.join(task.labels)}){hint}")
        return lookup[cells.codes]

    def unknown(self, task: Task, cells: Labels) -> dict[str, int]:
        counts = np.bincount(cells.codes, minlength=len(cells.names))
        return {cell: int(counts[code]) for code, cell in enumerate(cells.names)
                if cell and cell not in task.labels and counts[code]}

    # ---- the model's side ----------------------------------------------------------------------
    def size(self, task: Task) -> int:
        return len(task.labels) - 1

    def loss(self, task: Task, logits: torch.Tensor, targets: torch.Tensor, objective: Any,
             reduction: str = "sum") -> torch.Tensor:
        """Each labelled row's mean binary cross-entropy over the K-1 cuts (0 where unlabelled)."""
        labelled = targets == targets
        cuts = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
        above = (torch.nan_to_num(targets, nan=0.0)[:, None] > cuts).float()  # "level > k" per cut
        per_cut = F.binary_cross_entropy_with_logits(logits.float(), above, reduction="none",
                                                     pos_weight=objective.weight(task.name, targets.device))
        rows = per_cut.mean(-1) * labelled
        return rows.sum() if reduction == "sum" else rows

    def outputs(self, task: Task, logits: torch.Tensor) -> torch.Tensor:
        """P(level = j) per level, from P(level > k) kept non-increasing in k."""
        above = torch.cummin(torch.sigmoid(logits.float()), dim=-1).values
        ones = torch.ones_like(above[:, :1])
        return torch.cat([ones, above], -1) - torch.cat([above, 0 * ones], -1)

    # ---- outputs -> scores and predictions -------------------------------------------------------
    def predicted(self, outputs: np.ndarray) -> np.ndarray:
        """The median level per row: the first whose cumulative probability reaches one half."""
        cumulative = np.cumsum(outputs, axis=-1)
        return np.minimum((cumulative < 0.5).sum(-1), outputs.shape[-1] - 1)

    def values(self, task: Task) -> np.ndarray:
        return np.array([read_number(level) for level in task.labels], dtype=np.float64)

    def _scores(self, task: Task, truth: np.ndarray, guess: np.ndarray) -> dict[str, float]:
        if not len(truth):
            return {"mae": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan"), "within_one": float("nan")}
        cm = metrics.confusion(truth, guess, len(task.labels))
        values = self.values(task)
        return {"mae": float(np.abs(values[guess] - values[truth]).mean()), "accuracy": metrics.accuracy(cm),
                "macro_f1": metrics.macro_f1(cm), "within_one": float((np.abs(guess - truth) <= 1).mean())}

    def score(self, task: Task, targets: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
        """MAE in the column's units, accuracy, macro-F1 and the share within one level, of the median level."""
        truth = targets.astype(np.int64)
        guess = self.predicted(outputs) if len(outputs) else truth
        return self._scores(task, truth, guess)

    def baseline(self, task: Task, val: np.ndarray) -> dict[str, Any]:
        """Always the training rows' median level (the constant that minimises the absolute error)."""
        median = int(task.params.get("median", 0))
        truth = val.astype(np.int64)
        return {"answer": f"always answering '{task.labels[median]}'",
                **self._scores(task, truth, np.full_like(truth, median))}

    def learned(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> bool:
        return scores["mae"] <= base["mae"] * (1 - MAE_MARGIN)

    def decide(self, task: Task, outputs: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        """``{"label", "score", "expected", "top"}``: the median level and its probability, the expected
        value over the levels, and the ``top_k`` most likely levels."""
        chosen = self.predicted(outputs).tolist()
        expected = (outputs.astype(np.float64) @ self.values(task)).tolist()
        order = np.argsort(-outputs, axis=1, kind="stable")[:, :max(1, top_k)]
        return [{"label": task.labels[j], "score": row[j], "expected": mean,
                 "top": [[task.labels[i], row[i]] for i in best]}
                for row, j, mean, best in zip(outputs.tolist(), chosen, expected, order.tolist())]

    def class_weights(self, task: Task, targets: np.ndarray) -> list[float]:
        """``--class-weight balanced``: a positive weight per cut, rows at or below / rows above it, so
        a cut few rows pass weighs its positives as much as its negatives."""
        levels = targets[targets == targets]
        above = np.array([(levels > k).sum() for k in range(self.size(task))], dtype=np.float64)
        return [float((len(levels) - a) / a) if a else 1.0 for a in above.tolist()]
