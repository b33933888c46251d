"""Ctrl-C and SIGTERM during training.

While the loop runs, the first signal only sets a flag: the loop finishes the batch in hand, saves
``checkpoints/last.pt`` and returns. A second signal (or one that arrives while the run is still
being set up, when there is nothing to save) ends the process at once with 128 + the signal number;
files are only ever replaced by a rename, so the last complete checkpoint stays intact.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from mtlcli.training.distributed import launched_by_torchrun

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """A context manager that turns SIGINT/SIGTERM into a stop request while training runs."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.armed = False  # set once the loop runs: before that there is nothing to save
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python only allows it there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            # `mtl train --nproc` starts its workers with these signals blocked, so that one sent
            # while a worker is still starting waits for this handler; it runs now if one came
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        return self

    def __exit__(self, *exc) -> None:
        # A training process under torchrun ignores a signal that comes once training is over: it only
        # has to exit, and Python's own handler would end it by the signal, which torchrun takes for
        # a failure and answers by stopping the other processes in the middle of their writes.
        late = self.armed and launched_by_torchrun()
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if late else handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if not self.armed:
            _say(f"\n{name}: stopping before training started\n")
            raise SystemExit(128 + signum)
        if self.received is not None:
            _say(f"\n{name}: stopping now; the last complete checkpoint is kept\n")
            raise SystemExit(128 + signum)
        self.received = signum
        again = "press Ctrl-C again" if signum == signal.SIGINT else "send it again"
        _say(f"\n{name}: finishing this batch, then saving checkpoints/last.pt ({again} to stop at once)\n")


def _say(text: str) -> None:
    # os.write, not print: a signal can arrive in the middle of another write to stderr
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


class TrainingInterrupted(Exception):
    """The loop stopped on a signal after saving its state; the CLI exits with ``exit_code``."""

    def __init__(self, run: Path, signum: int, epoch: int, step: int):
        self.run, self.signum, self.epoch, self.step = run, signum, epoch, step  # where training goes on
        super().__init__(f"interrupted by {signal.Signals(signum).name} {self.where}")

    @property
    def where(self) -> str:
        return stopped_where(self.epoch, self.step)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# set by `mtl train --nproc` for its processes: the launcher itself says how to resume, once, even
# when the main process could not (torchrun ended it because another one died)
LAUNCHER_SAYS_RESUME = "MTL_LAUNCHER_SAYS_RESUME"


def stopped_where(epoch: int, step: int) -> str:
    """Where a stopped run goes on from, in words: the epoch and batch its last.pt holds."""
    return f"after epoch {epoch - 1}" if step == 0 else f"in epoch {epoch} after batch {step}"
