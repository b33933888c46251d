"""The training loop: one readable function; the policies and the run folder sit beside it.

The loop can start in the middle of an epoch (a resumed run): the batch order depends only on
(seed, epoch), so skipping the batches already done and restoring the epoch's running sums gives
the same numbers as a run that never stopped.

An optimizer step takes one global batch of ``batch_size x grad_accum`` rows (the batches a run with
that batch size would take) in ``grad_accum`` parts of ``batch_size`` rows, whose gradients add up to
the whole batch's. Validation runs at each epoch's end, every ``eval_steps`` optimizer steps and when
``max_steps`` is spent; each one logs a row (named by the epochs done: 1.25 is a quarter into epoch 2),
consults the policies and saves last.pt, so a run can go on from any of them.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np
import torch

from mtlcli.data.batching import Encoded, collate, train_batches, width_multiple
from mtlcli.runtime.attention import training_attention
from mtlcli.runtime.cuda_graphs import StepGraphs
from mtlcli.model.losses import Objective, task_losses
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind
from mtlcli.training.distributed import (Dist, all_gather_object, all_reduce_max, average_grads, shard, sum_in_place,
                                        usable_batches)
from mtlcli import vocabulary as vocab
from mtlcli.scoring.evaluation import evaluate
from mtlcli.runtime.heap import HeapTrimmer
from mtlcli.training.embedding_grads import RowGradients
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
    precision: str  # what ``amp`` computes in: fp32, bf16 or fp16
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
    grad_accum: int = 1  # batches of ``batch_size`` rows per optimizer step
    max_steps: int = 0  # optimizer steps in all (0: ``epochs`` decides)
    eval_steps: int = 0  # validate every this many optimizer steps too (0: at epoch ends only)
    log_steps: int = 10  # optimizer steps between the per-step losses the reporter hears


def budget_spent(max_steps: int, steps_run: int) -> bool:
    """Whether a run given ``--max-steps`` (0: none) has taken them all."""
    return bool(max_steps) and steps_run >= max_steps


def epoch_mark(epoch: int, step: int, steps: int) -> int | float:
    """A validation's name in metrics.jsonl's ``epoch``: the epoch at its end, else the epochs done
    (1.25: a quarter into epoch 2), as Hugging Face's Trainer logs it."""
    return epoch if step >= steps else round(epoch - 1 + step / steps, 4)


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
    # all it takes to go on from here (+ the epoch's running sums); ``ends``: the run ends here, every
    # epoch done or stopped early (not a spent --max-steps, which --resume with a larger one goes on from)
    save_state: Callable[[Position, dict | None, bool], None]
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
        self.window_sum = zero()  # the combined loss since the last per-step read-out, times rows
        self.window_rows = 0
        self.bad_step = torch.zeros((), dtype=torch.long, device=device)  # 0: every loss so far was finite
        self.bad_loss = zero()
        if state:
            self.load_state_dict(state, device)

    @torch.no_grad()
    def add(self, step: int, loss, summed, logits, labels, counts: dict[str, int], size: int, weight: float) -> None:
        """One batch: ``size`` rows over all processes, ``counts`` of them labelled per task; the
        combined ``loss`` counts ``weight`` times (the step's rows over the processes: each process's
        loss of each part is the part's share of the step's loss, scaled up by the number of shares)."""
        first_bad = (self.bad_step == 0) & ~torch.isfinite(loss.detach())
        self.bad_step = torch.where(first_bad, step, self.bad_step)
        self.bad_loss = torch.where(first_bad, loss.detach().float(), self.bad_loss)
        self.combined_sum += loss.detach() * weight
        self.window_sum += loss.detach() * weight
        for t in self.loss_sum:
            self.loss_sum[t] += summed[t][0].detach()
            if t in self.hits:
                self.correct[t] += self.hits[t](logits[t], labels[t])
            self.counted[t] += counts[t]
        self.seen += size
        self.window_rows += size

    def window_loss(self, d: Dist) -> float:
        """The mean combined loss since the last call (or the epoch's start), over all processes;
        all processes call it together."""
        total = self.window_sum.clone()
        sum_in_place([total], d)
        mean = float(total) / max(self.window_rows, 1)  # a host sync
        self.window_sum.zero_()
        self.window_rows = 0
        return mean

    def reduced(self, d: Dist) -> "Tally":
        """A copy with every process's sums added up (all processes call it together); this one
        keeps its own share, so the epoch goes on adding to it after a validation mid-epoch."""
        total = Tally.__new__(Tally)
        total.__dict__.update(self.__dict__)
        total.loss_sum = {t: v.clone() for t, v in self.loss_sum.items()}
        total.correct = {t: v.clone() for t, v in self.correct.items()}
        total.combined_sum, total.window_sum = self.combined_sum.clone(), self.window_sum.clone()
        sum_in_place([*total.loss_sum.values(), *total.correct.values(), total.combined_sum, total.window_sum], d)
        return total

    def saved_state(self, d: Dist) -> dict[str, Any]:
        """The epoch's sums for last.pt, called by all processes together: the total, and under
        torchrun each process's own share, so a run resumed on as many processes adds the same
        numbers in the same order as one that never stopped."""
        shares = all_gather_object(self.state_dict(), d) if d.enabled else None
        return {**self.reduced(d).state_dict(), **({"shares": shares} if shares else {})}

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
                "correct": {t: zero(v) for t, v in state["correct"].items()}, "combined_sum": zero(state["combined_sum"]),
                **({"window_sum": zero(state["window_sum"])} if "window_sum" in state else {})}

    def first_bad_batch(self) -> tuple[int, float] | None:
        step = int(self.bad_step)  # a host sync: called only where the display reads the loss anyway
        return (step, float(self.bad_loss)) if step else None

    def state_dict(self) -> dict[str, Any]:
        cpu = lambda d: {t: v.detach().cpu() for t, v in d.items()}  # noqa: E731
        return {"loss_sum": cpu(self.loss_sum), "correct": cpu(self.correct), "counted": dict(self.counted),
                "combined_sum": self.combined_sum.detach().cpu(), "seen": self.seen,
                "window_sum": self.window_sum.detach().cpu(), "window_rows": self.window_rows}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.loss_sum = {t: v.to(device) for t, v in state["loss_sum"].items()}
        self.correct = {t: v.to(device) for t, v in state["correct"].items()}
        self.counted = dict(state["counted"])
        self.combined_sum = state["combined_sum"].to(device)
        self.seen = int(state["seen"])
        if "window_sum" in state:  # last.pt of a run from before per-step losses: the window starts here
            self.window_sum = state["window_sum"].to(device)
            self.window_rows = int(state["window_rows"])


