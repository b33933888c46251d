"""Set a training run up from its config (or continue one), run the loop, and leave a complete run folder.

``train`` reads as set-up -> fit -> finish: ``set_up`` checks the inputs, tokenizes the data, builds
the model and the run folder (and, on resume, puts back what last.pt holds); ``fit`` is the loop
(training/loop.py); ``finish`` writes the summary and plots and says how the run ended.
"""

from __future__ import annotations

import contextlib
import gc
import random
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mtlcli import __version__, atomic, config as config_mod, runs
from mtlcli.model import builder
from mtlcli.data import tables as data_mod
from mtlcli.reports import plots
from mtlcli.data.batching import Encoded, from_tokens, model_length_limit, train_batches
from mtlcli.data.token_cache import FOLDER as TOKEN_CACHE, TokenCache
from mtlcli.model.checkpoint import Checkpoint
from mtlcli.config import TrainConfig
from mtlcli.runtime.cuda_graphs import graph_blocker
from mtlcli.errors import RunFailed, UserError
from mtlcli.runtime.dropout import use_cpu_dropout
from mtlcli.runtime.heap import free_large_blocks_at_once
from mtlcli.runtime.hardware import autocast, configure_device, is_out_of_memory, resolve_device, resolve_precision
from mtlcli.model.losses import Objective
from mtlcli.model.network import (apply_freeze, check_freeze, default_model_path, enable_gradient_checkpointing,
                                  load_pretrained_backbone, load_tokenizer, parameter_groups)
