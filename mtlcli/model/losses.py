"""Per-task cross-entropy that leaves out rows with no label for the task (partial labels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from mtlcli.data.tables import MISSING


@dataclass(frozen=True)
class Objective:
    """How each task's cross-entropy is taken: per-class weights (a task left out: all 1) and label
    smoothing. Training, validation and eval use the same one, so their losses compare."""

    class_weights: dict[str, list[float]] = field(default_factory=dict)
    label_smoothing: float = 0.0
    _on: dict = field(default_factory=dict, repr=False, compare=False)  # made once per device: no copy per step

    def weight(self, task: str, device: torch.device) -> torch.Tensor | None:
        if task not in self.class_weights:
            return None
        key = (task, str(device))
        if key not in self._on:
            self._on[key] = torch.tensor(self.class_weights[task], dtype=torch.float32, device=device)
        return self._on[key]

    def to_dict(self) -> dict[str, Any]:
        """As checkpoints keep it: plain data."""
        return {"class_weights": self.class_weights, "label_smoothing": self.label_smoothing}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "Objective":
        return cls(saved.get("class_weights") or {}, float(saved.get("label_smoothing") or 0.0))


def balanced_weights(label_ids: np.ndarray, n_classes: int) -> list[float]:
    """n / (K * count_c) over the labelled rows, as scikit-learn's "balanced": a rare label counts
    as much in the loss as a common one, and the weights average 1 over the rows."""
    counts = np.bincount(label_ids[label_ids != MISSING], minlength=n_classes).astype(np.float64)
    n = counts.sum()
    return [float(n / (n_classes * c)) if c else 0.0 for c in counts]


def task_losses(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                objective: Objective = Objective()) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """task -> (summed loss over labelled rows, number of labelled rows), both tensors.

    Sums rather than means so that epoch metrics are exact averages over rows. A batch with no
    labelled row for a task gives (0, 0), which contributes nothing.
    """
    return {task: (_cross_entropy(task, logits[task], y, objective, "sum"), (y != MISSING).sum())
            for task, y in labels.items()}


def row_losses(task: str, logits: torch.Tensor, y: torch.Tensor, objective: Objective = Objective()) -> torch.Tensor:
    """Each row's loss for ``task`` (0 where it has no label): the terms ``task_losses`` sums."""
    return _cross_entropy(task, logits, y, objective, "none")


def _cross_entropy(task: str, logits: torch.Tensor, y: torch.Tensor, objective: Objective,
                   reduction: str) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, weight=objective.weight(task, y.device), ignore_index=MISSING,
                           reduction=reduction, label_smoothing=objective.label_smoothing)

