"""Checkpoints are plain dicts of tensors and built-in types: they load with weights_only=True.

One loader serves eval, predict and resume.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from mtlcli.errors import RunFailed, UserError

FORMAT = "mtl-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, flushed to disk, then a rename.

    A failed write (full disk, no permission) removes the temporary file and raises RunFailed; the
    previous file of that name is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    out = None
    try:
        with open(tmp, "wb") as f:
            out = _KeepsWriteError(f)
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        # torch reports a failed write as an opaque RuntimeError; the OSError under it says why
        cause = out.error if out is not None and out.error is not None else exc
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause).splitlines()[0]
        raise RunFailed(f"{path}: cannot write the checkpoint ({why}); the previous one is kept") from None
    finally:
        tmp.unlink(missing_ok=True)


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
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
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
