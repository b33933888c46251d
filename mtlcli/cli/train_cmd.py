"""mtl train: options map one-to-one onto config keys; flags given here win over --config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mtlcli.cli.common import console, err_console, handles_errors
from mtlcli.config import TrainConfig
from mtlcli.errors import RunFailed, UserError

D = TrainConfig()
Opt = typer.Option


def _pairs(values: list[str] | None, option: str) -> dict[str, float] | None:
    if not values:
        return None
    out = {}
    for item in values:
        task, sep, weight = item.partition("=")
        try:
            if not sep or not task:
                raise ValueError
            out[task] = float(weight)
        except ValueError:
            raise UserError(f"{option} {item}: expected TASK=WEIGHT, for example class_label=2.0") from None
    return out


@handles_errors
def train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Argument(help="Training CSV: a text column and one column per task.", show_default=False)] = None,
    config: Annotated[Optional[Path], Opt("--config", help="YAML file with any of these options; flags given here win.")] = None,
    val: Annotated[Optional[Path], Opt(help="Validation CSV (default: hold out --val-split of DATA).")] = None,
    text_column: Annotated[Optional[str], Opt(help=f"Column with the text. (default: {D.text_column})")] = None,
    task: Annotated[Optional[list[str]], Opt("--task", help="A task column to train (repeatable). (default: every other column)")] = None,
    val_split: Annotated[Optional[float], Opt(help=f"Share of DATA held out for validation, stratified on the first task. (default: {D.val_split})")] = None,
    delimiter: Annotated[Optional[str], Opt(help="Field delimiter of delimited text, one character (tab: \\t or tab). (default: by extension: .csv comma, .tsv tab; else sniffed)")] = None,
    model: Annotated[Optional[str], Opt(help="Backbone: a local folder or a Hugging Face id. (default: bundled all-MiniLM-L6-v2)")] = None,
    max_length: Annotated[Optional[str], Opt(help=f"Truncate texts to this many tokens; auto: the length 95% of the training texts fit in. (default: {D.max_length})")] = None,
    pooling: Annotated[Optional[str], Opt(help=f"Pooler: cls, mean, max or a plugin's. (default: {D.pooling})")] = None,
    normalize: Annotated[Optional[bool], Opt("--normalize/--no-normalize", help="L2-normalize the pooled vector. (default: no-normalize)")] = None,
    head: Annotated[Optional[str], Opt(help=f"Head per task: linear, mlp or a plugin's. (default: {D.head})")] = None,
    freeze: Annotated[Optional[list[str]], Opt("--freeze", help="none, backbone, embeddings, bottom:N, or a task's head (repeatable).")] = None,
    loss_combiner: Annotated[Optional[str], Opt(help=f"How task losses combine: weighted, uncertainty, dwa or a plugin's (mtl plugins lists them). (default: {D.loss_combiner})")] = None,
    task_weight: Annotated[Optional[list[str]], Opt("--task-weight", help="TASK=W for the weighted combiner (repeatable). (default: 1.0 each)")] = None,
    class_weight: Annotated[Optional[list[str]], Opt("--class-weight", help="balanced: weigh each label by how rare it is in the training rows; for every task, or TASK=balanced (repeatable). (default: none)")] = None,
    label_smoothing: Annotated[Optional[float], Opt(help=f"Spread this share of each target over all labels. (default: {D.label_smoothing})")] = None,
    lr_backbone: Annotated[Optional[float], Opt(help=f"Learning rate of the backbone. (default: {D.lr_backbone})")] = None,
    lr_heads: Annotated[Optional[float], Opt(help=f"Learning rate of the heads and combiner. (default: {D.lr_heads})")] = None,
    weight_decay: Annotated[Optional[float], Opt(help=f"AdamW weight decay (not on biases, norms). (default: {D.weight_decay})")] = None,
    max_grad_norm: Annotated[Optional[float], Opt(help=f"Clip gradients to this norm; 0 turns it off. (default: {D.max_grad_norm})")] = None,
    scheduler: Annotated[Optional[str], Opt(help=f"LR schedule: linear, cosine, constant or a plugin's. (default: {D.scheduler})")] = None,
    warmup_ratio: Annotated[Optional[float], Opt(help=f"Share of steps for linear warmup. (default: {D.warmup_ratio})")] = None,
    epochs: Annotated[Optional[int], Opt(help=f"Most epochs to train. (default: {D.epochs})")] = None,
    batch_size: Annotated[Optional[int], Opt(help=f"Sentences per optimizer step, over all processes. (default: {D.batch_size})")] = None,
    batch_size_per_process: Annotated[Optional[int], Opt(help="Sentences per process and step instead: the batch is this times the number of processes.", show_default=False)] = None,
    patience: Annotated[Optional[int], Opt(help=f"Stop after this many epochs without improvement. (default: {D.patience})")] = None,
    min_delta: Annotated[Optional[float], Opt(help=f"Improvement in validation loss that counts. (default: {D.min_delta})")] = None,
    keep_all_best: Annotated[Optional[bool], Opt("--keep-all-best", help="Keep every best checkpoint, not only the newest.")] = None,
    seed: Annotated[Optional[int], Opt(help=f"Seed for Python, NumPy and torch. (default: {D.seed})")] = None,
    device: Annotated[Optional[str], Opt(help=f"auto, cpu or cuda. (default: {D.device})")] = None,
    precision: Annotated[Optional[str], Opt(help=f"auto, fp32, bf16 or fp16. (default: {D.precision})")] = None,
    out: Annotated[Optional[Path], Opt(help=f"Folder that holds runs. (default: {D.out})")] = None,
    name: Annotated[Optional[str], Opt(help="Run folder name. (default: a timestamp)")] = None,
    track: Annotated[Optional[list[str]], Opt("--track", help="Also log the run to a tracker: tensorboard, mlflow or a plugin's (repeatable); see docs/tracking.md.", show_default=False)] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Print only the final summary.")] = False,
    resume: Annotated[Optional[Path], Opt("--resume", help="Continue this run folder where it stopped, with its own settings; only --epochs and --patience may be given (to raise them), and --track (to add a tracker).", show_default=False)] = None,
    nproc: Annotated[Optional[int], Opt("--nproc", help="Train with this many processes on this machine (DistributedDataParallel, one per GPU); see docs/scaling.md.", show_default=False)] = None,
) -> None:
    """Fine-tune a backbone with one head per task on DATA.csv and save the run."""
    from mtlcli import config as config_mod
    from mtlcli.cli.progress import make_reporter
    from mtlcli.training.run import train as run_training

    overrides = {
        "data": str(data) if data else None, "val": str(val) if val else None, "text_column": text_column,
        "tasks": task or None, "val_split": val_split, "delimiter": delimiter, "model": model, "max_length": _max_length(max_length),
        "pooling": pooling,
        "normalize": normalize, "head": head, "freeze": freeze or None, "loss_combiner": loss_combiner,
        "task_weights": _pairs(task_weight, "--task-weight"), "class_weight": _class_weight(class_weight),
        "label_smoothing": label_smoothing, "lr_backbone": lr_backbone, "lr_heads": lr_heads,
        "weight_decay": weight_decay, "max_grad_norm": max_grad_norm, "scheduler": scheduler,
        "warmup_ratio": warmup_ratio, "epochs": epochs, "batch_size": batch_size, "patience": patience,
        "min_delta": min_delta, "keep_all_best": keep_all_best, "seed": seed, "device": device,
        "precision": precision, "out": str(out) if out else None, "name": name, "track": track or None,
    }
    from mtlcli.training.distributed import is_main_process
    from mtlcli.training.interrupt import TrainingInterrupted
    from mtlcli.training.report import Reporter

    if batch_size_per_process is not None:
        overrides["batch_size"] = _global_batch(batch_size, batch_size_per_process, nproc)
    run_dir = None
    if resume is not None:
        from mtlcli.training.resume import resume_settings

        overrides.pop("track")  # tracking changes no number: a resumed run may add a tracker
        run_dir, cfg = resume_settings(resume, overrides, config)
        cfg.track = list(dict.fromkeys(cfg.track + (track or [])))
    else:
        cfg = config_mod.resolve(config, overrides)
    if nproc is not None and nproc != 1:
        _launch(nproc, cfg, run_dir, ctx)
        return
    reporter = make_reporter(console, quiet) if is_main_process() else Reporter()  # one display, from rank 0
    try:
        run_training(cfg, reporter, resume=run_dir)
    except TrainingInterrupted as stop:
        if not is_main_process():
            raise typer.Exit(stop.exit_code) from None
        err_console.print(f"Stopped {stop.where}: checkpoints/last.pt holds "
                          f"everything needed to go on. Continue with:\n  mtl train --resume {_shown(stop.run)}",
                          soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(stop.exit_code) from None
    finally:
        reporter.close()


def _max_length(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--max-length {value}: expected a number of tokens or auto") from None


def _class_weight(values: list[str] | None) -> str | dict[str, str] | None:
    """``--class-weight balanced`` is for every task; ``--class-weight TASK=balanced`` for one."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    out = {}
    for item in values:
        task, sep, how = item.partition("=")
        if not sep or not task:
            raise UserError(f"--class-weight {item}: expected balanced (every task) or TASK=balanced")
        out[task] = how
    return out


