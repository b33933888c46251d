"""Checkpoints are plain dicts of tensors and built-in types: they load with weights_only=True.

``Checkpoint`` declares what one holds; one loader serves eval, predict, export and resume.
``SavedRun`` is what a checkpoint and an export both say of their run besides the weights.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlcli import vocabulary as vocab
from mtlcli.atomic import replacing
from mtlcli.config import TrainConfig
from mtlcli.errors import RunFailed, UserError, first_line
from mtlcli.tasks.base import Task

if TYPE_CHECKING:  # imported where weights are read or written: an ONNX export's SavedRun needs no torch
    import torch

FORMAT = "mtl-checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SavedRun:
    """A trained run as a checkpoint or an export (mtl_config.json) describes it, weights aside.

    ``settings`` is ``config`` read by ``TrainConfig.from_saved`` once, here: every reader of a
    saved run (eval, predict, serve, export, the Python API) takes its max length, text column and
    model from it, with the defaults of the one schema.
    """

    config: dict[str, Any]  # as saved: exports copy it, mtlcli.Model.config shows it
    labels: dict[str, list[str]]  # task -> its labels, in the order of the head's outputs
    epoch: int | None = None  # the epoch the weights are from
    validation: dict[str, Any] = field(default_factory=dict)  # that epoch's val_ metrics
    precision: str | None = None  # what the run trained in
    components: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> name, source package, version
    objective: dict[str, Any] = field(default_factory=dict)  # eval's loss; exports keep none
    task_types: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> Task.to_dict(); none: classification
    settings: TrainConfig = field(init=False, repr=False, compare=False)
    tasks: dict[str, Task] = field(init=False, repr=False, compare=False)  # each task's type and what it learned

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", TrainConfig.from_saved(self.config))
        object.__setattr__(self, "tasks", {name: Task.from_saved(name, labels, self.task_types.get(name))
                                           for name, labels in self.labels.items()})


@dataclass
class Checkpoint:
    """What every checkpoint holds (best_epoch_N.pt and last.pt); last.pt adds ``resume``."""

    config: dict[str, Any]  # the config as trained: max_length resolved, so eval and predict cut texts alike
    labels: dict[str, list[str]]  # task -> its labels, in the order of the head's outputs
    model: dict[str, torch.Tensor]  # MultiTaskModel.state_dict()
    combiner: dict[str, torch.Tensor] = field(default_factory=dict)  # the loss combiner's learned state
    epoch: int | None = None  # the last complete epoch
    metrics: dict[str, Any] = field(default_factory=dict)  # that epoch's metrics row
    objective: dict[str, Any] = field(default_factory=dict)  # class_weights and label_smoothing of the losses
    components: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> name, source package, version
    precision: str | None = None  # what the run trained in
    task_types: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> Task.to_dict(); none: classification
    mtl_version: str = ""
    resume: dict[str, Any] | None = None  # last.pt only: all it takes to go on (training.resume.TrainingState)

    def saved_run(self) -> SavedRun:
        return SavedRun(self.config, self.labels, epoch=self.epoch,
                        validation=vocab.of_split(self.metrics, vocab.VAL),
                        precision=self.precision, components=self.components, objective=self.objective,
                        task_types=self.task_types)

    def save(self, path: str | Path) -> None:
        payload = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it would copy every tensor
        if payload["resume"] is None:
            del payload["resume"]
        save_checkpoint(path, payload)

    @classmethod
    def load(cls, path: str | Path) -> "Checkpoint":
        saved = load_checkpoint(path)
        for key in ("config", "labels", "model"):
            if not isinstance(saved[key], dict):
                raise UserError(f"{path}: broken checkpoint ('{key}' is not a mapping)")
        return cls(**{f.name: saved[f.name] for f in fields(cls) if saved.get(f.name) is not None})


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (mtlcli.atomic): a reader sees the old checkpoint or the new one.

    A failed write (full disk, no permission) removes the temporary file and raises RunFailed; the
    previous file of that name is untouched.
    """
    import torch

    out = None
    # No CRC32 per record: torch.load never checks them (a flipped byte in a tensor loads as it is),
    # and computing them took 0.2 to 0.6 s of each 363 MB last.pt. Writes stay atomic (above).
    crc32 = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        with replacing(path) as f:
            out = _KeepsWriteError(f)
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, out)
    except (OSError, RuntimeError) as exc:
        # torch reports a failed write as an opaque RuntimeError; the OSError under it says why
        cause = out.error if out is not None and out.error is not None else exc
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else first_line(cause)
        raise RunFailed(f"{path}: cannot write the checkpoint ({why}); the previous one is kept") from None
    finally:
        torch.serialization.set_crc32_options(crc32)


class _KeepsWriteError:
    """A file wrapper that remembers the OSError of a failed write (torch.save hides it)."""

    def __init__(self, f):
        self.f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the outcome is what matters
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything that would import or run code, before running any of it
        raise UserError(f"{path}: refused to load: the checkpoint holds more than weights and plain data "
                        f"({_refusal_reason(exc)}); only load checkpoints from sources you trust") from None
    except Exception as exc:
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first_line(str(exc), 200)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not an mtl checkpoint")
    if not isinstance(ckpt.get("format_version", 0), int):
        raise UserError(f"{path}: broken checkpoint (format_version is not a number)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path}: written by a newer mtl (checkpoint format {ckpt['format_version']}); upgrade mtlcli")
    for key in ("config", "labels", "model"):
        if key not in ckpt:
            raise UserError(f"{path}: broken checkpoint (no '{key}')")
    return ckpt


def _refusal_reason(exc: Exception) -> str:
    """What torch refused, in a few words; not its advice to turn the check off."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if m := re.search(r"GLOBAL ([\w.]+)", text):
        return f"it would import or call {m.group(1)}"
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("WeightsUnpickler error:"):
            return line.split(":", 1)[1].strip()[:200]
        if line.startswith("Unsupported"):
            return line[:200]
    return "content that is not weights or plain data"
