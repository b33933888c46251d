"""Experiment trackers: where a run's settings and numbers also go, besides its run folder.

Interface (kind ``trackers``, entry-point group ``mtlcli.trackers``): a class built with no
arguments, on the main process only, with three methods and an optional fourth (``log_step``):

``start(config, run_dir, resumed)``
    once, before the first epoch; ``config`` is the resolved config as a dict, ``resumed`` is True
    when ``mtl train --resume`` continues the run in ``run_dir``.
``log_metrics(row, step)``
    after every validation, with its line of ``metrics.jsonl``; ``step`` is the epoch, or with
    ``--eval-steps`` or ``--max-steps`` the optimizer steps done (validations then fall within epochs).
``log_step(values, step)`` (optional)
    every ``--log-steps`` optimizer steps: ``train_loss`` (the mean since the last call or the
    epoch's start), ``lr_backbone`` and ``lr_heads``; ``step`` is the optimizer steps done.
``finish(run_dir, summary)``
    once, after ``summary.json`` is written (also when the run was interrupted or diverged); with
    --test, ``summary["test"]`` holds the test scores (``numbers_on_test`` gives them as metric keys).
``abandon(run_dir)``, optional
    instead of ``finish``, when the run stops before training because a tracker started after this
    one could not start: undo what ``start`` made (the new run folder is removed after it).

A tracker whose library is missing says which extra to install when it is built. One whose
``start`` raises stops the run before training (one line, exit code 2; raise ``UserError`` to say
how to fix it); one that raises later is warned about once and dropped, and training goes on.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

from mtlcli.errors import UserError
from mtlcli.registry import trackers
from mtlcli import vocabulary as vocab


class Tracker:
    """Base class for trackers: every method does nothing; override the ones you need."""

    def start(self, config: dict[str, Any], run_dir: Path, resumed: bool) -> None: ...

    def log_metrics(self, row: dict[str, Any], epoch: int) -> None: ...

    def log_step(self, values: dict[str, float], step: int) -> None: ...

    def finish(self, run_dir: Path, summary: dict[str, Any]) -> None: ...

    def abandon(self, run_dir: Path) -> None: ...


def require(module: str, extra: str) -> Any:
    """Import a tracking library, or stop with the one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"--track {extra}: the {module} package is not installed; "
                        f"install it with: pip install 'mtlcli[{extra}]'") from None


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, the epoch left out (it is the step)."""
    return {k: float(v) for k, v in row.items()
            if k != vocab.EPOCH and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def numbers_on_test(summary: dict[str, Any]) -> dict[str, float]:
    """--test's finite scores as metric keys (``test_loss``, ``test_topic_acc``); {} without --test."""
    return numbers(vocab.scores_on_test(summary))


def by_step(config: dict[str, Any]) -> bool:
    """Whether validations are logged against optimizer steps (--eval-steps, --max-steps), not epochs."""
    return bool(config.get("eval_steps") or config.get("max_steps"))


def best_x(summary: dict[str, Any], steps: bool) -> int:
    """The x-axis value of the best validation, where --test's scores are logged: its optimizer step
    when validations are logged by step, else its epoch."""
    if steps:
        return int(summary.get("best_step") or 0)
    return int(summary.get("best_epoch") or 0)


def tensorboard_tag(key: str) -> str:
    """metrics.jsonl key -> TensorBoard tag, grouped by its prefix: val_loss -> val/loss, seconds -> epoch/seconds."""
    prefix, sep, rest = key.partition("_")
    return f"{prefix}/{rest}" if sep and prefix in (*vocab.SPLITS, "lr") else f"epoch/{key}"


STEPS = "steps"  # the TensorBoard run (a subfolder) of the per-step losses: its x-axis is optimizer steps


@trackers.register("tensorboard")
class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``<run>/tensorboard/``: every validation's metrics and the config as
    text; the per-step training loss and learning rates in ``<run>/tensorboard/steps/``."""

    def __init__(self):
        require("tensorboard", "tensorboard")
        self.folder: Path | None = None
        self.resumed = False
        self.by_step = False  # validations logged against optimizer steps, not epochs
        self.writers: dict[str, Any] = {}

    def start(self, config: dict[str, Any], run_dir: Path, resumed: bool) -> None:
        import yaml

        self.folder, self.resumed = run_dir / "tensorboard", resumed
        self.by_step = by_step(config)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not resumed:
                self._writer("", 0).add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)
        except OSError as exc:
            raise UserError(f"--track tensorboard: cannot write event files to {self.folder} "
                            f"({exc.strerror or exc}); make it a writable folder, or train without "
                            "--track tensorboard") from None

    def _writer(self, sub: str, step: int):
        """The writer of ``sub``, opened at the first event. A resumed run opens it with purge_step at
        its first event's step: TensorBoard then drops what a killed process logged after the last
        checkpoint from there on."""
        if sub not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[sub] = SummaryWriter(log_dir=str(self.folder / sub) if sub else str(self.folder),
                                              purge_step=step if self.resumed else None)
        return self.writers[sub]

    def log_metrics(self, row: dict[str, Any], epoch: int) -> None:
        writer = self._writer("", epoch)
        for key, value in numbers(row).items():
            writer.add_scalar(tensorboard_tag(key), value, epoch)
        writer.flush()

    def log_step(self, values: dict[str, float], step: int) -> None:
        writer = self._writer(STEPS, step)
        for key, value in values.items():
            if math.isfinite(value):
                writer.add_scalar(tensorboard_tag(key), value, step)
        writer.flush()

    def finish(self, run_dir: Path, summary: dict[str, Any]) -> None:
        scores = numbers_on_test(summary)
        if scores:  # at the best validation: the checkpoint they score
            step = best_x(summary, self.by_step)
            writer = self._writer("", step)
            for key, value in scores.items():
                writer.add_scalar(tensorboard_tag(key), value, step)
        for writer in self.writers.values():
            writer.close()

    def abandon(self, run_dir: Path) -> None:
        self.finish(run_dir, {})  # its thread stops writing before the folder goes
