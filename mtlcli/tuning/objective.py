"""What a search maximises: a weighted mean over tasks of each task's main validation metric.

Each task type names its main metric (``headline``: macro-F1 for classification and multi-label,
RMSE for regression). A metric where lower is better enters negated, so the objective is always
maximised: a regression task's RMSE of 0.8 counts as -0.8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mtlcli import vocabulary as vocab
from mtlcli.errors import UserError, shown
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind


@dataclass(frozen=True)
class Objective:
    weights: dict[str, float]  # task -> its weight in the mean
    metrics: dict[str, vocab.Metric]  # task -> its type's main metric

    def value(self, row: dict[str, Any]) -> float:
        """The objective of one validation row (metrics.jsonl's, or summary.json's best_metrics)."""
        total = 0.0
        for task, weight in self.weights.items():
            metric = self.metrics[task]
            score = row.get(vocab.key(vocab.VAL, task, metric), math.nan)
            total += weight * (score if metric.higher_is_better else -score)
        return total / sum(self.weights.values())

    def describe(self) -> str:
        """In words, e.g. 'mean over tasks of validation macro-F1 of sentiment, -RMSE of price'."""
        weighted = len(set(self.weights.values())) > 1
        parts = [f"{'' if m.higher_is_better else '-'}{m.label} of {t}" + (f" (weight {self.weights[t]:g})" if weighted else "")
                 for t, m in self.metrics.items()]
        mean = "" if len(parts) == 1 else "weighted mean over tasks of " if weighted else "mean over tasks of "
        return f"{mean}validation {', '.join(parts)}"


def objective_for(specs: list[str], tasks: dict[str, Task]) -> Objective:
    """From ``--metric`` (TASK or TASK=WEIGHT, repeatable; none: every task, equally weighted)."""
    weights: dict[str, float] = {}
    for spec in specs or list(tasks):
        task, sep, text = spec.partition("=")
        if task not in tasks:
            raise UserError(f"--metric {shown(spec)}: no task '{shown(task)}' (tasks: {', '.join(tasks)})")
        try:
            weight = float(text) if sep else 1.0
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight > 0):
            raise UserError(f"--metric {shown(spec)}: the weight must be a number above 0, as in {task}=2")
        weights[task] = weight
    return Objective(weights, {t: kind(tasks[t]).headline for t in weights})
