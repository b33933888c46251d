"""Trackers beside the run's reporter: each hears the start, every validation, the training loss
every --log-steps optimizer steps, and the end of training.

A validation is plotted against its epoch; with --eval-steps or --max-steps, validations fall
within epochs, so they are plotted against the optimizer step, as the per-step losses are.

Tracking never stops training: a tracker that raises is warned about once (one line) and dropped.
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


class TrackingReporter(Reporter):
    """Forwards everything to ``inner`` (the display) and feeds the trackers."""

    def __init__(self, inner: Reporter, trackers: list[tuple[str, Any]], config: dict[str, Any], resumed: bool):
        self.inner = inner
        self.trackers = list(trackers)
        self.config = config
        self.resumed = resumed
        self.by_step = bool(config.get("eval_steps") or config.get("max_steps"))  # the x-axis of validations
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
        self._each("start", self.config, Path(info["run"]), self.resumed)

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
