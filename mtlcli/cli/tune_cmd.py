"""mtl tune: a hyperparameter search whose trials are `mtl train` runs; every train option is fixed for all trials."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mtlcli import config as config_mod
from mtlcli.cli.common import (choice_option, console, err_console, handles_errors, number_option, option, print_note,
                               print_warning, whole_number_option)
from mtlcli.cli.train_cmd import settings, with_schema_options
from mtlcli.errors import UserError
from mtlcli.tuning import PRUNERS


def tune(
    config: Annotated[Optional[Path], option("--config", metavar="FILE", help="YAML file with fixed settings for every trial (keys with _ for -); flags given here win.")] = None,
    trials: Annotated[int, whole_number_option("--trials", help="Finished (complete or pruned) trials the study should hold, over every process working on it.", default="20", low=1)] = 20,
    timeout: Annotated[Optional[float], number_option("--timeout", help="Start no new trial after this many seconds.", default="none", low=0)] = None,
    study: Annotated[Optional[str], option("--study", metavar="NAME", help="The study's name; its trials go to OUT/NAME/trial-N.", default="DATA's file name without extension")] = None,
    storage: Annotated[Optional[str], option("--storage", metavar="URL", help="Optuna storage that processes on several machines share, e.g. postgresql+psycopg2://user:pw@host/db.", default="sqlite:///OUT/NAME/study.db")] = None,
    pruner: Annotated[str, choice_option("--pruner", choices=PRUNERS, help="Stop unpromising trials early, at a validation.", default="median")] = "median",
    metric: Annotated[Optional[list[str]], option("--metric", metavar="TASK[=WEIGHT]", help="Maximise this task's main validation metric (repeatable, with weights).", default="mean over tasks")] = None,
    space: Annotated[Optional[Path], option("--space", metavar="FILE", help="YAML search space: config keys with {low, high, log} or {choices} (docs/tune.md).", default="built in")] = None,
    quiet: Annotated[bool, option("--quiet", "-q", help="Print only the best trial.")] = False,
    **given: Any,
) -> None:
    """Search DATA's best settings with Optuna: each trial is a run folder; the same command on several machines shares the study."""
    from mtlcli.tuning import space as space_mod
    from mtlcli.tuning import study as study_mod
    from mtlcli.tuning.objective import objective_for

    study_mod.optuna_module()  # a missing extra is one line before anything else
    overrides, _ = config_mod.read_flags(given)
    if "name" in overrides:
        raise UserError("--name: each trial is named trial-N inside the study's folder; give --study NAME instead")
    fixed = set(overrides) | (set(config_mod.read_config_file(config)) if config else set())
    _, cfg = settings(config, None, None, None, given)
    cfg.name = None  # a --config file's name too: trials are named by the study
    if not cfg.val and cfg.val_split == 0:
        raise UserError("--val-split 0: trials are compared on validation scores; give --val FILE or a --val-split above 0")
    objective = objective_for(metric or [], _tasks(cfg))
    where = str(space) if space else space_mod.DEFAULT_SOURCE
    spec = space_mod.read_space(space) if space else space_mod.DEFAULT_SPACE
    dims = space_mod.build_space(spec, cfg, fixed, where, _components_exist)
    if not dims:
        raise UserError(f"{where}: every key of the search space is fixed (given as a flag or in --config); nothing is left to search")
    name = study or Path(cfg.data).stem
    folder = _study_folder(Path(cfg.out), name)
    try:
        opened = study_mod.open_study(name, study_mod.storage_url(storage, folder), pruner,
                                      cfg.seed if "seed" in fixed else None)
        study_mod.check_space(opened, dims, where)
        study_mod.start_from(opened, space_mod.own_values(dims, cfg))
    except UserError:
        _remove_if_empty(folder)  # a storage that did not open leaves no empty study folder behind
        raise

    from mtlcli.cli.tune_display import TrialTable
    from mtlcli.training.run import train as run_training

    display = TrialTable(err_console, quiet)
    search = study_mod.Search(opened, cfg, dims, objective, folder, trials, run_training, timeout, display)
    if not quiet:
        kept = study_mod.shown_url(storage) if storage else folder / "study.db"
        print_note(f"study '{name}' in {kept}: {search.taken()} of {trials} trials finished or "
                   f"running; objective: {objective.describe()}; searching {', '.join(d.key for d in dims)}")
    try:
        with display:
            search.run()
    except KeyboardInterrupt:
        finished = len(search.counted())
        err_console.print(f"Stopped: the interrupted trial is marked failed and not counted; the study keeps its "
                          f"{finished} finished trials. Continue with the same command:\n  mtl {shlex.join(sys.argv[1:])}",
                          soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(search.exit_code) from None
    _show_best(search, cfg)


tune = with_schema_options(handles_errors(tune), hide=("name",))  # trials are named trial-N by the study


def _tasks(cfg):
    """The tasks and their types, from the data alone (no model): what the objective is made of."""
    from mtlcli.training.run import check_inputs

    return check_inputs(cfg, None, new_folder=False).tasks


def _components_exist(cfg) -> None:
    """A space's pooling or head names a registered one (a plugin's included)."""
    from mtlcli.model.builder import look_up_components

    look_up_components(cfg.to_dict())


def _study_folder(out: Path, name: str) -> Path:
    from mtlcli.runs import NAME_OK

    if not NAME_OK.fullmatch(name) or len(name) > 100:
        raise UserError(f"--study {name}: a study name is letters, digits, '.', '_' and '-', not starting with '.'")
    folder = out / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot make the study's folder ({exc.strerror or exc})") from None
    return folder


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # it holds the study's trials (or its SQLite file): keep it
        pass


def _show_best(search, base) -> None:
    """The best trial's settings, its validation scores and the `mtl train` command that repeats it."""
    from mtlcli import runs
    from mtlcli.cli.progress import show_summary
    from mtlcli.tuning.study import best_trial, repeat_command

    counted = len(search.counted())
    best = best_trial(search.study)
    if best is None:
        print_warning(f"no trial has completed yet ({counted} finished, all pruned); run more --trials")
        return
    console.print(f"Best trial {best.number} of {counted} finished: objective {best.value:.4f} "
                  f"({search.objective.describe()})", soft_wrap=True, markup=False, highlight=False)
    chosen = best.user_attrs.get("settings", best.params)
    for key, value in chosen.items():
        console.print(f"  {key}: {value}", markup=False, highlight=False)
    run = search.folder / f"trial-{best.number}"
    summary = runs.read_summary(run)
    if summary:
        saved = config_mod.read_config_file(run / "config.yaml")
        show_summary(console, {**summary, "run": str(run)}, chart=False, types=saved.get("task_types") or {})
    else:
        print_note(f"trial {best.number} ran on {best.user_attrs.get('host', 'another machine')}: "
                   f"its run folder is there ({best.user_attrs.get('run')})")
    command = best.user_attrs.get("command") or repeat_command(base, chosen)
    console.print(f"Repeat it with:\n  {command}", soft_wrap=True, markup=False, highlight=False)
