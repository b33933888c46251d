"""Experiment trackers: where a run's settings and numbers also go, besides its run folder.

Interface (kind ``trackers``, entry-point group ``mtlcli.trackers``): a class built with no
arguments, on the main process only, with three methods, called in this order:

``start(config, run_dir, resumed)``
    once, before the first epoch; ``config`` is the resolved config as a dict, ``resumed`` is True
    when ``mtl train --resume`` continues the run in ``run_dir``.
``log_metrics(row, epoch)``
    after every epoch, with that epoch's line of ``metrics.jsonl``.
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


def tensorboard_tag(key: str) -> str:
    """metrics.jsonl key -> TensorBoard tag, grouped by its prefix: val_loss -> val/loss, seconds -> epoch/seconds."""
    prefix, sep, rest = key.partition("_")
    return f"{prefix}/{rest}" if sep and prefix in (*vocab.SPLITS, "lr") else f"epoch/{key}"


@trackers.register("tensorboard")
class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``<run>/tensorboard/``: every epoch's metrics, and the config as text."""

    def __init__(self):
        require("tensorboard", "tensorboard")
        self.writer = None

    def start(self, config: dict[str, Any], run_dir: Path, resumed: bool) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        done = _epochs_logged(run_dir) if resumed else 0
        log_dir = run_dir / "tensorboard"
        try:
            # purge_step: a resumed run drops events a killed process logged after its last checkpoint
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=done + 1 if resumed else None)
        except OSError as exc:
            raise UserError(f"--track tensorboard: cannot write event files to {log_dir} ({exc.strerror or exc}); "
                            "make it a writable folder, or train without --track tensorboard") from None
        if not resumed:
            self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log_metrics(self, row: dict[str, Any], epoch: int) -> None:
        for key, value in numbers(row).items():
            self.writer.add_scalar(tensorboard_tag(key), value, epoch)
        self.writer.flush()

    def finish(self, run_dir: Path, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            for key, value in numbers_on_test(summary).items():  # at the best epoch: the checkpoint they score
                self.writer.add_scalar(tensorboard_tag(key), value, summary.get("best_epoch") or 0)
            self.writer.close()

    def abandon(self, run_dir: Path) -> None:
        self.finish(run_dir, {})  # its thread stops writing before the folder goes


def _epochs_logged(run_dir: Path) -> int:
    from mtlcli import runs

    path = run_dir / "metrics.jsonl"
    return len(runs.read_metrics(path)) if path.is_file() else 0
