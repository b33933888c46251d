"""Per-task losses, each as its task type takes it, leaving out rows with no label for the task (partial labels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind


@dataclass(frozen=True)
class Objective:
    """How each task's loss is taken: per-output weights (``--class-weight balanced``: a class's
    weight, or a multi-label task's positive weight per label; a task left out: all 1) and label
    smoothing of class tasks. Training, validation and eval use the same one, so their losses compare."""

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


def task_losses(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], tasks: dict[str, Task],
                objective: Objective = Objective()) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """task -> (summed loss over labelled rows, number of labelled rows), both tensors, for the
    tasks in ``targets``; each task's type decides its loss.

    Sums rather than means so that epoch metrics are exact averages over rows. A batch with no
    labelled row for a task gives (0, 0), which contributes nothing.
    """
    out = {}
    for name, y in targets.items():
        task = tasks[name]
        kind_ = kind(task)
        out[name] = (kind_.loss(task, logits[name], y, objective, "sum"), kind_.labelled(y).sum())
    return out


def row_losses(task: Task, logits: torch.Tensor, y: torch.Tensor, objective: Objective = Objective()) -> torch.Tensor:
    """Each row's loss for ``task`` (0 where it has no label): the terms ``task_losses`` sums."""
    return kind(task).loss(task, logits, y, objective, "none")
