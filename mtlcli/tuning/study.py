"""The search: an Optuna study in a storage that every `mtl tune` process on it shares, and the trials.

A trial is a normal training run (``training.run.train``) with the trial's settings over the fixed
ones, in ``<out>/<study>/trial-<n>`` (n: Optuna's trial number). Each validation reports the
objective to Optuna, whose pruner may stop the run there like early stopping does.

Counting is the storage's: ``trials`` means that many finished (complete or pruned) trials in the
study, whichever process ran them. A process that asked for a trial beyond that number (two
processes asked at once) gives it back, failed with the user attribute ``surplus``, without running
it. An interrupted trial is failed with ``interrupted`` and not counted; running the command again
goes on with the study. A process killed outright stops sending its trials' heartbeats, and the
next process to start a trial fails them.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import socket
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from mtlcli import atomic, config as config_mod, extras, runs
from mtlcli.config import TrainConfig
from mtlcli.errors import RunFailed, UserError, first_line
from mtlcli.reports.study import STUDY_FILE  # the study as the report reads it, rewritten after every trial
from mtlcli.training.interrupt import TrainingInterrupted
from mtlcli.training.reporter import Reporter
from mtlcli.tuning.objective import Objective
from mtlcli.tuning.space import Dimension, apply

HEARTBEAT_S = 10  # a running trial's process writes its heartbeat this often...
GRACE_S = 60  # ...and a trial silent for this long belongs to a process that died: it is failed
MAX_FAILURES = 3  # failed trials in a row after which the search stops: something else is wrong
MIN_FOR_IMPORTANCE = 4  # complete trials before which the settings' importances say little
BEST = "best"
DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "pymysql",
           "MySQLdb": "mysqlclient"}  # a database driver's module -> what pip installs it from


class Surplus(Exception):
    """This process asked for a trial beyond the number wanted: given back, never run."""


class TrialFailed(Exception):
    """A trial that could not finish (its loss diverged): failed, not counted; the search goes on."""


def optuna_module():
    return extras.require("optuna", "tune", "mtl tune")


def storage_url(url: str | None, folder: Path) -> str:
    """--storage, or a SQLite file in the study's folder."""
    return url or f"sqlite:///{(folder / 'study.db').resolve()}"


