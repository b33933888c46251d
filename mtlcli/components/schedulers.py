"""Learning-rate schedules, stepped once per batch.

Interface: ``factory(optimizer, num_training_steps, num_warmup_steps)`` returns a
``torch.optim.lr_scheduler.LRScheduler``.
"""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR

from mtlcli.registry import schedulers


def _warmup(step: int, warmup: int) -> float | None:
    return (step + 1) / (warmup + 1) if step < warmup else None


@schedulers.register("linear")
def linear(optimizer, num_training_steps: int, num_warmup_steps: int):
    """Linear warmup to the set learning rate, then linear decay to zero."""

    def factor(step: int) -> float:
        w = _warmup(step, num_warmup_steps)
        if w is not None:
            return w
        remaining = num_training_steps - step
        return max(0.0, remaining / max(1, num_training_steps - num_warmup_steps))

    return LambdaLR(optimizer, factor)


@schedulers.register("cosine")
def cosine(optimizer, num_training_steps: int, num_warmup_steps: int):
    """Linear warmup, then half a cosine down to zero."""

    def factor(step: int) -> float:
        w = _warmup(step, num_warmup_steps)
        if w is not None:
            return w
        progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


@schedulers.register("constant")
def constant(optimizer, num_training_steps: int, num_warmup_steps: int):
    """Linear warmup, then the set learning rate throughout."""

    return LambdaLR(optimizer, lambda step: _warmup(step, num_warmup_steps) or 1.0)
