"""Loss scaling for fp16 training, and the optimizer step that goes with it.

In fp16 small gradients underflow to zero, so under ``--precision fp16`` the loss is multiplied by a
large factor before backward and the gradients are divided by it again before they are clipped and
applied (torch.amp.GradScaler). When the scaled gradients overflow to inf/NaN, the step is skipped
and the factor halved; after 2000 steps without overflow it doubles. For fp32 and bf16 (bf16 has
fp32's range) the scaler is disabled and every call here is the plain step.

The scaler's state (its factor and the steps since it last changed) is part of ``last.pt``, so a
resumed fp16 run scales, and skips, exactly as one that never stopped.

Without a scaler, a fused AdamW applies the clipping itself: ``clip_grad_norm_`` multiplies every
gradient in place by ``max_norm / (norm + 1e-6)``, one more pass over all of them (the word
embeddings' 47 MB among them), while the fused step can divide each gradient by a factor as it reads
it (the ``grad_scale`` it takes from GradScaler). The same update to rounding, 4 ms less of a CPU step.
"""

from __future__ import annotations

from typing import Iterable

import torch


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def clip_and_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, scheduler,
                  params: Iterable[torch.nn.Parameter], max_grad_norm: float) -> bool:
    """After ``scaler.scale(loss).backward()``: unscale, clip, step. Returns False when the step was
    skipped because the gradients overflowed.

    A skipped step leaves the weights, AdamW's moments and step count, and the learning-rate
    schedule as they were: the schedule counts the updates made, as in Hugging Face's Trainer.
    """
    params = list(params)
    if max_grad_norm > 0 and not scaler.is_enabled() and _clips_in_step(optimizer, params):
        total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        optimizer.grad_scale = torch.clamp((total + 1e-6) / max_grad_norm, min=1.0)  # 1: nothing to clip
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale
        scheduler.step()
        return True
    if max_grad_norm > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if not scaler.is_enabled():
        optimizer.step()
        scheduler.step()
        return True
    before = scaler.get_scale()  # a host sync, under fp16 only
    scaler.step(optimizer)  # skips optimizer.step() when a gradient is inf/NaN
    scaler.update()  # ... and then lowers the scale
    stepped = scaler.get_scale() >= before
    if stepped:
        scheduler.step()
    return stepped


def _clips_in_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> bool:
    """Whether the step can clip: a fused Adam(W), and every parameter it updates among the clipped
    ones (a combiner's own weights are stepped but not clipped)."""
    if not (isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and optimizer.defaults.get("fused")
            and hasattr(torch.nn.utils, "get_total_norm")):
        return False
    clipped = {id(p) for p in params}
    return all(id(q) in clipped for group in optimizer.param_groups for q in group["params"])
