"""Loss combiners turn per-task losses into the one number that is minimised.

Interface: ``Combiner(tasks, weights)`` is an ``nn.Module``; ``forward(losses)`` takes a dict task ->
scalar loss (only the tasks that had labelled rows in the batch) and returns a scalar.
``epoch_end(train_losses)`` receives the epoch's mean loss per task, for combiners that adapt
between epochs. Learned parameters train at the heads' learning rate; buffers and parameters are
saved with the model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtlcli.registry import loss_combiners


class LossCombiner(nn.Module):
    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in self.tasks}

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def epoch_end(self, train_losses: dict[str, float]) -> None:
        pass


@loss_combiners.register("weighted")
class WeightedSum(LossCombiner):
    """sum_t w_t * L_t, with w_t from --task-weight (1.0 each by default)."""

    def forward(self, losses):
        return sum(self.weights[t] * loss for t, loss in losses.items())


@loss_combiners.register("uncertainty")
class UncertaintyWeighting(LossCombiner):
    """Kendall, Gal and Cipolla (2018): sum_t exp(-s_t) * L_t + s_t, s_t = log sigma_t^2 learned."""

    def __init__(self, tasks, weights=None):
        super().__init__(tasks, weights)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses):
        total = 0.0
        for t, loss in losses.items():
            s = self.log_vars[self.tasks.index(t)]
            total = total + self.weights[t] * (torch.exp(-s) * loss + s)
        return total


@loss_combiners.register("dwa")
class DynamicWeightAverage(LossCombiner):
    """Liu, Johns and Davison (2019): w_t = K softmax(r_t / T), r_t = L_t(e-1) / L_t(e-2).

    Weights are 1 for the first two epochs, then follow how fast each task's loss falls: a task
    that improves slowly gets more weight.
    """

    def __init__(self, tasks, weights=None, temperature: float = 2.0):
        super().__init__(tasks, weights)
        self.temperature = temperature
        # The last two epochs' mean losses; NaN until seen. Buffers so they travel in checkpoints.
        self.register_buffer("history", torch.full((2, len(self.tasks)), float("nan")))
        self.register_buffer("dwa_weights", torch.ones(len(self.tasks)))

    def forward(self, losses):
        return sum(self.weights[t] * self.dwa_weights[self.tasks.index(t)] * loss for t, loss in losses.items())

    def epoch_end(self, train_losses):
        latest = torch.tensor([train_losses.get(t, math.nan) for t in self.tasks], dtype=torch.float32)
        self.history = torch.stack([self.history[1], latest.to(self.history.device)])
        ratio = self.history[1] / self.history[0]
        if torch.isfinite(ratio).all():
            k = len(self.tasks)
            self.dwa_weights = k * torch.softmax(ratio / self.temperature, dim=0)
