"""The training loop: one readable function; the policies and the run folder sit beside it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from mtlcli.batching import Encoded, collate, train_batches
from mtlcli.data import MISSING
from mtlcli.losses import task_losses
from mtlcli.training.evaluate import evaluate
from mtlcli.training.policies import EarlyStopping
from mtlcli.training.report import Reporter

PROGRESS_EVERY = 5  # batches between loss read-outs for the display (each one is a host sync)


@dataclass
class LoopParts:
    model: torch.nn.Module
    combiner: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train: Encoded
    val: Encoded
    label_sets: dict[str, list[str]]
    device: torch.device
    amp: Callable  # () -> autocast context
    pad_id: int
    batch_size: int
    max_grad_norm: float
    seed: int
    lr_backbone: float
    lr_heads: float


def fit(parts: LoopParts, epochs: int, stopper: EarlyStopping, on_best: Callable[[int, dict], Any],
        log_epoch: Callable[[dict], None], reporter: Reporter, start_epoch: int = 1) -> dict[str, Any]:
    p = parts
    tasks = list(p.label_sets)
    lengths = p.train.lengths
    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs + 1):
        # ---- train one epoch
        p.model.train()
        p.combiner.train()
        batches = train_batches(lengths, p.batch_size, p.seed, epoch)
        reporter.epoch_start(epoch, len(batches))
        zero = lambda: torch.zeros((), device=p.device)  # noqa: E731
        loss_sum = {t: zero() for t in tasks}
        correct = {t: zero() for t in tasks}
        counted = {t: 0 for t in tasks}
        combined_sum, seen, t0 = zero(), 0, time.perf_counter()
        for step, index in enumerate(batches, 1):
            batch = collate(p.train, index, p.pad_id)
            counts = {t: int((batch.labels[t] != MISSING).sum()) for t in tasks}  # host side: no sync
            batch = batch.to(p.device)
            with p.amp():
                logits = p.model(batch.input_ids, batch.attention_mask)
            summed = task_losses(logits, batch.labels)
            loss = p.combiner({t: summed[t][0] / counts[t] for t in tasks if counts[t]})

            p.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if p.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.max_grad_norm)
            p.optimizer.step()
            p.scheduler.step()

            # ---- running metrics stay on the device until the epoch ends
            with torch.no_grad():
                combined_sum += loss.detach() * len(batch)
                for t in tasks:
                    loss_sum[t] += summed[t][0].detach()
                    y = batch.labels[t]
                    correct[t] += ((logits[t].argmax(-1) == y) & (y != MISSING)).sum()
                    counted[t] += counts[t]
            seen += len(batch)
            show = step % PROGRESS_EVERY == 0 or step == len(batches)
            reporter.batch_end(epoch, step, len(batches), float(loss.detach()) if show else None, seen / (time.perf_counter() - t0))
        train_seconds = time.perf_counter() - t0

        # ---- epoch metrics, then validation with the same objective
        train_task_loss = {t: float(loss_sum[t]) / counted[t] for t in tasks if counted[t]}
        p.combiner.epoch_end(train_task_loss)
        reporter.validation_start(epoch)
        val = evaluate(p.model, p.combiner, p.val, p.label_sets, p.batch_size, p.device, p.amp, p.pad_id)
        row = {"epoch": epoch, **_current_lrs(p), "seconds": round(time.perf_counter() - t0, 3),
               "train_seconds": round(train_seconds, 3), "train_sentences_per_s": round(seen / train_seconds, 2),
               "train_loss": float(combined_sum) / seen, "val_loss": val["loss"]}
        for t in tasks:
            row[f"train_{t}_loss"] = train_task_loss.get(t, float("nan"))
            row[f"train_{t}_acc"] = float(correct[t]) / counted[t] if counted[t] else float("nan")
            v = val["tasks"][t]
            row[f"val_{t}_loss"], row[f"val_{t}_acc"], row[f"val_{t}_f1"] = v["loss"], v["accuracy"], v["macro_f1"]

        # ---- policies: best checkpoint, log, early stopping
        improved = stopper.update(epoch, row["val_loss"])
        if improved:
            on_best(epoch, row)
        log_epoch(row)
        reporter.epoch_end(row, improved)
        if stopper.should_stop:
            return {"epochs_run": epoch, "stopped_early": epoch < epochs}
    return {"epochs_run": epoch, "stopped_early": False}


def _current_lrs(p: LoopParts) -> dict[str, float]:
    # Every group follows the same schedule factor; derive both rates from it so a frozen backbone
    # (no backbone group at all) still logs what its rate would be.
    group = p.optimizer.param_groups[0]
    factor = group["lr"] / group["initial_lr"] if group.get("initial_lr") else 1.0
    return {"lr_backbone": p.lr_backbone * factor, "lr_heads": p.lr_heads * factor}
