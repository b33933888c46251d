"""The geometric mean of the task losses: a task's gradient is scaled by 1 / its own loss."""

from __future__ import annotations

import torch

from mtlcli.plugin import LossCombiner


class GeometricMean(LossCombiner):
    """L = exp(sum_t w_t log L_t / sum_t w_t), over the tasks labelled in the batch.

    dL/dL_t = L * (w_t / sum w) / L_t: tasks whose losses differ in scale get gradients of similar
    size, without any learned weights (Chennupati et al., 2019, "MultiNet++"). ``weights`` come from
    ``--task-weight`` (1.0 each by default).
    """

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = sum(self.weights[t] for t in losses)
        if total <= 0:  # every task in this batch has weight 0: nothing to learn from it
            return sum(0.0 * loss for loss in losses.values())
        log_losses = [self.weights[t] * loss.clamp_min(1e-12).log() for t, loss in losses.items()]
        return torch.exp(torch.stack(log_losses).sum() / total)