OWN_MAPPING = 32 << 20  # bytes: glibc serves a block this large from a mapping of its own, never from its heap


def gradient_buffers(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     as_rows: list[torch.Tensor]) -> tuple[list, list]:
    """The trained parameters, split: those whose gradient buffers are kept from step to step (the
    backbone's: every step gives them a gradient) and the rest, whose gradients are dropped. Among
    the rest, ``as_rows``: a table whose gradient comes as the rows read (embedding_grads.py).

    A backbone tensor over OWN_MAPPING bytes (the word embeddings: 30,522 x 384 in MiniLM) joins the
    rest: its buffer is a mapping of its own, so dropping it leaves no hole in the heap, and the
    backward pass's new gradient is then taken as it is instead of being added to zeros (a CPU
    training step of the bundled model 4% faster, the same numbers)."""
    backbone = {id(q) for q in getattr(model, "module", model).backbone.parameters()}
    trained = [q for group in optimizer.param_groups for q in group["params"]]
    rows = {id(q) for q in as_rows}
    kept = {id(q) for q in trained
            if id(q) in backbone and id(q) not in rows and q.numel() * q.element_size() <= OWN_MAPPING}
    return [q for q in trained if id(q) in kept], [q for q in trained if id(q) not in kept]


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


def micro_batches(rows: np.ndarray, batch_size: int, d: Dist) -> list[np.ndarray]:
    """An optimizer step's rows in the parts that each go through the model at once: ``batch_size``
    rows after another (the step's rows are sorted by length, so each part pads little). Under
    torchrun a part of fewer rows than processes is left out, so every process has a row in each."""
    parts = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return [part for part in parts if len(part) >= d.world_size]