def shown_url(url: str) -> str:
    """The storage as it may be printed: a password left out."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: opening it says what is wrong
        return url


def open_study(name: str, url: str, pruner: str, seed: int | None):
    """Create the study in the storage, or load it to go on with it."""
    optuna = optuna_module()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the table says what happens to each trial
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # wait for another writer
    try:
        storage = _storage(optuna, url, engine)
        return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                   sampler=optuna.samplers.TPESampler(seed=seed), pruner=_pruner(optuna, pruner))
    except ImportError as exc:  # the database driver the URL names (SQLAlchemy's default for its dialect)
        module = getattr(exc.__cause__, "name", None) or exc.name or "its database driver"
        raise UserError(f"--storage {shown_url(url)}: needs the Python module '{module}', which is not installed; "
                        f"install it with: pip install {DRIVERS.get(module, module)}") from None
    except Exception as exc:  # SQLAlchemy's errors: a bad URL, a server that does not answer
        if isinstance(exc, UserError):
            raise
        raise UserError(f"--storage {shown_url(url)}: cannot open the study ({first_line(exc)})") from None


def start_from(study, values: dict[str, Any]) -> None:
    """A new study's first trial trains ``values`` (the fixed settings' own, space.own_values): the
    search starts from what `mtl train` would do, so its best is never below that."""
    if values and not study.get_trials(deepcopy=False):
        study.enqueue_trial(values, user_attrs={"start": "the settings mtl train uses without the search"})


def _storage(optuna, url: str, engine: dict[str, Any], tries: int = 5):
    """The storage, its tables made by whichever process comes first: two processes starting on a new
    storage at once race to make them, and the loser finds them made when it tries again."""
    for attempt in range(1, tries + 1):
        try:
            with _quiet(optuna):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S)
        except ImportError:
            raise
        except Exception:
            if attempt == tries:
                raise
            time.sleep(0.5 * attempt)


def _pruner(optuna, name: str):
    if name == "median":  # a trial below the median of the others at the same validation stops
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


class Display:
    """What the search tells the outside world; the CLI draws it as a live table."""

    def trial_start(self, number: int, values: dict[str, Any]) -> None: ...

    def validation(self, number: int, step: int, value: float) -> None: ...

    def trial_end(self, number: int, state: str, value: float | None, note: str) -> None: ...

    def training_reporter(self) -> Reporter:
        return Reporter()


@dataclass
class Search:
    """One process's part of a study."""

    study: Any  # optuna.Study
    base: TrainConfig  # the fixed settings
    dims: list[Dimension]
    objective: Objective
    folder: Path  # <out>/<study>
    trials: int  # finished trials wanted in the study, over all processes
    train: Callable[..., Path]  # training.run.train: (cfg, reporter, judge=...) -> the run folder
    timeout: float | None = None  # seconds; no new trial starts after them
    display: Display = field(default_factory=Display)
    gave_back: bool = False  # this process asked for a trial beyond ``trials``: the study is done
    failures: int = 0  # trials of this process that failed in a row
    exit_code: int = 130  # after an interrupt: 128 + the signal's number

    def run(self) -> None:
        """Run trials until the study holds ``trials`` finished or running ones, or ``timeout`` is spent."""
        deadline = time.monotonic() + self.timeout if self.timeout else math.inf
        while time.monotonic() < deadline and not self.gave_back and self.taken() < self.trials:
            self.study.optimize(self.one_trial, n_trials=1, catch=(Surplus, TrialFailed))
            self.after_trial()

    def taken(self) -> int:
        """Trials finished or running in the study; first, those whose process died are failed."""
        optuna = optuna_module()
        with _quiet(optuna):
            optuna.storages.fail_stale_trials(self.study)
        return len(self.study.get_trials(deepcopy=False, states=_taken_states(optuna)))

    def counted(self) -> list[Any]:
        """The study's finished trials (complete or pruned): what --trials counts."""
        states = optuna_module().trial.TrialState
        return self.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))

    def one_trial(self, trial) -> float:
        optuna = optuna_module()
        trial.set_user_attr("host", _host())
        trial.set_user_attr("pid", os.getpid())
        before = [t for t in self.study.get_trials(deepcopy=False, states=_taken_states(optuna))
                  if t.number < trial.number]
        if len(before) >= self.trials:  # another process took the last one first
            trial.set_user_attr("surplus", True)
            self.gave_back = True
            raise Surplus(f"{len(before)} trials before it already finished or running")
        values = {d.key: d.draw(trial) for d in self.dims}
        trial.set_user_attr("settings", values)  # as trained (Optuna's params keep every digit drawn)
        cfg = apply(self.base, values)
        cfg.out, cfg.name = str(self.folder), f"trial-{trial.number}"
        trial.set_user_attr("run", str(self.folder / cfg.name))
        trial.set_user_attr("command", repeat_command(self.base, values))
        self.display.trial_start(trial.number, values)
        summary = runs.read_summary(self._train(trial, cfg, values))
        self.failures = 0
        value = self.objective.value(summary.get("best_metrics") or {})
        if not math.isfinite(value):  # the same for every trial: stop rather than fail them all
            raise UserError(f"trial {trial.number}: the objective ({self.objective.describe()}) is not a number "
                            "at the best epoch; does every task in it have validation rows?")
        if summary.get("pruned"):
            trial.set_user_attr("pruned_reason", summary.get("pruned_reason"))
            self.display.trial_end(trial.number, "pruned", value, summary["pruned_reason"].split(" (")[0])
            raise optuna.TrialPruned(summary.get("pruned_reason"))
        self.display.trial_end(trial.number, "complete", value, "")
        return value

    def _train(self, trial, cfg: TrainConfig, values: dict[str, Any]) -> Path:
        """The trial's training run; how it can end short is marked on the trial."""
        try:
            last = cfg.epochs if not cfg.max_steps else math.inf  # the epoch of the run's last validation
            return self.train(cfg, self.display.training_reporter(), judge=partial(self._judge, trial, [0], last))
        except (TrainingInterrupted, SystemExit, KeyboardInterrupt) as stop:
            # SystemExit: a signal before the trial's training started, when there is nothing to save
            why = str(stop) if isinstance(stop, TrainingInterrupted) else "interrupted before its training started"
            trial.set_user_attr("interrupted", why)
            if isinstance(stop, TrainingInterrupted):
                self.exit_code = stop.exit_code  # 130 for Ctrl-C, 143 for SIGTERM, as `mtl train`
            self.display.trial_end(trial.number, "interrupted", None, "not counted")
            raise KeyboardInterrupt from None  # Optuna fails the trial and lets the interrupt through
        except RunFailed as exc:  # the loss stopped being finite: other settings may do better
            trial.set_user_attr("failed", str(exc))
            self.display.trial_end(trial.number, "failed", None, "not counted: " + first_line(exc))
            self.failures += 1
            if self.failures >= MAX_FAILURES:
                raise UserError(f"{MAX_FAILURES} trials in a row failed (the last: {first_line(exc)}); "
                                f"see their folders in {self.folder}") from None
            raise TrialFailed(str(exc)) from None
        except UserError as exc:  # a setting only the model can refuse (a max_length beyond its own)
            trial.set_user_attr("failed", str(exc))
            drawn = " ".join(f"{k}={v}" for k, v in values.items())
            raise UserError(f"trial {trial.number} ({drawn}) was refused: {exc}") from None

    def _judge(self, trial, step: list[int], last: float, row: dict[str, Any]) -> str | None:
        """Each validation: report the objective; the pruner answers whether to stop here. The last
        validation is never pruned: the trial has run its course, and a pruned trial cannot be the best."""
        step[0] += 1
        value = self.objective.value(row)
        trial.report(value, step[0])
        self.display.validation(trial.number, step[0], value)
        if row.get("epoch", 0) < last and trial.should_prune():
            return f"pruned after validation {step[0]} (objective {value:.4f}, behind the other trials there)"
        return None

    def after_trial(self) -> None:
        """Point ``best`` at the best trial (where its folder is on this machine) and rewrite study.json."""
        best = best_trial(self.study)
        if best is not None and (self.folder / f"trial-{best.number}").is_dir():
            runs.point_latest(self.folder / f"trial-{best.number}", BEST)
        write_study_file(self.study, self.folder, self.objective)