from mtlcli.scoring.quality import task_checks
from mtlcli.registry import schedulers, task_types
from mtlcli.tasks import columns
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind
from mtlcli.training import distributed, memory
from mtlcli.training.grad_scaling import grad_scaler
from mtlcli.training.interrupt import StopSignals, TrainingInterrupted
from mtlcli.training.loop import Hooks, LoopParts, Position, budget_spent, epoch_mark, fit
from mtlcli.training.policies import BestCheckpoint, EarlyStopping, LastEpoch, Pruning
from mtlcli.training.reporter import Reporter
from mtlcli.training.resume import TrainingState, data_fingerprint, last_checkpoint
from mtlcli.training.tracking import TrackingReporter, build_trackers, start_trackers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def collections_held():
    """No garbage collection while the run sets up: it allocates objects by the million (libraries,
    the model, every text's tokens) and frees next to none, so each collection walks them for
    nothing (0.3 s of tokenizing alone). What is loaded by then lives as long as the process: frozen,
    the collector stops walking it on every full collection after that (1 to 2 s of a short run)."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def train(cfg: TrainConfig, reporter: Reporter | None = None, resume: Path | None = None,
          judge: Callable[[dict[str, Any]], str | None] | None = None) -> Path:
    """Train from a resolved config; returns the run folder. ``resume``: continue that run in place.
    ``judge``: sees each validation's row and may stop the run there (``Pruning``: `mtl tune`'s pruner).

    Raises TrainingInterrupted after Ctrl-C or SIGTERM (with everything saved to go on), and
    RunFailed when the loss stops being finite or a file cannot be written.
    """
    with StopSignals() as stop:  # until the loop runs, a signal ends the process at once: nothing to save yet
        try:
            with collections_held():
                session = set_up(cfg, reporter or Reporter(), resume, stop, judge)
            stop.armed = True  # from here a first Ctrl-C/SIGTERM means: finish the batch, save, stop
            result = fit(session.parts, cfg.epochs, session.stopper, session.hooks, session.start, session.tally)
            try:
                return finish(session, result, stop)
            finally:
                distributed.wait_for_all()  # the others leave once the main process has written the summary
        except (RuntimeError, OSError, MemoryError) as exc:
            if is_out_of_memory(exc):  # what the estimate before training let through
                raise memory.out_of_memory("training", cfg.batch_size, cfg.max_length,
                                           "; the run folder keeps its last complete checkpoint") from None
            if not distributed.launched_by_torchrun() or not distributed.is_peer_failure(exc):
                raise
            raise RunFailed(f"training stopped: another training process ended ({distributed.first_line(exc)}); "
                            "see its messages above. The run folder keeps its last complete checkpoint") from None
        finally:
            distributed.shutdown()


# ---- the inputs, checked before any model loads -----------------------------------------------


@dataclass
class Inputs:
    train: data_mod.Table
    val: data_mod.Table  # no rows with --val-split 0
    test: data_mod.Table | None  # --test
    tasks: dict[str, Task]  # each task column's type and what it learned from the training rows
    why: dict[str, str]  # why each task has its type (chosen, or what its cells show)
    components: dict[str, dict[str, str]]  # kind -> name, package, version: saved in every checkpoint
    device: torch.device
    precision: str


def check_inputs(cfg: TrainConfig, resume: Path | None, nproc: int = 1, new_folder: bool = True) -> Inputs:
    """Everything that can be checked without the model, so bad input is reported in seconds.

    Every training process runs these first; `mtl train --nproc` also runs them once before its
    processes start, so a bad input is one message instead of one per process. ``new_folder``:
    check that the run folder can be made (the main process does).
    """
    if not cfg.data:
        raise UserError("no training data: give DATA (a CSV, TSV, JSONL or Parquet file, or 'data' in the config file)")
    if cfg.eval_steps and not cfg.val and cfg.val_split == 0:
        raise UserError(f"--eval-steps {cfg.eval_steps}: --val-split 0 leaves no validation rows to score every "
                        f"{cfg.eval_steps} steps; drop --eval-steps, or give --val FILE or a --val-split above 0")
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} CUDA device(s) and each "
                        "process takes one; use at most that many (or --device cpu)")
    if resume is None and new_folder:
        runs.check_run_target(cfg.out, cfg.name)
    check_task_types(cfg)
    train_table, val_table, tasks, why = columns.load_train_val(
        cfg.data, cfg.val, cfg.text_column, cfg.tasks, cfg.val_split, cfg.seed, cfg.delimiter, cfg.task_types,
        cfg.to_dict())
    test_table = columns.load_test(cfg.test, cfg.text_column, tasks, cfg.delimiter) if cfg.test else None
    components = builder.look_up_components(cfg.to_dict())
    check_task_settings(cfg, tasks)
    return Inputs(train_table, val_table, test_table, tasks, why, components, device, precision)


def preflight(cfg: TrainConfig, resume: Path | None, nproc: int) -> None:
    """`mtl train --nproc`: the inputs and the trackers, checked once before the processes start."""
    check_inputs(cfg, resume, nproc)
    build_trackers(cfg.track)  # a missing extra is one line here, not one per process


def check_task_types(cfg: TrainConfig) -> None:
    """--task-type names a type that exists (before the data is read: the type reads the cells)."""
    for task, type_name in cfg.task_types.items():
        if type_name not in task_types:
            raise UserError(f"--task-type {task}={type_name}: unknown task type '{type_name}' "
                            f"(available: {', '.join(task_types.names())})")


def check_task_settings(cfg: TrainConfig, tasks: dict[str, Task]) -> None:
    """Settings that name tasks must name tasks the data has."""
    for option, named in (("--task-weight", cfg.task_weights), ("--task-type", cfg.task_types),
                          ("--class-weight", cfg.class_weight if isinstance(cfg.class_weight, dict) else {})):
        for task in named:
            if task not in tasks:
                raise UserError(f"{option} {task}=...: no task '{task}' (tasks: {', '.join(tasks)})")
    check_freeze(cfg.freeze, list(tasks))


def resolve_max_length(cfg: TrainConfig, tokens: TokenCache, backbone, model_path: str, texts: list[str]) -> int:
    """The number of tokens texts are cut to: auto measures the training texts; a number beyond the
    model's position embeddings would fail mid-run, so it is refused now."""
    limit = model_length_limit(tokens.tokenizer, backbone)
    if cfg.max_length == "auto":
        return tokens.auto_max_length(texts, limit, cfg.seed)
    if limit and cfg.max_length > limit:
        raise UserError(f"--max-length {cfg.max_length}: the model '{model_path}' reads at most {limit} tokens; "
                        f"use --max-length {limit} or less (longer texts are truncated)")
    return cfg.max_length


