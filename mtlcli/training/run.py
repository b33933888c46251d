"""Set a training run up from its config (or continue one), run the loop, and leave a complete run folder."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlcli import __version__, config as config_mod, data as data_mod, plots, runs
from mtlcli.batching import choose_max_length, encode, model_length_limit
from mtlcli.checkpoint import load_checkpoint, save_checkpoint
from mtlcli.config import TrainConfig
from mtlcli.errors import RunFailed, UserError
from mtlcli.losses import Objective, balanced_weights
from mtlcli.model import (apply_freeze, build_model, default_model_path, load_pretrained_backbone, load_tokenizer,
                          parameter_groups)
from mtlcli.quality import task_checks
from mtlcli.registry import heads, loss_combiners, poolers, schedulers
from mtlcli.training import distributed, memory
from mtlcli.training.grad_scaling import grad_scaler
from mtlcli.training.hardware import autocast, configure_device, resolve_device, resolve_precision
from mtlcli.training.interrupt import StopSignals, TrainingInterrupted
from mtlcli.training.loop import Hooks, LoopParts, Position, fit
from mtlcli.training.policies import BestCheckpoint, EarlyStopping
from mtlcli.training.report import Reporter
from mtlcli.training.resume import check_same_data, data_fingerprint, last_checkpoint, rng_state, set_rng_state
from mtlcli.training.tracking import TrackingReporter, build_trackers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_components(cfg: TrainConfig, tasks: list[str]) -> dict[str, dict[str, str]]:
    """Look every component up before anything slow happens; returns where each comes from."""
    found = {}
    for kind, registry, name in (("pooler", poolers, cfg.pooling), ("head", heads, cfg.head),
                                 ("loss_combiner", loss_combiners, cfg.loss_combiner),
                                 ("scheduler", schedulers, cfg.scheduler)):
        registry.get(name)
        entry = registry.entry(name)
        found[kind] = {"name": name, "source": entry.source, "version": entry.version}
    for task in cfg.task_weights:
        if task not in tasks:
            raise UserError(f"--task-weight {task}=...: no task '{task}' (tasks: {', '.join(tasks)})")
    for task in cfg.class_weight if isinstance(cfg.class_weight, dict) else []:
        if task not in tasks:
            raise UserError(f"--class-weight {task}=...: no task '{task}' (tasks: {', '.join(tasks)})")
    for spec in cfg.freeze:
        if spec not in ("none", "backbone", "embeddings") and not spec.startswith("bottom:") and spec not in tasks:
            raise UserError(f"--freeze {spec}: not one of none, backbone, embeddings, bottom:N or a task ({', '.join(tasks)})")
    if "backbone" in cfg.freeze and set(tasks) <= set(cfg.freeze):
        raise UserError(f"--freeze {' '.join(cfg.freeze)} freezes the whole model: nothing would train")
    return found


def resolve_max_length(cfg: TrainConfig, tokenizer, backbone, model_path: str, texts: list[str]) -> int:
    """The number of tokens texts are cut to: auto measures the training texts; a number beyond the
    model's position embeddings would fail mid-run, so it is refused now."""
    limit = model_length_limit(tokenizer, backbone)
    if cfg.max_length == "auto":
        return choose_max_length(tokenizer, texts, limit, cfg.seed)
    if limit and cfg.max_length > limit:
        raise UserError(f"--max-length {cfg.max_length}: the model '{model_path}' reads at most {limit} tokens; "
                        f"use --max-length {limit} or less (longer texts are truncated)")
    return cfg.max_length


def class_weights(cfg: TrainConfig, label_ids: dict[str, list[int]], label_sets: dict[str, list[str]]) -> dict[str, list[float]]:
    """--class-weight: balanced weights from the training rows for the tasks that ask for them."""
    wanted = cfg.class_weight if isinstance(cfg.class_weight, dict) else {t: cfg.class_weight for t in label_sets}
    return {t: balanced_weights(np.asarray(label_ids[t]), len(label_sets[t]))
            for t, how in wanted.items() if how == "balanced"}


