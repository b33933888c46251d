"""Per-task cross-entropy that leaves out rows with no label for the task (partial labels)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mtlcli.data import MISSING


def task_losses(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """task -> (summed loss over labelled rows, number of labelled rows), both tensors.

    Sums rather than means so that epoch metrics are exact averages over rows. A batch with no
    labelled row for a task gives (0, 0), which contributes nothing.
    """
    out = {}
    for task, y in labels.items():
        out[task] = (
            F.cross_entropy(logits[task].float(), y, ignore_index=MISSING, reduction="sum"),
            (y != MISSING).sum(),
        )
    return out


def mean_losses(summed: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean loss per task over its labelled rows; tasks without any are left out."""
    return {t: s / n for t, (s, n) in summed.items() if int(n) > 0}
