"""Validation and scoring: losses, confusion matrices and the combined objective, under inference mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtlcli.scoring import metrics
from mtlcli.data.batching import Encoded, inference_batch_size, iterate, sorted_batches, width_multiple
from mtlcli.data.tables import MISSING
from mtlcli.runtime.heap import HeapTrimmer
from mtlcli.model.losses import Objective, row_losses, task_losses


@torch.inference_mode()
def evaluate(model, combiner, data: Encoded, label_sets: dict[str, list[str]], device: torch.device, amp,
             pad_id: int, max_length: int, objective: Objective = Objective(), dist=None,
             batch_size: int | None = None, per_row: bool = False) -> dict[str, Any]:
    """Per task: mean loss, accuracy, macro-F1 and the confusion matrix; plus the combined loss.

    The combined loss is the training objective (the same combiner) applied to the mean task losses.
    ``per_row`` (one process only) adds each row's probabilities and loss per task, whose labelled
    rows' losses are the terms of the task's loss.
    Under torchrun (``dist``: the training.distributed.Dist a training process passes) each process
    scores every W-th batch; the loss sums and predictions are then summed over processes, so every
    process returns the whole set's metrics.
    """
    was_training = model.training
    model.eval()
    tasks = [t for t in label_sets if t in data.labels]
    loss_sum = {t: torch.zeros((), device=device) for t in tasks}
    preds = {t: np.full(len(data), MISSING, dtype=np.int64) for t in tasks}
    multiple = width_multiple(device)
    batches = sorted_batches(data.lengths, batch_size or inference_batch_size(device), multiple, max_length)
    if dist is not None and dist.enabled:
        batches = batches[dist.rank :: dist.world_size]
    found = {t: [] for t in tasks}  # predictions stay on the device until the end: no sync per batch
    probs, losses = {t: [] for t in tasks}, {t: [] for t in tasks}
    trim_heap = HeapTrimmer(device)
    for batch in iterate(data, batches, pad_id, device, multiple, max_length):
        with amp():
            logits = model(batch.input_ids, batch.attention_mask)
        summed = task_losses({t: logits[t] for t in tasks}, {t: batch.labels[t] for t in tasks}, objective)
        for t in tasks:
            loss_sum[t] += summed[t][0]
            found[t].append(logits[t].argmax(-1))
            if per_row:
                probs[t].append(torch.softmax(logits[t].float(), dim=-1))
                losses[t].append(row_losses(t, logits[t], batch.labels[t], objective))
        trim_heap()
    rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    for t in tasks:
        if found[t]:
            preds[t][rows] = torch.cat(found[t]).cpu().numpy()
    model.train(was_training)
    if dist is not None and dist.enabled:
        _gather(loss_sum, preds, device, dist)
    out: dict[str, Any] = {"tasks": {}}
    means = {}
    for t in tasks:
        y = data.labels[t]
        labelled = y != MISSING
        n = int(labelled.sum())
        cm = metrics.confusion(y[labelled], preds[t][labelled], len(label_sets[t]))
        loss = float(loss_sum[t]) / n if n else float("nan")
        if n:
            means[t] = torch.tensor(loss)
        out["tasks"][t] = {"n": n, "loss": loss, "accuracy": metrics.accuracy(cm), "macro_f1": metrics.macro_f1(cm),
                           "confusion_matrix": cm, "predictions": preds[t]}
        if per_row:
            out["tasks"][t]["probs"] = _in_order(probs[t], rows, (len(data), len(label_sets[t])), 0.0)
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


def _gather(loss_sum: dict[str, torch.Tensor], preds: dict[str, np.ndarray], device, d) -> None:
    """Every process's part of the results, on every process: loss sums add up; each row was
    predicted by one process and is MISSING (negative) on the others, so the maximum is its class."""
    d.sum_in_place(list(loss_sum.values()))
    for t, p in preds.items():
        merged = d.max(torch.from_numpy(p).to(device))
        preds[t] = merged.cpu().numpy()