def checkpoint_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """Sizes of a best checkpoint (the weights) and of last.pt (weights + AdamW's two moments)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights, weights + moments


def train(cfg: TrainConfig, reporter: Reporter | None = None, resume: Path | None = None) -> Path:
    """Train from a resolved config; returns the run folder. ``resume``: continue that run in place.

    Raises TrainingInterrupted after Ctrl-C or SIGTERM (with everything saved to go on), and
    RunFailed when the loss stops being finite or a file cannot be written.
    """
    import mtlcli.components  # noqa: F401  (built-ins registered before lookups)

    with StopSignals() as stop:  # until the loop runs, a signal ends the process at once: nothing to save yet
        try:
            return _train(cfg, reporter or Reporter(), resume, stop)
        except (RuntimeError, OSError, MemoryError) as exc:
            if memory.is_out_of_memory(exc):  # what the estimate before training let through
                raise memory.out_of_memory("training", cfg.batch_size, cfg.max_length,
                                           "; the run folder keeps its last complete checkpoint") from None
            if not distributed.launched_by_torchrun() or not distributed.is_peer_failure(exc):
                raise
            raise RunFailed(f"training stopped: another training process ended ({distributed.first_line(exc)}); "
                            "see its messages above. The run folder keeps its last complete checkpoint") from None
        finally:
            distributed.shutdown()


def preflight(cfg: TrainConfig, resume: Path | None, nproc: int) -> None:
    """The checks that need no model, run once before several processes start (`mtl train --nproc`):
    a bad input is one message from one process instead of one per process."""
    import mtlcli.components  # noqa: F401

    if not cfg.data:
        raise UserError("no training data: give DATA.csv (or 'data' in the config file)")
    device = resolve_device(cfg.device)
    resolve_precision(cfg.precision, device)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} CUDA device(s) and each "
                        "process takes one; use at most that many (or --device cpu)")
    if resume is None:
        runs.check_run_target(cfg.out, cfg.name)
    _, _, label_sets = data_mod.load_train_val(cfg.data, cfg.val, cfg.text_column, cfg.tasks, cfg.val_split, cfg.seed,
                                               cfg.delimiter)
    check_components(cfg, list(label_sets))
    build_trackers(cfg.track)  # a missing extra is one line here, not one per process


def _train(cfg: TrainConfig, reporter: Reporter, resume: Path | None, stop: StopSignals) -> Path:
    if not cfg.data:
        raise UserError("no training data: give DATA.csv (or 'data' in the config file)")
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    dist, device = distributed.init(device)  # under torchrun: join the others, take this process's GPU
    configure_device(device)
    main = dist.is_main  # only the main process writes files and shows the display
    if not main:
        reporter = Reporter()
    if resume is None and main:
        runs.check_run_target(cfg.out, cfg.name)

    # ---- data first: bad input is reported before the model loads
    train_table, val_table, label_sets = data_mod.load_train_val(
        cfg.data, cfg.val, cfg.text_column, cfg.tasks, cfg.val_split, cfg.seed, cfg.delimiter)
    components = check_components(cfg, list(label_sets))
    trackers = build_trackers(cfg.track) if main else []  # one record of the run, from the main process
    cfg.data = str(Path(cfg.data).resolve())
    cfg.val = str(Path(cfg.val).resolve()) if cfg.val else None
    cfg.tasks = list(label_sets)
    model_path = cfg.model or default_model_path()
    fingerprint = data_fingerprint(cfg)

    # ---- the backbone and the tokenized data, then the run folder: a model that does not load, or a
    # batch that cannot fit in memory, leaves no folder behind
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(model_path)
    backbone = load_pretrained_backbone(model_path)
    max_length = resolve_max_length(cfg, tokenizer, backbone, model_path, train_table.texts)
    train_ids = data_mod.encode_labels(train_table, label_sets)
    train_set = encode(tokenizer, train_table.texts, train_ids, max_length)
    val_set = encode(tokenizer, val_table.texts, data_mod.encode_labels(val_table, label_sets), max_length)
    objective = Objective(class_weights(cfg, train_ids, label_sets), cfg.label_smoothing)
    memory.check_batch_fits(backbone, train_set.lengths, cfg.batch_size, max_length, precision, device,
                            dist.world_size, memory.local_processes(), reporter.warning)
    if resume is None:
        run = Path(distributed.broadcast_object(str(runs.create_run(cfg.out, cfg.name)) if main else None, dist))
    else:
        run = resume
    saved = _read_last(run, fingerprint, tidy=main) if resume is not None else None
    if main:
        runs.write_atomic(run / "config.yaml", config_mod.dump(cfg))
        runs.write_json(run / "labels.json", label_sets)
        runs.point_latest(run)
        if not (run / "backbone").is_dir():
            runs.save_backbone_files(run, tokenizer, backbone)

    # ---- model
    model = build_model(backbone, label_sets, cfg.pooling, cfg.head, cfg.normalize, cfg.pooler_options, cfg.head_options)
    apply_freeze(model, cfg.freeze)
    combiner = loss_combiners.get(cfg.loss_combiner)(list(label_sets), cfg.task_weights)
    model.to(device)
    combiner.to(device)

    # ---- optimisation; on resume, raising --epochs stretches the decay over the new total from
    # the step reached, while warmup keeps the length it started with
    groups = parameter_groups(model, combiner, cfg.lr_backbone, cfg.lr_heads, cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda") or None)  # one kernel for all parameters
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(saved["resume"]["schedule"]["warmup_steps"]) if saved else int(cfg.warmup_ratio * total)
    scheduler = schedulers.get(cfg.scheduler)(optimizer, total, warmup)
    scaler = grad_scaler(device, precision)  # fp16: loss scaling, its state saved in last.pt

    # ---- policies, and where a resumed run goes on from
    stopper = EarlyStopping(cfg.patience, cfg.min_delta)
    saver = BestCheckpoint(run / "checkpoints", cfg.keep_all_best, save=save_checkpoint)
    log = runs.MetricsLog(run / "metrics.jsonl") if main else _MemoryLog(run / "metrics.jsonl")
    start, tally_state = Position(), None
    if saved:
        start, tally_state = _restore(saved, run, model, combiner, optimizer, scheduler, stopper, saver, log, main,
                                      scaler)
        if start.step == 0 and stopper.should_stop:
            raise UserError(f"{run}: the run stopped early after epoch {start.epoch - 1} (no improvement for "
                            f"{stopper.bad_epochs} epochs); to train on, raise --patience with --resume")
        if start.epoch > cfg.epochs:
            raise UserError(f"{run}: the run has finished (epoch {cfg.epochs} of {cfg.epochs}); "
                            "to train on, raise --epochs with --resume")
    elif resume is not None and main:  # killed before its first checkpoint: the run starts over in place
        log.restore([])
        saver.tidy(1)
        (run / "summary.json").unlink(missing_ok=True)
    best_size, last_size = checkpoint_bytes(model)
    if main:
        runs.require_free_space(run, best_size + 2 * last_size + (0 if saved else best_size),
                                "the checkpoints of this model (a best one and last.pt, each written beside the old)")
    best_row = next((dict(r) for r in log.rows if r.get("epoch") == stopper.best_epoch), {})

    info = {"run": str(run), "device": str(device), "precision": precision, "model": model_path,
            "max_length": max_length, "max_length_auto": cfg.max_length == "auto",
            "train_rows": len(train_set), "val_rows": len(val_set), "tasks": label_sets, "epochs": cfg.epochs,
            "steps_per_epoch": steps_per_epoch, "components": components,
            "resumed_from": [start.epoch, start.step] if saved else None, "processes": dist.world_size}
    if trackers:
        reporter = TrackingReporter(reporter, trackers, cfg.to_dict(), resumed=resume is not None)
    reporter.train_start(info)

    def checkpoint_payload(epoch: int, row: dict[str, Any]) -> dict[str, Any]:
        # the config as trained: --max-length auto resolved, so eval and predict cut texts alike
        return {"config": {**cfg.to_dict(), "max_length": max_length}, "labels": label_sets, "epoch": epoch,
                "metrics": row, "objective": {"class_weights": objective.class_weights,
                                              "label_smoothing": objective.label_smoothing},
                "model": model.state_dict(), "combiner": combiner.state_dict(), "components": components,
                "mtl_version": __version__, "precision": precision}

    def on_best(epoch: int, row: dict[str, Any]) -> None:
        saver(epoch, checkpoint_payload(epoch, row))
        best_row.clear()
        best_row.update(row)

    def save_state(at: Position, tally: dict | None) -> None:
        """checkpoints/last.pt: the weights where training stands, and all it takes to go on from there."""
        payload = checkpoint_payload(at.epoch - 1, log.rows[-1] if log.rows else {})  # epoch: the last complete one
        payload["resume"] = {
            "epoch": at.epoch, "step": at.step, "tally": tally,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "grad_scaler": scaler.state_dict(),
            "schedule": {"total_steps": total, "warmup_steps": warmup},
            "early_stopping": stopper.state_dict(), "best_checkpoint": saver.state_dict(), "rng": rng_state(),
            "metrics_rows": log.rows, "data_sha256": fingerprint, "batch_order": "train_batches(seed, epoch)",
        }
        save_checkpoint(last_checkpoint(run), payload)
        saver.prune()  # only now that last.pt names the new best can the old one go

    if main:
        hooks = Hooks(on_best, log.append, save_state, lambda: stop.requested, reporter)
    else:  # the others keep the log in memory (the same rows) and write nothing
        hooks = Hooks(lambda epoch, row: None, log.append, lambda at, tally: None, lambda: stop.requested, reporter)
    # DDP averages gradients over processes; checkpoints keep saving the unwrapped ``model``
    parts = LoopParts(distributed.wrap(model, dist, device), combiner, optimizer, scheduler, train_set, val_set,
                      label_sets, device, partial(autocast, device, precision), tokenizer.pad_token_id or 0,
                      cfg.batch_size, cfg.max_grad_norm, cfg.seed, cfg.lr_backbone, cfg.lr_heads, max_length, objective,
                      dist, scaler)
    stop.armed = True  # from here a first Ctrl-C/SIGTERM means: finish the batch, save, stop
    result = fit(parts, cfg.epochs, stopper, hooks, start, tally_state)

    if not main:  # the main process writes the summary and reports how it ended
        return run

    # ---- the run's summary and plots, however it ended
    summary = {"best_epoch": stopper.best_epoch, "best_val_loss": stopper.best, **result,
               "best_checkpoint": str(saver.path.relative_to(run)) if saver.path else None,
               "last_checkpoint": str(last_checkpoint(run).relative_to(run)) if last_checkpoint(run).is_file() else None,
               "device": str(device), "precision": precision, "model": model_path, "max_length": max_length,
               "class_weights": objective.class_weights, "best_metrics": best_row}
    checks = task_checks(best_row, val_set, label_sets)
    if checks:
        summary["task_checks"] = checks
        summary["warnings"] = [c["warning"] for c in checks.values() if c.get("warning")]
    runs.write_json(run / "summary.json", summary)
    if log.rows:
        plots.write_png({run.name: log.rows}, plots.default_panels(log.rows), run / "plots" / "learning_curves.png")
    reporter.train_end({**summary, "run": str(run), "rows": log.rows})
    if result["diverged"]:
        raise RunFailed(_diverged_message(result["diverged"], saver.path, run, steps_per_epoch, cfg.max_grad_norm > 0))
    if result["interrupted"]:
        raise TrainingInterrupted(run, stop.received, *result["position"])
    return run


class _MemoryLog(runs.MetricsLog):
    """metrics.jsonl as the processes other than the main one see it: read, never written."""

    def _write(self) -> None:
        pass


def _read_last(run: Path, fingerprint: dict[str, str], tidy: bool = True) -> dict[str, Any] | None:
    """The run's last.pt, checked; None when the run was stopped before it wrote one."""
    if tidy:
        runs.remove_leftovers(run)  # temporary files of a process killed while writing
    path = last_checkpoint(run)
    if not path.is_file():
        return None
    saved = load_checkpoint(path)
    state = saved.get("resume")
    schedule = state.get("schedule") if isinstance(state, dict) else None
    if not isinstance(schedule, dict) or not isinstance(schedule.get("warmup_steps"), int):
        raise UserError(f"{path}: holds no usable resume state (not written by mtl train)")
    digests = state.get("data_sha256")
    check_same_data(digests if isinstance(digests, dict) else {}, fingerprint, path)
    return saved