def class_weights(cfg: TrainConfig, targets: dict[str, np.ndarray], tasks: dict[str, Task]) -> dict[str, list[float]]:
    """--class-weight: balanced weights from the training rows for the tasks that ask for them: one
    HOW for every task, or TASK=HOW for the tasks named (the others: auto). ``auto`` is what the
    task's type weighs by default (multi-label: balanced). Only types with labels have anything to weigh."""
    def how(name: str) -> str:
        chosen = cfg.class_weight.get(name, "auto") if isinstance(cfg.class_weight, dict) else cfg.class_weight
        return kind(tasks[name]).default_class_weight if chosen == "auto" else chosen

    named = cfg.class_weight if isinstance(cfg.class_weight, dict) else {}
    # a task named for it is handed to its type, which refuses what it cannot weigh (a regression task)
    wanted = [t for t, task in tasks.items() if how(t) == "balanced" and (task.labels or t in named)]
    return {t: kind(tasks[t]).class_weights(tasks[t], targets[t]) for t in wanted}


def checkpoint_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """Sizes of a best checkpoint (the weights) and of last.pt (weights + AdamW's two moments)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights, weights + moments


# ---- set-up -> fit -> finish -------------------------------------------------------------------


@dataclass
class Session:
    """A run set up to train: what the loop takes, and what finishing the run reads."""

    cfg: TrainConfig
    run: Path
    main: bool  # only the main process writes files and shows the display
    parts: LoopParts
    stopper: EarlyStopping | Pruning
    saver: BestCheckpoint
    log: runs.MetricsLog
    hooks: Hooks
    start: Position
    tally: dict | None
    info: dict[str, Any]  # what the display shows at the start; the summary repeats part of it
    best_row: dict[str, Any]
    test: Encoded | None  # --test: scored with the best checkpoint when the run ends


def set_up(cfg: TrainConfig, reporter: Reporter, resume: Path | None, stop: StopSignals,
           judge: Callable[[dict[str, Any]], str | None] | None = None) -> Session:
    inputs = check_inputs(cfg, resume, new_folder=distributed.is_main_process())
    dist, device = distributed.init(inputs.device)  # under torchrun: join the others, take this process's GPU
    configure_device(device)
    if cfg.gradient_checkpointing and device.type == "cpu":  # the freed activations must leave the process too
        free_large_blocks_at_once()
    main, tasks, precision = dist.is_main, inputs.tasks, inputs.precision
    label_sets = {t: task.labels for t, task in tasks.items()}
    reporter = reporter if main else Reporter()  # one display, from the main process
    trackers = build_trackers(cfg.track) if main else []  # one record of the run
    cfg.data = str(Path(cfg.data).resolve())
    cfg.val = str(Path(cfg.val).resolve()) if cfg.val else None
    cfg.test = str(Path(cfg.test).resolve()) if cfg.test else None
    cfg.tasks = list(tasks)
    cfg.task_types = {t: task.type for t, task in tasks.items()}  # as inferred: config.yaml repeats the run
    fingerprint = data_fingerprint(cfg)

    # ---- the backbone and the tokenized data, then the run folder: a model that does not load, or a
    # batch that cannot fit in memory, leaves no folder behind
    data = tokenize_inputs(cfg, inputs, token_cache_folder(cfg, resume))
    memory.check_batch_fits(data.backbone, data.train.lengths, cfg.batch_size, data.max_length, precision, device,
                            dist.world_size, memory.local_processes(), reporter.warning)
    run = resume or Path(distributed.broadcast_object(str(runs.create_run(cfg.out, cfg.name)) if main else None, dist))
    if main:
        runs.remove_leftovers(run)  # temporary files of a process killed while writing
    saved = TrainingState.read(run, fingerprint) if resume else None
    if main:
        _write_run_files(run, cfg, label_sets, data.tokenizer, data.backbone)

    # ---- model and optimisation
    model, combiner = builder.build(data.backbone, tasks, cfg)
    if device.type == "cpu":  # a cheaper random mask (runtime/dropout.py); a GPU keeps its own kernel
        use_cpu_dropout(model)
    apply_freeze(model, cfg.freeze)
    model.to(device)
    combiner.to(device)
    groups = parameter_groups(model, combiner, cfg.lr_backbone, cfg.lr_heads, cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda") or None)  # one kernel for all parameters
    # optimizer steps: each takes --batch-size x --grad-accum rows; under torchrun a last batch
    # smaller than the processes is left out
    steps_per_epoch = len(distributed.usable_batches(
        train_batches(data.train.lengths, cfg.batch_size * cfg.grad_accum, cfg.seed, 1), dist))
    total = cfg.max_steps or steps_per_epoch * cfg.epochs
    warmup = TrainingState.warmup(saved, cfg.warmup_ratio, total)
    scheduler = schedulers.get(cfg.scheduler)(optimizer, total, warmup)
    scaler = grad_scaler(device, precision)  # fp16: loss scaling, its state saved in last.pt

    # ---- policies, and where a resumed run goes on from
    stopper = EarlyStopping(cfg.patience, cfg.min_delta) if len(data.val) else LastEpoch()
    if judge is not None:
        stopper = Pruning(stopper, judge)
    saver = BestCheckpoint(run / "checkpoints", cfg.keep_all_best, save=lambda path, ckpt: ckpt.save(path))
    log = runs.MetricsLog(run / "metrics.jsonl") if main else _MemoryLog(run / "metrics.jsonl")
    state = TrainingState(run, optimizer, scheduler, scaler, stopper, saver, log, total, warmup, fingerprint)
    start, tally = _go_on_from(saved, state, model, combiner, cfg, resume is not None, main, steps_per_epoch)
    if main:
        best_size, last_size = checkpoint_bytes(model)
        runs.require_free_space(run, best_size + 2 * last_size + (0 if saved else best_size),
                                "the checkpoints of this model (a best one and last.pt, each written beside the old)")

    graphs_off = graph_blocker(device, [model, combiner], loss_scaling=scaler.is_enabled(), distributed=dist.enabled,
                               accumulating=cfg.grad_accum > 1, checkpointing=cfg.gradient_checkpointing,
                               partial_labels=not all(np.asarray(kind(tasks[t]).labelled(y)).all()
                                                      for t, y in data.train.labels.items())) \
        if cfg.cuda_graphs else "--no-cuda-graphs"
    info = {"run": str(run), "device": str(device), "precision": precision, "model": data.model_path,
            "max_length": data.max_length, "max_length_auto": cfg.max_length == "auto",
            "train_rows": len(data.train), "val_rows": len(data.val), "tasks": label_sets, "epochs": cfg.epochs,
            "max_steps": cfg.max_steps or None,
            "test_rows": len(data.test) if data.test is not None else None,
            "task_types": {t: {"type": task.type, "why": inputs.why.get(t, "")} for t, task in tasks.items()},
            "steps_per_epoch": steps_per_epoch, "components": inputs.components,
            "resumed_from": [start.epoch, start.step] if saved else None, "processes": dist.world_size,
            "cuda_graphs": graphs_off or "on", "tokens": data.tokens.summary()}
    if main:  # every check has passed: the trackers start, then ``latest`` points at the run
        _start_trackers(trackers, cfg, run, resume)
        runs.point_latest(run)
        unsaved = data.tokens.save()  # the tokens for the next run; the other processes tokenized the same
        if unsaved:
            reporter.warning(unsaved)
    if trackers:
        reporter = TrackingReporter(reporter, trackers, by_step=bool(cfg.eval_steps or cfg.max_steps))
    reporter.train_start(info)

    def checkpoint(epoch: int, row: dict[str, Any]) -> Checkpoint:
        # the config as trained: --max-length auto resolved, so eval and predict cut texts alike
        return Checkpoint(config={**cfg.to_dict(), "max_length": data.max_length}, labels=label_sets,
                          model=model.state_dict(), combiner=combiner.state_dict(), epoch=epoch, metrics=row,
                          objective=data.objective.to_dict(), components=inputs.components, precision=precision,
                          task_types={t: task.to_dict() for t, task in tasks.items()}, mtl_version=__version__)

    writer = CheckpointWriter(checkpoint, state, main, cfg.keep_optimizer)
    def log_row(row: dict[str, Any]) -> None:
        log.append(row)
        if isinstance(stopper, Pruning):  # the search's judge sees each validation as it is logged
            stopper.observe(row)

    hooks = Hooks(writer.on_best, log_row, writer.save_state, lambda: stop.requested, reporter)
    # DDP averages gradients over processes; checkpoints keep saving the unwrapped ``model``
    parts = LoopParts(model=distributed.wrap(model, dist, device), combiner=combiner, optimizer=optimizer,
                      scheduler=scheduler, train=data.train, val=data.val, tasks=tasks, device=device,
                      amp=partial(autocast, device, precision), precision=precision, pad_id=data.tokenizer.pad_token_id or 0,
                      batch_size=cfg.batch_size, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed,
                      lr_backbone=cfg.lr_backbone, lr_heads=cfg.lr_heads, max_length=data.max_length,
                      objective=data.objective, dist=dist, scaler=scaler, cuda_graphs=graphs_off is None,
                      grad_accum=cfg.grad_accum, max_steps=cfg.max_steps, eval_steps=cfg.eval_steps,
                      log_steps=cfg.log_steps)
    return Session(cfg, run, main, parts, stopper, saver, log, hooks, start, tally, info, writer.best_row, data.test)


@dataclass
class Tokenized:
    """The pretrained backbone and the data as the model reads it."""

    model_path: str
    tokenizer: Any
    backbone: torch.nn.Module
    max_length: int
    train: Encoded
    val: Encoded
    test: Encoded | None
    objective: Objective  # its class weights come from the training rows' labels
    tokens: TokenCache  # what came from the token cache, and the entries to add to it


def token_cache_folder(cfg: TrainConfig, resume: Path | None) -> Path | None:
    """``<runs folder>/.cache/tokens``, beside the runs (a resumed run's own folder of runs); None: --no-token-cache."""
    return (resume.parent if resume else Path(cfg.out)) / TOKEN_CACHE if cfg.token_cache else None


def tokenize_inputs(cfg: TrainConfig, inputs: Inputs, cache: Path | None = None) -> Tokenized:
    """The backbone, and every table tokenized (through the token cache in ``cache``, when given)."""
    model_path = cfg.model or default_model_path()
    seed_everything(cfg.seed)
    # transformers' classes only where mtl's own do not cover the model, or for gradient checkpointing
    native = not cfg.gradient_checkpointing
    tokenizer = load_tokenizer(model_path, native=True)
    own = cfg.attention_dropout == "model"
    backbone = load_pretrained_backbone(model_path, None if own else cfg.attention_dropout, native)
    if cfg.gradient_checkpointing:  # before the run folder exists: a backbone without it is refused first
        enable_gradient_checkpointing(backbone)
    tokens = TokenCache(cache, tokenizer)
    max_length = resolve_max_length(cfg, tokens, backbone, model_path, inputs.train.texts)
    train_ids = columns.encode_targets(inputs.train, inputs.tasks)
    val_ids = columns.encode_targets(inputs.val, inputs.tasks)
    test = inputs.test
    return Tokenized(model_path, tokenizer, backbone, max_length,
                     from_tokens(*tokens.tokenize(inputs.train.texts, max_length), train_ids),
                     from_tokens(*tokens.tokenize(inputs.val.texts, max_length), val_ids),
                     from_tokens(*tokens.tokenize(test.texts, max_length), columns.encode_targets(test, inputs.tasks))
                     if test is not None else None,
                     Objective(class_weights(cfg, train_ids, inputs.tasks), cfg.label_smoothing), tokens)


def _start_trackers(trackers: list[tuple[str, Any]], cfg: TrainConfig, run: Path, resume: Path | None) -> None:
    """Trackers start last before training: they record the run folder's name and write into it,
    and a run that a later check refused would leave them a record of nothing. One that cannot
    start removes a new folder again (``latest`` does not point at it yet), so a refused run leaves
    nothing behind; a resumed run's folder is kept as it was."""
    try:
        start_trackers(trackers, cfg.to_dict(), run, resumed=resume is not None)
    except UserError:
        if resume is None:
            shutil.rmtree(run, ignore_errors=True)
        raise


def _write_run_files(run: Path, cfg: TrainConfig, label_sets: dict[str, list[str]], tokenizer, backbone) -> None:
    """What the run folder holds before the first epoch: settings, labels, the backbone's files."""
    atomic.write_atomic(run / "config.yaml", config_mod.dump(cfg))
    atomic.write_json(run / "labels.json", label_sets)
    if not (run / "backbone").is_dir():
        runs.save_backbone_files(run, tokenizer, backbone)


def _go_on_from(saved: Checkpoint | None, state: TrainingState, model, combiner, cfg: TrainConfig, resumed: bool,
                main: bool, steps_per_epoch: int) -> tuple[Position, dict | None]:
    """Where the run starts: afresh, or where last.pt says; a run with nothing left to do is told how to go on."""
    start, tally = state.restore(saved, model, combiner) if saved else (Position(), None)
    stopper = state.stopper
    done = epoch_mark(start.epoch, start.step, steps_per_epoch) if start.step else start.epoch - 1
    if saved and stopper.should_stop:
        raise UserError(f"{state.run}: the run stopped early after epoch {done} (no improvement for "
                        f"{stopper.bad_epochs} validations); to train on, raise --patience with --resume")
    steps_done = (start.epoch - 1) * steps_per_epoch + start.step
    if budget_spent(cfg.max_steps, steps_done):
        raise UserError(f"{state.run}: the run has finished (step {steps_done} of {cfg.max_steps}); "
                        "to train on, raise --max-steps with --resume")
    if not cfg.max_steps and start.epoch > cfg.epochs:
        raise UserError(f"{state.run}: the run has finished (epoch {cfg.epochs} of {cfg.epochs}); "
                        "to train on, raise --epochs with --resume")
    if main:
        if resumed and not saved:  # killed before its first checkpoint: the run starts over in place
            state.log.restore([])
            (state.run / "summary.json").unlink(missing_ok=True)
        state.saver.tidy(done)  # bests of validations that will run again
    return start, tally


class CheckpointWriter:
    """The loop's checkpoint hooks: a best checkpoint on each improvement, last.pt after every epoch
    and on a stop. Only the main process writes; every process keeps the best epoch's metrics."""

    def __init__(self, checkpoint: Callable[[int, dict], Checkpoint], state: TrainingState, main: bool,
                 keep_optimizer: bool = False):
        self.checkpoint, self.state, self.main = checkpoint, state, main
        self.keep_optimizer = keep_optimizer
        self.best_row = next((dict(r) for r in state.log.rows if r.get("epoch") == state.stopper.best_epoch), {})

    def on_best(self, epoch: int, row: dict[str, Any]) -> None:
        if self.main:
            self.state.saver(epoch, self.checkpoint(epoch, row))
        self.best_row.clear()
        self.best_row.update(row)

    def save_state(self, at: Position, tally: dict | None, ends: bool = False) -> None:
        """checkpoints/last.pt: the weights where training stands, and all it takes to go on from there.

        Where the run ends (``ends``) without --keep-optimizer, ``finish`` would delete the new
        last.pt (363 MB with the bundled model) right after writing the summary, so it is not written:
        a crash before the summary leaves the previous last.pt, and --resume trains the rest again.
        The replaced best checkpoint then goes in ``finish``, once that last.pt is gone."""
        if not self.main or (ends and not self.keep_optimizer):
            return
        rows = self.state.log.rows
        last = self.checkpoint(at.epoch - 1, rows[-1] if rows else {})  # epoch: the last complete one
        last.resume = self.state.payload(at, tally)
        last.save(last_checkpoint(self.state.run))
        self.state.saver.prune()  # only now that last.pt names the new best can the old one go


def finish(session: Session, result: dict[str, Any], stop: StopSignals) -> Path:
    """The run's summary and plots, however it ended; then say how it ended."""
    run, info, best_row = session.run, session.info, session.best_row
    if not session.main:  # the main process writes the summary and reports how it ended
        return run
    saver, stopper, log, parts = session.saver, session.stopper, session.log, session.parts
    last = last_checkpoint(run)
    validated = len(parts.val) > 0
    ended = not result["interrupted"] and not result["diverged"]  # finished, or stopped early
    # a run that spent its --max-steps keeps it: --resume with a larger --max-steps goes on from there
    spent = budget_spent(session.cfg.max_steps, result["steps_run"])
    # the optimizer state only serves --resume: a run that ended drops it unless told to keep it
    drop_optimizer = ended and not spent and not session.cfg.keep_optimizer
    summary = {"best_epoch": stopper.best_epoch, "best_val_loss": stopper.best,
               "best_rule": "lowest validation loss" if validated else runs.NO_VALIDATION_RULE, **result,
               "best_checkpoint": str(saver.path.relative_to(run)) if saver.path else None,
               "last_checkpoint": str(last.relative_to(run)) if last.is_file() and not drop_optimizer else None,
               "optimizer_state": runs.DROPPED if drop_optimizer else runs.KEPT if last.is_file() else None,
               **{k: info[k] for k in ("device", "precision", "model", "max_length")},
               "class_weights": parts.objective.class_weights, "best_metrics": best_row}
    if isinstance(stopper, Pruning) and stopper.reason:  # its judge stopped it (`mtl tune`'s pruner): say why
        summary.update(pruned=True, pruned_reason=stopper.reason)
    if stopper.best_epoch:  # the optimizer step of the best validation (1.5: half into epoch 2)
        summary["best_step"] = round(stopper.best_epoch * info["steps_per_epoch"])
    checks = task_checks(best_row, parts.val, parts.tasks) if validated else {}
    if checks:
        summary["task_checks"] = checks
        summary["warnings"] = [c["warning"] for c in checks.values() if c.get("warning")]
    if ended and session.test is not None and saver.path:
        summary["test"] = score_test_file(run, saver.path, session.test, info["device"], session.cfg.test)
    atomic.write_json(run / "summary.json", summary)
    if drop_optimizer:
        last.unlink(missing_ok=True)  # after summary.json says so: a crash in between leaves it for `mtl tidy`
        saver.prune()  # the best that the last epoch replaced (CheckpointWriter.save_state wrote no last.pt)
    if log.rows:
        plots.write_png({run.name: log.rows}, plots.default_panels(log.rows), run / "plots" / "learning_curves.png",
                        {run.name: stopper.best_epoch or None})
    session.hooks.reporter.train_end({**summary, "run": str(run), "rows": log.rows})
    if result["diverged"]:
        raise RunFailed(_diverged_message(result["diverged"], saver.path, run, info["steps_per_epoch"],
                                          session.cfg.max_grad_norm > 0))
    if result["interrupted"]:
        raise TrainingInterrupted(run, stop.received, *result["position"])
    return run


def score_test_file(run: Path, best: Path, test: Encoded, device: str, path: str | None) -> dict[str, Any]:
    """--test scored with the best checkpoint, by the loader and scoring routine `mtl eval` uses, so
    `mtl eval RUN FILE` gives the same numbers. Only the main process scores it."""
    from mtlcli.inference.loaded_run import load_run
    from mtlcli.scoring.scores import score_encoded

    loaded = load_run(run, device, "run", checkpoint=best)
    report, _ = score_encoded(loaded, test)
    tasks = {name: {k: v for k, v in entry.items() if k in ("type", "n", "loss", *_metric_names(loaded.tasks[name]))}
             for name, entry in report["tasks"].items()}
    return {"data": path, "checkpoint": str(best.relative_to(run)), "n": report["n"], "loss": report["loss"],
            "tasks": tasks}


def _metric_names(task: Task) -> set[str]:
    return {m.name for m in kind(task).metrics}


class _MemoryLog(runs.MetricsLog):
    """metrics.jsonl as the processes other than the main one see it: read, never written."""

    def _write(self) -> None:
        pass


def _diverged_message(where: dict[str, Any], best: Path | None, run: Path, steps: int, clipping: bool) -> str:
    at = (f"the training loss became {where['loss']} in epoch {where['epoch']} at batch {where['batch']} of {steps}"
          if where["batch"] else f"the validation loss became {where['loss']} after epoch {where['epoch']}")
    kept = (f"the best checkpoint ({best.relative_to(run)}) and last.pt are from before it" if best
            else "no epoch had finished, so the run has no checkpoint")
    advice = "lower learning rates (--lr-backbone, --lr-heads)" + ("" if clipping else " or --max-grad-norm 1.0")
    return f"training stopped: {at}; nothing after it was saved, and {kept}. Try {advice} in a new run"
