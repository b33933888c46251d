"""The inverse square-root schedule of the original Transformer, with mtlcli's linear warmup."""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def inverse_sqrt(optimizer, num_training_steps: int, num_warmup_steps: int) -> LambdaLR:
    """Linear warmup to the set learning rate, then lr * sqrt((warmup + 1) / (step + 1)).

    The decay does not depend on the run's length (``num_training_steps`` is unused), so adding
    epochs does not change the learning rate of the early ones.
    """
    warmup = num_warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return math.sqrt((warmup + 1) / (step + 1))

    return LambdaLR(optimizer, factor)
