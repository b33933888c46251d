"""What `mtl train --resume RUN` needs besides the loop: the run's own settings, the random number
generators' states as plain data, and a fingerprint of the data the run was trained on.

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
from mtlcli.config import TrainConfig
from mtlcli.errors import UserError

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
    cfg = config_mod.resolve(run / "config.yaml", {})
    for key in config_mod.RESUMABLE:
        value, saved = overrides.get(key), getattr(cfg, key)
        if value is None:
            continue
        if config_mod.SETTINGS[key].on_resume == "add":
            value = list(dict.fromkeys(saved + value))
        elif value < saved:
            raise UserError(f"{config_mod.flag_of(key)} {value}: lower than the run's {saved}; "
                            f"on resume {config_mod.resume_rule()}")
        setattr(cfg, key, value)
    return run, cfg


def last_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / LAST


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