def repeat_command(base: TrainConfig, values: dict[str, Any]) -> str:
    """The `mtl train` command that trains a trial again, outside the study."""
    return shlex.join(["mtl", "train", *config_mod.to_argv(apply(base, values))])


def _taken_states(optuna) -> tuple:
    states = optuna.trial.TrialState
    return states.COMPLETE, states.PRUNED, states.RUNNING


@contextlib.contextmanager
def _quiet(optuna):
    """Optuna marks heartbeats experimental; its warning would repeat before every trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def check_space(study, dims: list[Dimension], where: str) -> None:
    """A study goes on with the space it started with: Optuna refuses a key whose range or choices
    changed, and it is better said before a trial than in the middle of one."""
    optuna = optuna_module()
    earlier: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        earlier.update({k: v for k, v in t.distributions.items() if k not in earlier})
    for dim in dims:
        if dim.key in earlier:
            try:
                optuna.distributions.check_distribution_compatibility(earlier[dim.key], dim.distribution(optuna))
            except ValueError:
                raise UserError(f"{where}: key '{dim.key}' is searched differently from the study's earlier trials "
                                f"({_described(earlier[dim.key])}); keep the study's space, or give a new "
                                "--study NAME") from None


def _described(distribution) -> str:
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return "choices " + ", ".join(map(str, choices))
    return f"low {distribution.low}, high {distribution.high}" + (", log" if distribution.log else "")


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _host() -> str:
    return socket.gethostname()


def trial_rows(study) -> list[dict[str, Any]]:
    """Each trial as the report shows it."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                     "settings": attrs.get("settings", t.params),
                     "run": Path(attrs["run"]).name if attrs.get("run") else None, "host": attrs.get("host"),
                     "note": _note(attrs)})
    return rows


def _note(attrs: dict[str, Any]) -> str | None:
    """Why a trial ended as it did, where the state alone does not say."""
    if attrs.get("surplus"):
        return "surplus: given back unrun"
    if attrs.get("interrupted"):
        return str(attrs["interrupted"])  # e.g. interrupted by SIGINT after epoch 1
    return attrs.get("pruned_reason") or attrs.get("failed")


def importances(study) -> tuple[dict[str, float], str | None]:
    """Which settings mattered (Optuna's fANOVA importances), or why they are not shown."""
    optuna = optuna_module()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_FOR_IMPORTANCE:
        return {}, (f"importances need at least {MIN_FOR_IMPORTANCE} complete trials; "
                    f"the study has {len(complete)}")
    try:
        return dict(optuna.importance.get_param_importances(study)), None
    except (ValueError, RuntimeError) as exc:  # e.g. every trial drew the same values
        return {}, f"importances could not be computed ({first_line(exc)})"


def write_study_file(study, folder: Path, objective: Objective) -> None:
    found, why_not = importances(study)
    best = best_trial(study)
    atomic.write_json(folder / STUDY_FILE, {
        "study": study.study_name, "objective": objective.describe(), "direction": "maximize",
        "best_trial": best.number if best else None, "trials": trial_rows(study),
        "importances": found, "importances_note": why_not})
