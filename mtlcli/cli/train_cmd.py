"""mtl train: the options of the config keys come from the schema in mtlcli.config; flags given here win over --config."""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mtlcli import config as config_mod
from mtlcli.cli.common import (argument, choices_metavar, console, err_console, handles_errors, option, print_note,
                               whole_number_option)
from mtlcli.errors import RunFailed, UserError


def train(
    config: Annotated[Optional[Path], option("--config", metavar="FILE", help="YAML file with any of these options (keys with _ for -); flags given here win.")] = None,
    batch_size_per_process: Annotated[Optional[int], whole_number_option("--batch-size-per-process", help="Sentences per process and forward pass instead of --batch-size: the batch is this times the number of processes.", low=1)] = None,
    quiet: Annotated[bool, option("--quiet", "-q", help="Print only the final summary.")] = False,
    resume: Annotated[Optional[Path], option("--resume", metavar="RUN", help=f"Continue this run folder where it stopped, with its own settings: {config_mod.resume_rule()}.")] = None,
    nproc: Annotated[Optional[int], whole_number_option("--nproc", help="Train with this many processes on this machine (DistributedDataParallel, one per GPU); see docs/scaling.md.", low=1)] = None,
    **given: Any,
) -> None:
    """Fine-tune a backbone with one head per task on DATA and save the run."""
    from mtlcli.cli.progress import make_reporter
    from mtlcli.training.distributed import is_main_process
    from mtlcli.training.interrupt import LAUNCHER_SAYS_RESUME, TrainingInterrupted
    from mtlcli.training.reporter import Reporter
    from mtlcli.training.run import train as run_training

    run_dir, cfg = settings(config, batch_size_per_process, nproc, resume, given)
    if nproc is not None and nproc != 1:
        _launch(nproc, cfg, run_dir, quiet)
        return
    reporter = make_reporter(console, err_console, quiet) if is_main_process() else Reporter()  # one display, from rank 0
    try:
        run_training(cfg, reporter, resume=run_dir)
    except TrainingInterrupted as stop:
        if is_main_process() and not os.environ.get(LAUNCHER_SAYS_RESUME):
            _say_resume(stop.run, stop.where)
        raise typer.Exit(stop.exit_code) from None
    finally:
        reporter.close()


def settings(config: Path | None, batch_size_per_process: int | None, nproc: int | None, resume: Path | None,
             given: dict[str, Any]) -> tuple[Path | None, config_mod.TrainConfig]:
    """The run to resume (or None) and the resolved settings, from the options as Click read them."""
    overrides, typed = config_mod.read_flags(given)
    if batch_size_per_process is not None:
        overrides["batch_size"] = _global_batch(overrides.get("batch_size"), batch_size_per_process, nproc)
    if resume is not None:
        from mtlcli.training.resume import resume_settings

        return resume_settings(resume, overrides, config)
    cfg = config_mod.resolve(config, overrides, typed)
    if config is not None and "name" not in overrides:
        _free_name_from_file(cfg, config)
    return None, cfg


def _free_name_from_file(cfg, config_file: Path) -> None:
    """A run name that came from a config file (runs/X/config.yaml, to repeat run X) and is taken gets
    the next free one, NAME-2, NAME-3...; a --name typed on the command line stays the user's choice."""
    from mtlcli import runs

    if cfg.name is None:
        return
    free = runs.free_name(Path(cfg.out), cfg.name)
    if free != cfg.name:
        print_note(f"run name '{cfg.name}' from {config_file} is taken in {cfg.out}; this run is '{free}' "
                   "(--name picks another)")
        cfg.name = free


def _schema_option(key: str, hidden: bool = False) -> inspect.Parameter:
    """The option (or argument) of one config key, as the schema declares it; ``hidden``: left out of help."""
    s = config_mod.SETTINGS[key]
    flag = config_mod.flag_of(key)
    default = config_mod.default_shown(key)
    metavar = choices_metavar(s.choices) if s.choices else s.metavar or s.kind.metavar
    if config_mod.is_argument(key):
        kind, info = Optional[str], argument(flag, s.help)
    elif s.kind is config_mod.SWITCH:
        kind, info = Optional[bool], option(f"{flag}/--no-{flag[2:]}", help=s.help, default=default, hidden=hidden)
    else:
        kind = Optional[list[str]] if s.kind.repeatable else Optional[str]
        info = option(flag, metavar=metavar, help=s.help, default=default, hidden=hidden)
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, info])


