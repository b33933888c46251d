"""Set a training run up from its config, run the loop, and leave a complete run folder."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlcli import __version__, config as config_mod, data as data_mod, plots, runs
from mtlcli.batching import encode
from mtlcli.checkpoint import save_checkpoint
from mtlcli.config import TrainConfig
from mtlcli.errors import UserError
from mtlcli.model import (apply_freeze, build_model, default_model_path, load_pretrained_backbone, load_tokenizer,
                          parameter_groups)
from mtlcli.registry import heads, loss_combiners, poolers, schedulers
from mtlcli.training.hardware import autocast, resolve_device, resolve_precision
from mtlcli.training.loop import LoopParts, fit
from mtlcli.training.policies import BestCheckpoint, EarlyStopping
from mtlcli.training.report import Reporter


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
    for spec in cfg.freeze:
        if spec not in ("none", "backbone", "embeddings") and not spec.startswith("bottom:") and spec not in tasks:
            raise UserError(f"--freeze {spec}: not one of none, backbone, embeddings, bottom:N or a task ({', '.join(tasks)})")
    if "backbone" in cfg.freeze and set(tasks) <= set(cfg.freeze):
        raise UserError(f"--freeze {' '.join(cfg.freeze)} freezes the whole model: nothing would train")
    return found


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> Path:
    """Train from a resolved config; returns the run folder."""
    import mtlcli.components  # noqa: F401  (built-ins registered before lookups)

    reporter = reporter or Reporter()
    if not cfg.data:
        raise UserError("no training data: give DATA.csv (or 'data' in the config file)")
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)

    # ---- data first: bad input is reported before the model loads
    train_table, val_table, label_sets = data_mod.load_train_val(
        cfg.data, cfg.val, cfg.text_column, cfg.tasks, cfg.val_split, cfg.seed)
    components = check_components(cfg, list(label_sets))
    cfg.data = str(Path(cfg.data).resolve())
    cfg.val = str(Path(cfg.val).resolve()) if cfg.val else None
    cfg.tasks = list(label_sets)
    model_path = cfg.model or default_model_path()

    run = runs.create_run(cfg.out, cfg.name)
    runs.write_atomic(run / "config.yaml", config_mod.dump(cfg))
    runs.write_json(run / "labels.json", label_sets)
    runs.point_latest(run)

    # ---- model
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(model_path)
    backbone = load_pretrained_backbone(model_path)
    runs.save_backbone_files(run, tokenizer, backbone)
    model = build_model(backbone, label_sets, cfg.pooling, cfg.head, cfg.normalize, cfg.pooler_options, cfg.head_options)
    apply_freeze(model, cfg.freeze)
    combiner = loss_combiners.get(cfg.loss_combiner)(list(label_sets), cfg.task_weights)
    model.to(device)
    combiner.to(device)

    train_set = encode(tokenizer, train_table.texts, data_mod.encode_labels(train_table, label_sets), cfg.max_length)
    val_set = encode(tokenizer, val_table.texts, data_mod.encode_labels(val_table, label_sets), cfg.max_length)

    # ---- optimisation
    groups = parameter_groups(model, combiner, cfg.lr_backbone, cfg.lr_heads, cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, fused=device.type == "cpu" or None)
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    scheduler = schedulers.get(cfg.scheduler)(optimizer, total, int(cfg.warmup_ratio * total))

    info = {"run": str(run), "device": str(device), "precision": precision, "model": model_path,
            "train_rows": len(train_set), "val_rows": len(val_set), "tasks": label_sets, "epochs": cfg.epochs,
            "steps_per_epoch": steps_per_epoch, "components": components}
    reporter.train_start(info)

    def checkpoint_payload(epoch: int, row: dict[str, Any]) -> dict[str, Any]:
        return {"config": cfg.to_dict(), "labels": label_sets, "epoch": epoch, "metrics": row,
                "model": model.state_dict(), "combiner": combiner.state_dict(), "components": components,
                "mtl_version": __version__, "precision": precision}

    best_row: dict[str, Any] = {}
    saver = BestCheckpoint(run / "checkpoints", cfg.keep_all_best, save=save_checkpoint)

    def on_best(epoch: int, row: dict[str, Any]) -> None:
        saver(epoch, checkpoint_payload(epoch, row))
        best_row.update(row)

    stopper = EarlyStopping(cfg.patience, cfg.min_delta)
    log = runs.MetricsLog(run / "metrics.jsonl")
    parts = LoopParts(model, combiner, optimizer, scheduler, train_set, val_set, label_sets, device,
                      partial(autocast, device, precision), tokenizer.pad_token_id or 0, cfg.batch_size,
                      cfg.max_grad_norm, cfg.seed, cfg.lr_backbone, cfg.lr_heads)
    result = fit(parts, cfg.epochs, stopper, on_best, log.append, reporter)

    # ---- the run's summary and plots
    summary = {"best_epoch": stopper.best_epoch, "best_val_loss": stopper.best, **result,
               "best_checkpoint": str(saver.path.relative_to(run)) if saver.path else None,
               "device": str(device), "precision": precision, "model": model_path,
               "best_metrics": best_row}
    runs.write_json(run / "summary.json", summary)
    plots.write_png({run.name: log.rows}, plots.default_panels(log.rows), run / "plots" / "learning_curves.png")
    reporter.train_end({**summary, "run": str(run), "rows": log.rows})
    return run
