"""The training loop: one readable function; the policies and the run folder sit beside it.

The loop can start in the middle of an epoch (a resumed run): the batch order depends only on
(seed, epoch), so skipping the batches already done and restoring the epoch's running sums gives
the same numbers as a run that never stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch

from mtlcli.data.batching import Encoded, collate, train_batches, width_multiple
from mtlcli.runtime.cuda_graphs import StepGraphs
from mtlcli.model.losses import Objective, task_losses
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind
from mtlcli.training.distributed import (Dist, all_gather_object, all_reduce_max, average_grads, shard, sum_in_place,
                                        usable_batches)
from mtlcli import vocabulary as vocab
from mtlcli.scoring.evaluation import evaluate
from mtlcli.runtime.heap import HeapTrimmer
from mtlcli.training.grad_scaling import clip_and_step
from mtlcli.training.policies import EarlyStopping
from mtlcli.training.reporter import Reporter

PROGRESS_EVERY = 5  # batches between loss read-outs for the display (each one is a host sync)


@dataclass
class LoopParts:
    model: torch.nn.Module
    combiner: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train: Encoded
    val: Encoded
    tasks: dict[str, Task]
    device: torch.device
    amp: Callable  # () -> autocast context
    pad_id: int
    batch_size: int
    max_grad_norm: float
    seed: int
    lr_backbone: float
    lr_heads: float
    max_length: int
    objective: Objective = Objective()
    dist: Dist = Dist()  # under torchrun: this process's rank; ``model`` is then DDP-wrapped
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler(enabled=False))  # fp16 only
    cuda_graphs: bool = False  # run each batch shape's forward and backward pass as one CUDA graph (cuda_graphs.py)


@dataclass(frozen=True)
class Position:
    """Where training goes on: ``step`` batches of ``epoch`` are done (0: the epoch starts afresh)."""

    epoch: int = 1
    step: int = 0


@dataclass
class Hooks:
    """What the loop tells the run, and asks it; the run decides what each means on disk."""

    on_best: Callable[[int, dict], Any]  # a new best epoch: save its checkpoint
    log_epoch: Callable[[dict], None]  # an epoch's metrics row
    save_state: Callable[[Position, dict | None], None]  # all it takes to go on from here (+ the epoch's running sums)
    stop_requested: Callable[[], bool] = lambda: False  # Ctrl-C or SIGTERM arrived
    reporter: Reporter = field(default_factory=Reporter)


class Tally:
    """An epoch's running training sums, kept on the device: no host sync per batch.

    Also remembers the first batch whose loss was not finite, read at the display's read-outs.
    Under torchrun the sums are this process's share (``counted`` and ``seen`` are whole-batch counts,
    the same everywhere) until ``reduce`` adds the shares up.
    """

    def __init__(self, tasks: dict[str, Task], device: torch.device, state: dict | None = None):
        zero = lambda: torch.zeros((), device=device)  # noqa: E731
        # tasks whose type counts a metric on training batches (classification: accuracy)
        self.hits = {t: partial(kind(task).train_hits, task) for t, task in tasks.items() if kind(task).train_metric}
        self.loss_sum = {t: zero() for t in tasks}
        self.correct = {t: zero() for t in tasks}
        self.counted = {t: 0 for t in tasks}
        self.combined_sum = zero()
        self.seen = 0
        self.bad_step = torch.zeros((), dtype=torch.long, device=device)  # 0: every loss so far was finite
        self.bad_loss = zero()
        if state:
            self.load_state_dict(state, device)

    @torch.no_grad()
    def add(self, step: int, loss, summed, logits, labels, counts: dict[str, int], size: int, world: int = 1) -> None:
        first_bad = (self.bad_step == 0) & ~torch.isfinite(loss.detach())
        self.bad_step = torch.where(first_bad, step, self.bad_step)
        self.bad_loss = torch.where(first_bad, loss.detach().float(), self.bad_loss)
        self.combined_sum += loss.detach() * size / world  # each process's loss is W x its share
        for t in self.loss_sum:
            self.loss_sum[t] += summed[t][0].detach()
            if t in self.hits:
                self.correct[t] += self.hits[t](logits[t], labels[t])
            self.counted[t] += counts[t]
        self.seen += size

    def reduce(self, d: Dist) -> None:
        """Add every process's sums up (all processes call it together)."""
        sum_in_place([*self.loss_sum.values(), *self.correct.values(), self.combined_sum], d)

    def saved_state(self, d: Dist) -> dict[str, Any]:
        """The epoch's sums for last.pt, called by all processes together: the total, and under
        torchrun each process's own share, so a run resumed on as many processes adds the same
        numbers in the same order as one that never stopped."""
        shares = all_gather_object(self.state_dict(), d) if d.enabled else None
        self.reduce(d)
        return {**self.state_dict(), **({"shares": shares} if shares else {})}

    @staticmethod
    def resumed_state(state: dict[str, Any] | None, d: Dist) -> dict[str, Any] | None:
        """This process's part of a saved epoch: its own share when the run stopped on as many
        processes; otherwise rank 0 carries the total on and the others start from zero sums."""
        if not state or not d.enabled:
            return state
        shares = state.get("shares")
        if isinstance(shares, list) and len(shares) == d.world_size:
            return shares[d.rank]
        if d.is_main:
            return state
        zero = lambda v: torch.zeros_like(v)  # noqa: E731
        return {**state, "loss_sum": {t: zero(v) for t, v in state["loss_sum"].items()},
                "correct": {t: zero(v) for t, v in state["correct"].items()}, "combined_sum": zero(state["combined_sum"])}

    def first_bad_batch(self) -> tuple[int, float] | None:
        step = int(self.bad_step)  # a host sync: called only where the display reads the loss anyway
        return (step, float(self.bad_loss)) if step else None

    def state_dict(self) -> dict[str, Any]:
        cpu = lambda d: {t: v.detach().cpu() for t, v in d.items()}  # noqa: E731
        return {"loss_sum": cpu(self.loss_sum), "correct": cpu(self.correct), "counted": dict(self.counted),
                "combined_sum": self.combined_sum.detach().cpu(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.loss_sum = {t: v.to(device) for t, v in state["loss_sum"].items()}
        self.correct = {t: v.to(device) for t, v in state["correct"].items()}
        self.counted = dict(state["counted"])
        self.combined_sum = state["combined_sum"].to(device)
        self.seen = int(state["seen"])


def gradient_buffers(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[list, list]:
    """The trained parameters, split: the backbone's (every step gives them a gradient) and the rest."""
    backbone = {id(q) for q in getattr(model, "module", model).backbone.parameters()}
    trained = [q for group in optimizer.param_groups for q in group["params"]]
    return [q for q in trained if id(q) in backbone], [q for q in trained if id(q) not in backbone]


def clear_grads(kept: list[torch.Tensor], dropped: list[torch.Tensor]) -> None:
    """Before each backward pass. The backbone's gradients are zeroed in place, so their buffers stay
    where they are from step to step instead of leaving holes in the heap for the next step's tensors;
    the other gradients are dropped, so that AdamW leaves a head whose task had no rows in a batch as it is."""
    for q in kept:
        if q.grad is not None:
            q.grad.zero_()
    for q in dropped:
        q.grad = None


def zero_grads(params: list[torch.Tensor]) -> None:
    """Before each backward pass recorded in a CUDA graph: every gradient stays in its buffer."""
    for q in params:
        q.grad.zero_()


def fit(parts: LoopParts, epochs: int, stopper: EarlyStopping, hooks: Hooks, start: Position = Position(),
        tally_state: dict | None = None) -> dict[str, Any]:
    """Train from ``start`` to ``epochs``; returns how it ended (done, stopped early, interrupted, diverged)."""
    p, reporter, d = parts, hooks.reporter, parts.dist
    tasks = list(p.tasks)
    multiple = width_multiple(p.device)
    trim_heap = HeapTrimmer(p.device)
    kept, dropped = gradient_buffers(p.model, p.optimizer)

    def forward_backward(input_ids, attention_mask, labels, counts, clear: Callable[[], None]) -> tuple:
        with p.amp():
            logits = p.model(input_ids, attention_mask)
        summed = task_losses(logits, labels, p.tasks, p.objective)
        loss = p.combiner({t: summed[t][0] * d.world_size / counts[t] for t in tasks if counts[t]})
        clear()
        p.scaler.scale(loss).backward()  # fp16: scaled up so small gradients do not underflow
        return loss, summed, logits

    step_pass = partial(forward_backward, clear=partial(clear_grads, kept, dropped))
    if p.cuda_graphs:
        trained = kept + dropped
        step_pass = graphs = StepGraphs(partial(forward_backward, clear=partial(zero_grads, trained)), trained,
                                        reporter.warning)
    ended = {"epochs_run": start.epoch - 1, "stopped_early": False, "interrupted": False, "diverged": None}
    for epoch in range(start.epoch, epochs + 1):
        # ---- train one epoch; a resumed epoch skips the batches done before it stopped
        p.model.train()
        p.combiner.train()
        if p.cuda_graphs:
            graphs.reset()  # recorded anew each epoch: the combiner's epoch_end may have changed its tensors
        batches = usable_batches(train_batches(p.train.lengths, p.batch_size, p.seed, epoch), d)
        resumed = epoch == start.epoch and start.step > 0
        tally = Tally(p.tasks, p.device, Tally.resumed_state(tally_state, d) if resumed else None)
        reporter.epoch_start(epoch, len(batches))
        t0, seen_before = time.perf_counter(), tally.seen
        for step in range(start.step + 1 if resumed else 1, len(batches) + 1):
            rows = batches[step - 1]  # the global batch; this process trains on its shard
            # labelled rows per task in the whole batch (host side: no sync); dividing each
            # process's summed loss by these, times W, makes DDP's gradient average exactly the
            # single-process gradient of the whole batch
            counts = {t: int(kind(p.tasks[t]).labelled(p.train.labels[t][rows]).sum()) for t in tasks}
            batch = collate(p.train, shard(rows, d), p.pad_id, p.device, multiple, p.max_length)
            loss, summed, logits = step_pass(batch.input_ids, batch.attention_mask, batch.labels, counts)
            average_grads(p.combiner.parameters(), d)
            clip_and_step(p.scaler, p.optimizer, p.scheduler, p.model.parameters(), p.max_grad_norm)
            trim_heap()
            tally.add(step, loss, summed, logits, batch.labels, counts, len(rows), d.world_size)

            # ---- read-outs (host syncs) only every few batches: display, NaN check, stop request;
            # under torchrun all processes agree on them there, so they stop together
            show = step % PROGRESS_EVERY == 0 or step == len(batches)
            if d.enabled:
                stopping, bad = _agree(d, hooks.stop_requested(), tally) if show else (False, None)
            else:
                stopping = hooks.stop_requested()
                show = show or stopping
                bad = tally.first_bad_batch() if show else None
            if bad:
                # the weights after that batch are never saved: last.pt and the best stay as they were
                return {**ended, "diverged": {"epoch": epoch, "batch": bad[0], "loss": bad[1]}}
            reporter.batch_end(epoch, step, len(batches), float(loss.detach()) if show else None,
                               (tally.seen - seen_before) / (time.perf_counter() - t0))
            if stopping:
                hooks.save_state(Position(epoch, step), tally.saved_state(d))
                return {**ended, "interrupted": True, "position": [epoch, step]}
        train_seconds = max(time.perf_counter() - t0, 1e-9)  # only the part of the epoch run in this process

        # ---- epoch metrics, then validation with the same objective
        tally.reduce(d)
        train_task_loss = {t: float(tally.loss_sum[t]) / tally.counted[t] for t in tasks if tally.counted[t]}
        p.combiner.epoch_end(train_task_loss)
        val = None  # no validation rows (--val-split 0): the row holds training's numbers only
        if len(p.val):
            reporter.validation_start(epoch)
            val = evaluate(getattr(p.model, "module", p.model), p.combiner, p.val, p.tasks, p.device, p.amp,
                           p.pad_id, p.max_length, p.objective, d, tune=True)
        row = {vocab.EPOCH: epoch, **_current_lrs(p), vocab.SECONDS: round(time.perf_counter() - t0, 3),
               vocab.TRAIN_SECONDS: round(train_seconds, 3),
               vocab.TRAIN_SPEED: round((tally.seen - seen_before) / train_seconds, 2),
               vocab.TRAIN_LOSS: float(tally.combined_sum) / tally.seen}
        if val:
            row[vocab.VAL_LOSS] = val["loss"]
        for t in tasks:
            trained = {vocab.LOSS.name: train_task_loss.get(t, float("nan"))}
            if t in tally.hits:
                hits = float(tally.correct[t]) / tally.counted[t] if tally.counted[t] else float("nan")
                trained[kind(p.tasks[t]).train_metric.name] = hits
            row.update(vocab.scores(t, vocab.TRAIN, trained))
            if val:
                scores = {m.name: val["tasks"][t][m.name] for m in kind(p.tasks[t]).metrics}
                row.update(vocab.scores(t, vocab.VAL, scores))
        if val and any(v["n"] and not math.isfinite(v["loss"]) for v in val["tasks"].values()):
            return {**ended, "diverged": {"epoch": epoch, "batch": None, "loss": row[vocab.VAL_LOSS]}}

        # ---- policies: best checkpoint, log, the state to resume from, early stopping
        improved = stopper.update(epoch, row.get(vocab.VAL_LOSS))
        if improved:
            hooks.on_best(epoch, row)
        hooks.log_epoch(row)
        reporter.epoch_end(row, improved)
        hooks.save_state(Position(epoch + 1, 0), None)
        ended["epochs_run"] = epoch
        if stopper.should_stop:
            return {**ended, "stopped_early": epoch < epochs}
        if _any(d, hooks.stop_requested(), p.device) and epoch < epochs:
            return {**ended, "interrupted": True, "position": [epoch + 1, 0]}
    return ended


def _any(d: Dist, flag: bool, device: torch.device) -> bool:
    """True on every process when it is true on one of them."""
    if not d.enabled:
        return flag
    return bool(all_reduce_max(torch.tensor([int(flag)], device=device), d))  # NCCL reduces device tensors only


def _agree(d: Dist, stop: bool, tally: Tally) -> tuple[bool, tuple[int, float] | None]:
    """One collective for the read-out: any process asked to stop, and the first non-finite batch on any."""
    bad_step, bad_loss = int(tally.bad_step), float(tally.bad_loss)  # host syncs, as in one process
    # the first bad step is the largest of (steps - step); its loss rides along with it
    steps_left = 1 << 40
    device = tally.bad_step.device  # NCCL reduces device tensors only
    flags = torch.tensor([int(stop), steps_left - bad_step if bad_step else 0], dtype=torch.float64, device=device)
    all_reduce_max(flags, d)
    first = steps_left - int(flags[1]) if flags[1] else 0
    if not first:
        return bool(flags[0]), None
    nan = bad_step == first and math.isnan(bad_loss)
    value = bad_loss if bad_step == first and not nan else -math.inf
    # a NaN is sent as a flag: the maximum of a NaN and a number is not defined the same everywhere
    loss = torch.tensor([float(nan), value], dtype=torch.float64, device=device)
    all_reduce_max(loss, d)
    return bool(flags[0]), (first, math.nan if loss[0] else float(loss[1]))


def _current_lrs(p: LoopParts) -> dict[str, float]:
    # Every group follows the same schedule factor; derive both rates from it so a frozen backbone
    # (no backbone group at all) still logs what its rate would be.
    group = p.optimizer.param_groups[0]
    factor = group["lr"] / group["initial_lr"] if group.get("initial_lr") else 1.0
    return {"lr_backbone": p.lr_backbone * factor, "lr_heads": p.lr_heads * factor}
