"""Regression: a number per row. Trained on standardised targets (the training rows' mean and spread,
kept with the run), so its loss is on the scale of the others; predictions are in the column's units."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from mtlcli import vocabulary as vocab
from mtlcli.data.tables import Labels
from mtlcli.errors import UserError, shown
from mtlcli.registry import task_types
from mtlcli.tasks import metrics
from mtlcli.tasks.base import Task, TaskType, Where, first_row

if TYPE_CHECKING:  # imported by the methods that run on a model's outputs (see tasks/base.py)
    import torch

LOSSES = ("mse", "huber")
RMSE_MARGIN = 0.05  # RMSE must be this share below always answering the training mean to count as learned


def read_number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def cell_values(task: str, cells: Labels, where: Where) -> np.ndarray:
    """Each distinct cell's number (NaN: the empty cell); a cell that is not a number names its line."""
    values = np.full(len(cells.names), np.nan, dtype=np.float64)
    for code, cell in enumerate(cells.names):
        if not cell:
            continue
        value = read_number(cell)
        if value is None:
            row = first_row(cells, code)
            if row is None:
                continue  # only in rows of the other split, which report it themselves
            raise UserError(f"{where(row)}: '{shown(cell)}' in regression column '{shown(task)}' is not a number; "
                            "write a plain number (3, 4.5, -1e-3), or leave the cell empty for no value")
        values[code] = value
    return values


@task_types.register("regression")
class Regression(TaskType):
    name = "regression"
    metrics = vocab.REGRESSION
    headline = vocab.RMSE
    min_labels = 0
    describe = "a number per row (standardised targets, MSE or Huber loss)"

    def fit(self, name: str, cells: Labels, where: Where, settings: dict[str, Any]) -> Task:
        values = cell_values(name, cells, where)[cells.codes]
        values = values[~np.isnan(values)]
        mean = float(values.mean()) if len(values) else 0.0
        std = float(values.std()) if len(values) else 1.0
        if not std > 0:
            raise UserError(f"task '{shown(name)}': every training row has the value {mean:g}; "
                            "a regression task needs values that differ")
        return Task(name, self.name, [], {"mean": mean, "std": std, "loss": settings.get("regression_loss") or "mse"})

    def targets(self, task: Task, cells: Labels, where: Where, ignore_unknown: bool = False,
                hint: str = "") -> np.ndarray:
        values = cell_values(task.name, cells, where)
        return ((values - task.params["mean"]) / task.params["std"]).astype(np.float32)[cells.codes]

    def size(self, task: Task) -> int:
        return 1

    def loss(self, task: Task, logits: torch.Tensor, targets: torch.Tensor, objective: Any,
             reduction: str = "sum") -> torch.Tensor:
        from torch.nn import functional as F

        labelled = targets == targets
        y = targets.nan_to_num(nan=0.0)
        how = F.huber_loss if task.params.get("loss") == "huber" else F.mse_loss
        rows = how(logits[:, 0].float(), y, reduction="none") * labelled
        return rows.sum() if reduction == "sum" else rows

    def outputs(self, task: Task, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0].float() * task.params["std"] + task.params["mean"]

    def values(self, task: Task, targets: np.ndarray) -> np.ndarray:
        """Targets back in the column's units."""
        return targets.astype(np.float64) * task.params["std"] + task.params["mean"]

    def score(self, task: Task, targets: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
        return metrics.regression_scores(self.values(task, targets), outputs)

    def baseline(self, task: Task, val: np.ndarray) -> dict[str, Any]:
        """Always the training rows' mean (kept with the task)."""
        mean, truth = task.params["mean"], self.values(task, val)
        scores = metrics.regression_scores(truth, np.full_like(truth, mean))
        return {"answer": f"always answering the training mean {mean:.4g}", **scores}

    def learned(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> bool:
        return scores["rmse"] <= base["rmse"] * (1 - RMSE_MARGIN)

    def decide(self, task: Task, outputs: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        """``{"value": number}`` in the column's units."""
        return [{"value": v} for v in outputs.tolist()]