def with_schema_options(command, hide: tuple[str, ...] = ()):
    """Give `command` one option per config key: DATA, then --config, the other keys and its own options;
    the keys in ``hide`` are still read (the command explains why it refuses them) but not shown in help."""
    own = list(inspect.signature(command, eval_str=True).parameters.values())
    config_option, rest = own[0], [p for p in own[1:] if p.kind is not inspect.Parameter.VAR_KEYWORD]
    arguments = [_schema_option(key) for key in config_mod.SETTINGS if config_mod.is_argument(key)]
    options = [_schema_option(key, key in hide) for key in config_mod.SETTINGS if not config_mod.is_argument(key)]
    params = [*arguments, config_option, *options, *rest]
    command.__signature__ = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])
    command.__annotations__ = {}  # the signature above is the whole truth
    return command


train = with_schema_options(handles_errors(train))


def _global_batch(batch_size: int | None, per_process: int, nproc: int | None) -> int:
    import os

    if batch_size is not None:
        raise UserError("give --batch-size (the whole batch) or --batch-size-per-process, not both")
    world = nproc if nproc is not None else int(os.environ.get("WORLD_SIZE", "1"))
    return per_process * max(world, 1)


def child_argv(cfg, run_dir: Path | None, quiet: bool) -> list[str]:
    """What each of the --nproc processes is given: the resolved settings, not the flags as typed."""
    if run_dir is not None:  # the child reads the run's own settings again; only what may change goes along
        argv = ["--resume", str(run_dir), *config_mod.to_argv(cfg, config_mod.RESUMABLE)]
    else:
        argv = config_mod.to_argv(cfg)
    return argv + (["--quiet"] if quiet else [])


def _launch(nproc: int, cfg, run_dir: Path | None, quiet: bool) -> None:
    """--nproc N: check the inputs once here, then start N processes through torch.distributed.run."""
    from mtlcli import runs
    from mtlcli.training.distributed import launched_by_torchrun
    from mtlcli.training.interrupt import StopSignals
    from mtlcli.training.launch import launch
    from mtlcli.training.run import preflight

    if launched_by_torchrun():
        raise UserError("--nproc starts its own processes: leave it out when launching with torchrun")
    with StopSignals():  # Ctrl-C before the processes start: exit at once, there is nothing to save
        preflight(cfg, run_dir, nproc)
    if run_dir is None and cfg.name is None:  # named here, so that this process knows the folder
        cfg.name = runs.free_name(Path(cfg.out), time.strftime("%Y%m%d-%H%M%S"))
    run = run_dir or Path(cfg.out) / cfg.name
    started = time.time()
    code = launch(nproc, child_argv(cfg, run_dir, quiet))
    if code > 128:  # Ctrl-C or SIGTERM: say how to go on, if the run got as far as saving its state
        if (run / "checkpoints" / "last.pt").is_file():
            _say_resume(run, _stopped_at(run, started))
        raise typer.Exit(code)
    if code:
        raise RunFailed(f"training with {nproc} processes failed (torch.distributed.run exited with {code}); "
                        "its root cause is shown above")


def _say_resume(run: Path, where: str) -> None:
    err_console.print(f"Stopped{' ' + where if where else ''}: checkpoints/last.pt holds everything needed to go on. "
                      f"Continue with:\n  mtl train --resume {_shown(run)}", soft_wrap=True, markup=False,
                      highlight=False)


def _stopped_at(run: Path, since: float) -> str:
    """Where the processes stopped, as the main process wrote it in summary.json during this launch
    (empty when it was ended before it could: last.pt still holds the last complete state)."""
    import json

    from mtlcli.training.interrupt import stopped_where

    summary = run / "summary.json"
    try:
        if summary.stat().st_mtime >= since:
            position = json.loads(summary.read_text(encoding="utf-8")).get("position")
            if isinstance(position, list) and len(position) == 2:
                return stopped_where(*position)
    except (OSError, ValueError, TypeError):
        pass
    return ""


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when it is inside it."""
    import os
    import shlex

    try:
        path = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return shlex.quote(os.fspath(path))
