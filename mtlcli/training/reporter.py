"""How the loop tells the outside world what happens: a callback object. Rich lives in the CLI."""

from __future__ import annotations

from typing import Any


class Reporter:
    """Does nothing; the CLI subclasses it for a live display or plain lines."""

    def train_start(self, info: dict[str, Any]) -> None: ...

    def epoch_start(self, epoch: int, steps: int) -> None: ...

    def batch_end(self, epoch: int, step: int, steps: int, loss: float | None, sentences_per_s: float) -> None: ...

    def log_step(self, step: int, values: dict[str, float]) -> None:
        """Every --log-steps optimizer steps (``step``: all done so far): the mean training loss since
        the last call or the epoch's start, and the learning rates; what trackers plot per step."""

    def validation_start(self, epoch: int | float) -> None: ...

    def epoch_end(self, row: dict[str, Any], improved: bool) -> None: ...

    def train_end(self, summary: dict[str, Any]) -> None: ...

    def warning(self, message: str) -> None:
        """Something that does not stop training (a tracker failed, a batch larger than the data);
        the CLI's displays print it, the processes other than the main one stay quiet."""

    def close(self) -> None:
        """Called last, however the run ended (an error, a second Ctrl-C): release the display."""
