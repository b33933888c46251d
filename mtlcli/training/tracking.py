"""Trackers beside the run's reporter: each hears the start, every validation, the training loss
every --log-steps optimizer steps, and the end of training.

A validation is plotted against its epoch; with --eval-steps or --max-steps, validations fall
within epochs, so they are plotted against the optimizer step, as the per-step losses are.

A tracker that cannot start (a store MLflow refuses, a server that does not answer) stops the run
before its first step, with one line: a run meant to be recorded is not trained unrecorded. Once
started, tracking never stops training: a tracker that raises is warned about once and dropped.
Only the main process tracks, so a run under torchrun is one record, not one per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtlcli.errors import UserError, first_line
from mtlcli.training.reporter import Reporter


def build_trackers(names: list[str]) -> list[tuple[str, Any]]:
    """(name, tracker) for each name once; an unknown name or a missing extra is a UserError."""
    from mtlcli.registry import trackers

    built = []
    for name in dict.fromkeys(names):
        cls = trackers.get(name)
        try:
            built.append((name, cls()))
        except UserError:
            raise
        except Exception as exc:  # a plugin's tracker may fail in any way; say which one, in one line
            raise UserError(f"--track {name}: the tracker cannot start ({_first_line(exc)})") from None
    return built


def start_trackers(trackers: list[tuple[str, Any]], config: dict[str, Any], run_dir: Path, resumed: bool) -> None:
    """Call each tracker's ``start``; the first that fails is a UserError naming it and what failed,
    after the trackers already started have abandoned what they began."""
    for i, (name, tracker) in enumerate(trackers):
        try:
            tracker.start(config, run_dir, resumed)
        except Exception as exc:
            _abandon(trackers[:i], run_dir)
            if isinstance(exc, UserError):  # the tracker said itself what is wrong and how to fix it
                raise
            raise UserError(f"--track {name}: the tracker cannot start ({_first_line(exc)}); "
                            "fix its settings, or train without it") from None


def _abandon(started: list[tuple[str, Any]], run_dir: Path) -> None:
    for _, tracker in started:
        abandon = getattr(tracker, "abandon", None)  # optional: a plugin need not subclass Tracker
        try:
            if abandon is not None:
                abandon(run_dir)
        except Exception:  # best effort: the error the user must see is the one that stopped the run
            pass


class TrackingReporter(Reporter):
    """Forwards everything to ``inner`` (the display) and feeds the trackers, started already
    (``start_trackers``)."""

    def __init__(self, inner: Reporter, trackers: list[tuple[str, Any]], by_step: bool = False):
        self.inner = inner
        self.trackers = list(trackers)
        self.by_step = by_step  # the x-axis of validations: optimizer steps (--eval-steps, --max-steps) or epochs
        self.steps_per_epoch = 0
        self.step = 0  # optimizer steps done

    def _each(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.trackers):
            if not hasattr(tracker, method):  # a plugin's tracker from before log_step
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # a server gone, a full disk: training matters more than its record
                self.trackers.remove((name, tracker))
                self.inner.warning(f"tracker '{name}' failed in {method} ({_first_line(exc)}); "
                                   "training goes on without it")

    def train_start(self, info: dict[str, Any]) -> None:
        self.inner.train_start(info)
        self.steps_per_epoch = info["steps_per_epoch"]

    def epoch_start(self, epoch: int, steps: int) -> None:
        self.inner.epoch_start(epoch, steps)

    def batch_end(self, epoch: int, step: int, steps: int, loss: float | None, sentences_per_s: float) -> None:
        self.inner.batch_end(epoch, step, steps, loss, sentences_per_s)
        self.step = (epoch - 1) * self.steps_per_epoch + step

    def log_step(self, step: int, values: dict[str, float]) -> None:
        self.inner.log_step(step, values)
        self._each("log_step", values, step)

    def validation_start(self, epoch: int) -> None:
        self.inner.validation_start(epoch)

    def epoch_end(self, row: dict[str, Any], improved: bool) -> None:
        self.inner.epoch_end(row, improved)
        self._each("log_metrics", row, self.step if self.by_step else int(row["epoch"]))

    def train_end(self, summary: dict[str, Any]) -> None:
        self.inner.train_end(summary)
        self._each("finish", Path(summary["run"]), summary)

    def warning(self, message: str) -> None:
        self.inner.warning(message)

    def close(self) -> None:
        self.inner.close()


def _first_line(exc: BaseException) -> str:
    line = first_line(str(exc), 300)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
