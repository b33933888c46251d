"""Policies the loop consults after each validation: early stopping (or, with no validation, the
last epoch or step reached) and keeping the best checkpoint.

Each is a small object with state_dict()/load_state_dict(), so a resumed run continues them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

from mtlcli import vocabulary as vocab


class EarlyStopping:
    """Stop after ``patience`` validations in which validation loss did not fall by more than ``min_delta``."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when it is a new best."""
        if vocab.improves(val_loss, self.best, self.min_delta):
            self.best, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


class LastEpoch(EarlyStopping):
    """The policy without validation (--val-split 0): every epoch's end (or the step where --max-steps
    is spent) is the new best, and training runs all its epochs. The best checkpoint is then always
    the last one reached."""

    def __init__(self):
        super().__init__(patience=1)
        self.best = None

    def update(self, epoch: int | float, val_loss: float | None) -> bool:
        self.best_epoch = epoch
        return True


class Pruning:
    """Early stopping with a second voice: ``judge`` sees every validation's row and answers why the
    run should stop now (a hyperparameter search finds it unpromising), or None. The loop asks this
    policy as it asks EarlyStopping; the best epoch and patience stay EarlyStopping's."""

    def __init__(self, inner: EarlyStopping, judge: Callable[[dict[str, Any]], str | None]):
        self.inner, self.judge = inner, judge
        self.reason: str | None = None  # why the judge stopped the run

    def observe(self, row: dict[str, Any]) -> None:
        if self.reason is None:
            self.reason = self.judge(row)

    def update(self, epoch: int | float, val_loss: float) -> bool:
        return self.inner.update(epoch, val_loss)

    @property
    def should_stop(self) -> bool:
        return self.reason is not None or self.inner.should_stop

    def __getattr__(self, name: str) -> Any:  # best, best_epoch, bad_epochs, state_dict...: the inner policy's
        return getattr(self.__dict__["inner"], name)


def stopping_epoch(val_losses: list[float], patience: int, min_delta: float = 0.0) -> int:
    """The epoch (1-based) after which training stops for this loss sequence; len() if it never does."""
    policy = EarlyStopping(patience, min_delta)
    for epoch, loss in enumerate(val_losses, 1):
        policy.update(epoch, loss)
        if policy.should_stop:
            return epoch
    return len(val_losses)


class BestCheckpoint:
    """Writes ``checkpoints/best_epoch_{N}.pt`` on each new best; keeps only the newest unless told.

    A replaced best is deleted by ``prune()``, which the run calls once ``last.pt`` names the new
    one: a crash in between leaves an extra file, never a state that points at a deleted one.
    """

    PATTERN = re.compile(r"best_epoch_(\d+(?:\.\d+)?)\.pt")  # 1.25: a validation a quarter into epoch 2

    def __init__(self, folder: Path, keep_all: bool, save: Callable[[Path, Any], None]):
        self.folder = folder
        self.keep_all = keep_all
        self._save = save
        self.path: Path | None = None
        self._replaced: list[Path] = []

    def __call__(self, epoch: int, payload: Any) -> Path:
        path = self.folder / f"best_epoch_{epoch}.pt"
        self._save(path, payload)  # the new best is complete on disk before the old one goes
        if self.path is not None and self.path != path and not self.keep_all:
            self._replaced.append(self.path)
        self.path = path
        return path

    def prune(self) -> None:
        for path in self._replaced:
            path.unlink(missing_ok=True)
        self._replaced.clear()

    def tidy(self, done: float) -> None:
        """On resume from ``done`` epochs: drop bests of validations that will run again, and older
        bests a crash left behind."""
        for path in self.folder.glob("best_epoch_*.pt"):
            m = self.PATTERN.fullmatch(path.name)
            if m and path != self.path and (float(m.group(1)) > done or not self.keep_all):
                path.unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        # the file name only: a run folder can be moved or copied and still resume
        return {"name": self.path.name if self.path else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        name = state.get("name")
        # a name from a checkpoint file is data: only ever a best_epoch_N.pt inside this folder
        self.path = self.folder / name if isinstance(name, str) and self.PATTERN.fullmatch(name) else None