def fit(parts: LoopParts, epochs: int, stopper: EarlyStopping, hooks: Hooks, start: Position = Position(),
        tally_state: dict | None = None) -> dict[str, Any]:
    """Train from ``start`` to ``epochs`` (or ``max_steps``); returns how it ended (done, stopped
    early, interrupted, diverged)."""
    p, reporter, d = parts, hooks.reporter, parts.dist
    tasks = list(p.tasks)
    multiple = width_multiple(p.device, p.precision)
    trim_heap = HeapTrimmer(p.device)
    read_rows = RowGradients.of(p.model, p.device, d.enabled)  # CPU: the word embeddings' gradient as the rows read
    kept, dropped = gradient_buffers(p.model, p.optimizer, read_rows.weights)
    accumulating = p.grad_accum > 1
    assert not (accumulating and p.cuda_graphs), "graph_blocker turns CUDA graphs off for gradient accumulation"

    def epoch_batches(epoch: int) -> list[np.ndarray]:
        return usable_batches(train_batches(p.train.lengths, p.batch_size * p.grad_accum, p.seed, epoch), d)

    per_epoch = len(epoch_batches(start.epoch))  # the same every epoch: only the order changes
    last_epoch = -(-p.max_steps // per_epoch) if p.max_steps else epochs

    def forward_backward(input_ids, attention_mask, labels, counts, clear: Callable[[], None]) -> tuple:
        # the backward pass too: under gradient checkpointing it runs the attention again
        with training_attention(p.device, input_ids.shape[1]):
            with p.amp():
                logits = p.model(input_ids, attention_mask)
            summed = task_losses(logits, labels, p.tasks, p.objective)
            # ``counts``: labelled rows per task in the step's whole batch. Each process's summed loss of
            # each part, divided by them and scaled up by the number of shares (processes x parts), makes
            # the gradients, added over the parts and averaged over the processes (DDP), exactly those of
            # the whole batch in one process (for a combiner linear in each task's loss, as all built-in ones)
            shares = d.world_size * p.grad_accum
            loss = p.combiner({t: summed[t][0] * shares / counts[t] for t in tasks if counts[t]}) / p.grad_accum
            clear()
            p.scaler.scale(loss).backward()  # fp16: scaled up so small gradients do not underflow
        return loss, summed, logits

    clear = partial(clear_grads, kept, dropped)
    # accumulating, the gradients are cleared once per optimizer step, before its first part
    step_pass = partial(forward_backward, clear=(lambda: None) if accumulating else clear)
    if p.cuda_graphs:
        trained = kept + dropped
        step_pass = graphs = StepGraphs(partial(forward_backward, clear=partial(zero_grads, trained)), trained,
                                        reporter.warning)
    no_sync = getattr(p.model, "no_sync", contextlib.nullcontext)  # DDP: average only after the last part
    ended = {"epochs_run": start.epoch - 1, "steps_run": (start.epoch - 1) * per_epoch + start.step,
             "stopped_early": False, "interrupted": False, "diverged": None}

    def validate(epoch: int, step: int, steps: int, tally: Tally, t0: float, seen_before: int) -> dict | None:
        """Validate where training stands, log the row, consult the policies, save last.pt; returns
        how the run ends when it ends here (diverged, stopped early), else None."""
        at_end = step == steps
        train_seconds = max(time.perf_counter() - t0, 1e-9)  # only the part of the epoch run in this process
        total = tally.reduced(d)
        train_task_loss = {t: float(total.loss_sum[t]) / total.counted[t] for t in tasks if total.counted[t]}
        if at_end:
            p.combiner.epoch_end(train_task_loss)  # combiners adapt between epochs, not between validations
        mark = epoch_mark(epoch, step, steps)
        val = None  # no validation rows (--val-split 0): the row holds training's numbers only
        if len(p.val):
            reporter.validation_start(mark)
            val = evaluate(getattr(p.model, "module", p.model), p.combiner, p.val, p.tasks, p.device, p.amp,
                           p.pad_id, p.max_length, p.objective, d, tune=True, precision=p.precision)
        row = {vocab.EPOCH: mark, **_current_lrs(p), vocab.SECONDS: round(time.perf_counter() - t0, 3),
               vocab.TRAIN_SECONDS: round(train_seconds, 3),
               vocab.TRAIN_SPEED: round((total.seen - seen_before) / train_seconds, 2),
               vocab.TRAIN_LOSS: float(total.combined_sum) / total.seen}
        if val:
            row[vocab.VAL_LOSS] = val["loss"]
        for t in tasks:
            trained = {vocab.LOSS.name: train_task_loss.get(t, float("nan"))}
            if t in total.hits:
                hits = float(total.correct[t]) / total.counted[t] if total.counted[t] else float("nan")
                trained[kind(p.tasks[t]).train_metric.name] = hits
            row.update(vocab.scores(t, vocab.TRAIN, trained))
            if val:
                scores = {m.name: val["tasks"][t][m.name] for m in kind(p.tasks[t]).metrics}
                row.update(vocab.scores(t, vocab.VAL, scores))
        if val and any(v["n"] and not math.isfinite(v["loss"]) for v in val["tasks"].values()):
            return {**ended, "diverged": {"epoch": mark, "batch": None, "loss": row[vocab.VAL_LOSS]}}

        # ---- policies: best checkpoint, log, the state to resume from, early stopping
        improved = stopper.update(mark, row.get(vocab.VAL_LOSS))
        if improved:
            hooks.on_best(mark, row)
        hooks.log_epoch(row)
        reporter.epoch_end(row, improved)
        spent = budget_spent(p.max_steps, ended["steps_run"])
        trained_all = spent if p.max_steps else at_end and epoch == last_epoch
        ends = not spent and (stopper.should_stop or trained_all)
        if at_end:
            hooks.save_state(Position(epoch + 1, 0), None, ends)
            ended["epochs_run"] = epoch
        else:
            hooks.save_state(Position(epoch, step), tally.saved_state(d), ends)
        if stopper.should_stop:
            return {**ended, "stopped_early": not trained_all}
        return None

    for epoch in range(start.epoch, last_epoch + 1):
        # ---- train one epoch; a resumed epoch skips the batches done before it stopped
        p.model.train()
        p.combiner.train()
        if p.cuda_graphs:
            graphs.reset()  # recorded anew each epoch: the combiner's epoch_end may have changed its tensors
        batches = epoch_batches(epoch)
        resumed = epoch == start.epoch and start.step > 0
        tally = Tally(p.tasks, p.device, Tally.resumed_state(tally_state, d) if resumed else None)
        reporter.epoch_start(epoch, len(batches))
        t0, seen_before = time.perf_counter(), tally.seen
        before = (epoch - 1) * per_epoch  # optimizer steps of the epochs before this one
        last = min(len(batches), p.max_steps - before) if p.max_steps else len(batches)
        for step in range(start.step + 1 if resumed else 1, last + 1):
            rows = batches[step - 1]  # the step's global batch; this process trains on its shard of each part
            # labelled rows per task in the whole batch (host side: no sync)
            counts = {t: int(kind(p.tasks[t]).labelled(p.train.labels[t][rows]).sum()) for t in tasks}
            chunks = micro_batches(rows, p.batch_size, d)
            if accumulating:
                clear()
            step_loss = 0.0
            for i, chunk in enumerate(chunks):
                part = counts if len(chunks) == 1 else {
                    t: int(kind(p.tasks[t]).labelled(p.train.labels[t][chunk]).sum()) for t in tasks}
                batch = collate(p.train, shard(chunk, d), p.pad_id, p.device, multiple, p.max_length)
                with no_sync() if i < len(chunks) - 1 else contextlib.nullcontext():
                    loss, summed, logits = step_pass(batch.input_ids, batch.attention_mask, batch.labels, counts)
                tally.add(step, loss, summed, logits, batch.labels, part, len(chunk), len(rows) / d.world_size)
                step_loss = step_loss + loss.detach()
            average_grads(p.combiner.parameters(), d)
            read_rows.densify()
            clip_and_step(p.scaler, p.optimizer, p.scheduler, p.model.parameters(), p.max_grad_norm)
            trim_heap()
            ended["steps_run"] = before + step

            # ---- read-outs (host syncs) only every few batches: display, NaN check, stop request;
            # under torchrun all processes agree on them there, so they stop together
            show = step % PROGRESS_EVERY == 0 or step == last
            if d.enabled:
                stopping, bad = _agree(d, hooks.stop_requested(), tally) if show else (False, None)
            else:
                stopping = hooks.stop_requested()
                show = show or stopping
                bad = tally.first_bad_batch() if show else None
            if bad:
                # the weights after that batch are never saved: last.pt and the best stay as they were
                return {**ended, "diverged": {"epoch": epoch, "batch": bad[0], "loss": bad[1]}}
            reporter.batch_end(epoch, step, len(batches), float(step_loss) if show else None,
                               (tally.seen - seen_before) / (time.perf_counter() - t0))
            if ended["steps_run"] % p.log_steps == 0:
                reporter.log_step(ended["steps_run"], {vocab.TRAIN_LOSS: tally.window_loss(d), **_current_lrs(p)})

            # ---- validation at the epoch's end, every eval_steps steps and when max_steps is spent
            spent = budget_spent(p.max_steps, ended["steps_run"])
            if step == len(batches) or spent or (p.eval_steps and ended["steps_run"] % p.eval_steps == 0):
                how = validate(epoch, step, len(batches), tally, t0, seen_before)
                if how:
                    return how
                if spent or (step == len(batches) and epoch == last_epoch):
                    return ended
                if _any(d, stopping or hooks.stop_requested(), p.device):
                    at = [epoch + 1, 0] if step == len(batches) else [epoch, step]
                    return {**ended, "interrupted": True, "position": at}
            elif stopping:
                hooks.save_state(Position(epoch, step), tally.saved_state(d), False)
                return {**ended, "interrupted": True, "position": [epoch, step]}
        if start.step >= len(batches) and epoch == start.epoch:
            # last.pt of a run from before validation came first: stopped after the epoch's last batch
            how = validate(epoch, len(batches), len(batches), tally, t0, seen_before)
            if how:
                return how
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