def _restore(saved: dict[str, Any], run: Path, model, combiner, optimizer, scheduler, stopper: EarlyStopping,
             saver: BestCheckpoint, log: runs.MetricsLog, main: bool = True,
             scaler: torch.amp.GradScaler | None = None) -> tuple[Position, dict | None]:
    """Put every stateful part back as last.pt has it; the random number generators last."""
    state = saved["resume"]
    try:
        model.load_state_dict(saved["model"])
        combiner.load_state_dict(saved["combiner"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("grad_scaler"):  # empty when saved by a disabled (not fp16) scaler
            scaler.load_state_dict(state["grad_scaler"])
        stopper.load_state_dict(state["early_stopping"])
        saver.load_state_dict(state["best_checkpoint"])
        start = Position(int(state["epoch"]), int(state["step"]))
        if start.epoch < 1 or start.step < 0:
            raise ValueError(f"no epoch {start.epoch}, batch {start.step}")
        tally = state.get("tally")
        if start.step and any(set(tally[k]) != set(saved["labels"]) for k in ("loss_sum", "correct", "counted")):
            raise ValueError("the epoch's running sums do not match the run's tasks")
        rows = [dict(r) for r in state["metrics_rows"]]
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{last_checkpoint(run)}: cannot resume from it; it does not fit this run ({why})") from None
    log.restore(rows)  # a crash may have logged an epoch after last.pt was written: it runs again
    if main:
        saver.tidy(start.epoch)
    return start, tally


def _diverged_message(where: dict[str, Any], best: Path | None, run: Path, steps: int, clipping: bool) -> str:
    at = (f"the training loss became {where['loss']} in epoch {where['epoch']} at batch {where['batch']} of {steps}"
          if where["batch"] else f"the validation loss became {where['loss']} after epoch {where['epoch']}")
    kept = (f"the best checkpoint ({best.relative_to(run)}) and last.pt are from before it" if best
            else "no epoch had finished, so the run has no checkpoint")
    advice = "lower learning rates (--lr-backbone, --lr-heads)" + ("" if clipping else " or --max-grad-norm 1.0")
    return f"training stopped: {at}; nothing after it was saved, and {kept}. Try {advice} in a new run"
