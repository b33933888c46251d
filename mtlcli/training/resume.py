"""What `mtl train --resume RUN` needs besides the loop: the run's own settings, last.pt's training
state (written and put back by one class), the random number generators' states as plain data, and
a fingerprint of the data the run was trained on.

Everything saved here is lists, numbers, strings and tensors, so ``checkpoints/last.pt`` loads
with ``torch.load(weights_only=True)`` like every other checkpoint.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlcli import config as config_mod, runs
from mtlcli.model.checkpoint import Checkpoint
from mtlcli.config import TrainConfig
from mtlcli.errors import UserError, first_line
from mtlcli.training.loop import Position
from mtlcli.training.policies import BestCheckpoint, EarlyStopping

LAST = "last.pt"


def resume_settings(run_dir: str | Path, overrides: dict[str, Any], config_file: str | Path | None) -> tuple[Path, TrainConfig]:
    """The run folder and its saved config, with --epochs/--patience raised and trackers added where given.

    Anything else given beside --resume is refused: a run continues with the settings it started with.
    """
    run = runs.resolve_run(run_dir)
    given = sorted(config_mod.flag_of(k) for k, v in overrides.items() if v is not None and k not in config_mod.RESUMABLE)
    if config_file is not None:
        given.insert(0, "--config")
    if given:
        raise UserError(f"--resume continues {run} with its own settings ({run / 'config.yaml'}); "
                        f"drop {', '.join(given)} ({config_mod.resume_rule()})")
    check_can_go_on(run)
    cfg = config_mod.resolve(run / "config.yaml", {})
    if "attention_dropout" not in config_mod.read_config_file(run / "config.yaml"):
        cfg.attention_dropout = "model"  # a run from before the setting trained with the model's own value
    for key in config_mod.RESUMABLE:
        value, saved = overrides.get(key), getattr(cfg, key)
        if value is None:
            continue
        if config_mod.SETTINGS[key].on_resume == "add":
            value = list(dict.fromkeys(saved + value))
        elif config_mod.SETTINGS[key].on_resume == "raise" and value < saved:
            raise UserError(f"{config_mod.flag_of(key)} {value}: lower than the run's {saved}; "
                            f"on resume {config_mod.resume_rule()}")
        setattr(cfg, key, value)
    return run, cfg


def check_can_go_on(run: Path) -> None:
    """A run that ended and dropped last.pt (the default, or `mtl tidy`) cannot train on: say so,
    rather than start it over in place as a run killed before its first checkpoint would."""
    summary = runs.read_summary(run)
    if runs.has_ended(summary) and not last_checkpoint(run).is_file():
        where = (f"step {summary['steps_run']}" if not summary.get("epochs_run") and summary.get("steps_run")
                 else f"epoch {summary['epochs_run']}")
        raise UserError(f"{run}: the run ended after {where} and its optimizer state "
                        f"({runs.LAST}) was dropped to save disk, so it cannot train on; start a new run "
                        "(with --keep-optimizer to keep that state when it ends)")


def last_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / LAST


class TrainingState:
    """What last.pt holds besides the weights: everything it takes to go on from where training
    stands. ``read`` finds and checks last.pt, ``warmup`` keeps a resumed run's warmup as it began,
    ``payload`` writes the state and ``restore`` puts every part back; nothing else touches it."""

    def __init__(self, run: Path, optimizer, scheduler, scaler: torch.amp.GradScaler, stopper: EarlyStopping,
                 saver: BestCheckpoint, log: runs.MetricsLog, total_steps: int, warmup_steps: int,
                 fingerprint: dict[str, str]):
        self.run, self.optimizer, self.scheduler, self.scaler = run, optimizer, scheduler, scaler
        self.stopper, self.saver, self.log = stopper, saver, log
        self.total_steps, self.warmup_steps, self.fingerprint = total_steps, warmup_steps, fingerprint

    @staticmethod
    def read(run: Path, fingerprint: dict[str, str]) -> Checkpoint | None:
        """The run's last.pt, checked; None when the run stopped before it wrote one."""
        path = last_checkpoint(run)
        if not path.is_file():
            return None
        saved = Checkpoint.load(path)
        schedule = saved.resume.get("schedule") if isinstance(saved.resume, dict) else None
        if not isinstance(schedule, dict) or not isinstance(schedule.get("warmup_steps"), int):
            raise UserError(f"{path}: holds no usable resume state (not written by mtl train)")
        digests = saved.resume.get("data_sha256")
        check_same_data(digests if isinstance(digests, dict) else {}, fingerprint, path)
        return saved

    @staticmethod
    def warmup(saved: Checkpoint | None, warmup_ratio: float, total_steps: int) -> int:
        """Warmup steps: a resumed run keeps the length it started with (raising --epochs stretches
        only the decay); a new run takes its share of all steps."""
        return saved.resume["schedule"]["warmup_steps"] if saved else int(warmup_ratio * total_steps)

    def payload(self, at: Position, tally: dict | None) -> dict[str, Any]:
        return {
            "epoch": at.epoch, "step": at.step, "tally": tally,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "schedule": {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps},
            "early_stopping": self.stopper.state_dict(), "best_checkpoint": self.saver.state_dict(),
            "rng": rng_state(), "metrics_rows": self.log.rows, "data_sha256": self.fingerprint,
            "batch_order": "train_batches(seed, epoch)",
        }

    def restore(self, saved: Checkpoint, model, combiner) -> tuple[Position, dict | None]:
        """Put every stateful part back as last.pt has it; the random number generators last."""
        state = saved.resume
        try:
            model.load_state_dict(saved.model)
            combiner.load_state_dict(saved.combiner)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("grad_scaler"):  # empty when saved by a disabled (not fp16) scaler
                self.scaler.load_state_dict(state["grad_scaler"])
            self.stopper.load_state_dict(state["early_stopping"])
            self.saver.load_state_dict(state["best_checkpoint"])
            start = Position(int(state["epoch"]), int(state["step"]))
            if start.epoch < 1 or start.step < 0:
                raise ValueError(f"no epoch {start.epoch}, batch {start.step}")
            tally = state.get("tally")
            if start.step and any(set(tally[k]) != set(saved.labels) for k in ("loss_sum", "correct", "counted")):
                raise ValueError("the epoch's running sums do not match the run's tasks")
            rows = [dict(r) for r in state["metrics_rows"]]
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            why = first_line(exc, 200)
            raise UserError(f"{last_checkpoint(self.run)}: cannot resume from it; it does not fit this run ({why})") from None
        self.log.restore(rows)  # a crash may have logged an epoch after last.pt was written: it runs again
        return start, tally


# ---- random number generators as plain data ---------------------------------------------------


def rng_state() -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- the data a run was trained on ------------------------------------------------------------


def data_fingerprint(cfg: TrainConfig) -> dict[str, str]:
    """SHA-256 of the training (and validation) CSV: a resumed run must see the same rows."""
    out = {}
    for key in ("data", "val"):
        path = getattr(cfg, key)
        if path:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[path] = digest.hexdigest()
    return out


def check_same_data(saved: dict[str, str], now: dict[str, str], checkpoint: Path) -> None:
    for path, digest in now.items():
        if saved.get(path) not in (None, digest):
            raise UserError(f"{path}: the file changed since the run started (its SHA-256 differs from the one in "
                            f"{checkpoint}); a resumed run must train on the same data: start a new run instead")
