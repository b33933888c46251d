"""Validation and scoring: losses, confusion matrices and the combined objective, under inference mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtlcli.data.batching import Encoded, inference_batch_size, iterate, sorted_batches, width_multiple
from mtlcli.runtime.heap import HeapTrimmer
from mtlcli.model.losses import Objective, row_losses, task_losses
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind


@torch.inference_mode()
def evaluate(model, combiner, data: Encoded, tasks: dict[str, Task], device: torch.device, amp,
             pad_id: int, max_length: int, objective: Objective = Objective(), dist=None,
             batch_size: int | None = None, per_row: bool = False, tune: bool = False,
             precision: str = "fp32") -> dict[str, Any]:
    """Per task: its type's metrics on its labelled rows (``score``), its mean loss and its outputs;
    plus the combined loss.

    The combined loss is the training objective (the same combiner) applied to the mean task losses.
    With ``tune`` (validation in training), decisions a type sets on these rows (a multi-label
    task's thresholds) are set first, in ``tasks``; eval and the report score with the run's own. ``per_row`` (one process only) adds each row's loss per task, whose labelled
    rows' losses are the terms of the task's loss.
    Under torchrun (``dist``: the training.distributed.Dist a training process passes) each process
    scores every W-th batch; the loss sums and outputs are then summed over processes, so every
    process returns the whole set's metrics.
    """
    was_training = model.training
    model.eval()
    names = [t for t in tasks if t in data.labels]
    loss_sum = {t: torch.zeros((), device=device) for t in names}
    multiple = width_multiple(device, precision)  # ``precision``: what ``amp`` computes in
    batches = sorted_batches(data.lengths, batch_size or inference_batch_size(device), multiple, max_length)
    if dist is not None and dist.enabled:
        batches = batches[dist.rank :: dist.world_size]
    found = {t: [] for t in names}  # outputs stay on the device until the end: no sync per batch
    losses = {t: [] for t in names}
    trim_heap = HeapTrimmer(device)
    for batch in iterate(data, batches, pad_id, device, multiple, max_length):
        with amp():
            logits = model(batch.input_ids, batch.attention_mask)
        summed = task_losses(logits, {t: batch.labels[t] for t in names}, tasks, objective)
        for t in names:
            loss_sum[t] += summed[t][0]
            found[t].append(kind(tasks[t]).outputs(tasks[t], logits[t]))
            if per_row:
                losses[t].append(row_losses(tasks[t], logits[t], batch.labels[t], objective))
        trim_heap()
    rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    width = {t: (len(data),) + tuple(found[t][0].shape[1:]) if found[t] else (len(data),) for t in names}
    outputs = {t: _in_order(found[t], rows, width[t], 0.0) for t in names}
    model.train(was_training)
    if dist is not None and dist.enabled:
        _gather(loss_sum, outputs, device, dist)
    out: dict[str, Any] = {"tasks": {}}
    means = {}
    for t in names:
        task, kind_, y = tasks[t], kind(tasks[t]), data.labels[t]
        labelled = np.asarray(kind_.labelled(y))
        n = int(labelled.sum())
        loss = float(loss_sum[t]) / n if n else float("nan")
        if n:
            means[t] = torch.tensor(loss)
        if n and tune:
            kind_.tune(task, y[labelled], outputs[t][labelled])
        scores = kind_.score(task, y[labelled], outputs[t][labelled])
        out["tasks"][t] = {"n": n, "loss": loss, **scores, "outputs": outputs[t]}
        if per_row:
            out["tasks"][t]["row_losses"] = _in_order(losses[t], rows, (len(data),), np.nan)
    with torch.no_grad():
        out["loss"] = float(combiner(means)) if means else float("nan")
    return out


def _in_order(parts: list[torch.Tensor], rows: np.ndarray, shape: tuple[int, ...], fill: float) -> np.ndarray:
    """Per-batch results put back in the data's row order."""
    out = np.full(shape, fill, dtype=np.float32)
    if parts:
        out[rows] = torch.cat(parts).float().cpu().numpy()
    return out


def _gather(loss_sum: dict[str, torch.Tensor], outputs: dict[str, np.ndarray], device, d) -> None:
    """Every process's part of the results, on every process: loss sums add up; each row was
    scored by one process and is 0 on the others, so the sum over processes is its output."""
    d.sum_in_place(list(loss_sum.values()))
    for t, o in outputs.items():
        merged = torch.from_numpy(o).to(device)
        d.sum_in_place([merged])
        outputs[t] = merged.cpu().numpy()