def _global_batch(batch_size: int | None, per_process: int, nproc: int | None) -> int:
    import os

    if batch_size is not None:
        raise UserError("give --batch-size (the whole batch) or --batch-size-per-process, not both")
    if per_process < 1:
        raise UserError(f"--batch-size-per-process {per_process}: must be at least 1")
    world = nproc if nproc is not None else int(os.environ.get("WORLD_SIZE", "1"))
    return per_process * max(world, 1)


def _launch(nproc: int, cfg, run_dir: Path | None, ctx: typer.Context) -> None:
    """--nproc N: check the inputs once here, then start N processes through torch.distributed.run."""
    from mtlcli.training.distributed import launched_by_torchrun
    from mtlcli.training.interrupt import StopSignals
    from mtlcli.training.launch import argv_of, launch
    from mtlcli.training.run import preflight

    if nproc < 1:
        raise UserError(f"--nproc {nproc}: must be at least 1")
    if launched_by_torchrun():
        raise UserError("--nproc starts its own processes: leave it out when launching with torchrun")
    with StopSignals():  # Ctrl-C before the processes start: exit at once, there is nothing to save
        preflight(cfg, run_dir, nproc)
    code = launch(nproc, argv_of(ctx))
    if code > 128:  # Ctrl-C or SIGTERM: the main process has said how to resume
        raise typer.Exit(code)
    if code:
        raise RunFailed(f"training with {nproc} processes failed (torch.distributed.run exited with {code}); "
                        "its root cause is shown above")


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when it is inside it."""
    import os
    import shlex

    try:
        path = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return shlex.quote(os.fspath(path))
