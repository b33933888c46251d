"""The run folder: its name, its files (each written atomically, see mtlcli.atomic) and finding them again."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mtlcli.atomic import TMP_MARK, write_atomic, write_json
from mtlcli.errors import UserError

NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LATEST = "latest"
LAST = Path("checkpoints") / "last.pt"  # the weights where training stands and the optimizer state: what --resume needs
KEPT, DROPPED = "kept", "dropped"  # summary.json's optimizer_state: what became of last.pt when the run ended
NO_VALIDATION_RULE = "last epoch (--val-split 0: no validation)"  # summary.json's best_rule without validation


def remove_leftovers(run: Path) -> list[Path]:
    """Delete the temporary files of a process that was killed while writing; returns them."""
    found = [p for folder in (run, run / "checkpoints", run / "plots") for p in folder.glob(f".*{TMP_MARK}*")]
    found += [p for p in (run / ".backbone.tmp",) if p.exists()]
    for p in found:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return found


def require_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start when the disk clearly cannot hold what the run will write."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"{folder}: only {free / 1e6:.0f} MB free on this disk; {what} need about "
                        f"{needed / 1e6:.0f} MB; free some space or choose another --out")


def check_run_target(out: str | Path, name: str | None) -> Path:
    """Refuse a bad --name, a taken one, or an --out folder that cannot be written, before anything slow."""
    out = Path(out)
    if name is not None and (not NAME_OK.fullmatch(name) or name == LATEST or len(name) > 100):
        raise UserError(f"--name {name[:100]!r}: use up to 100 letters, digits, '.', '_' and '-', not starting "
                        "with '.' (and not 'latest')")
    try:
        probe = out  # the folder, or the nearest existing folder above it: nothing is created yet
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise NotADirectoryError(20, f"{probe} is a file, not a folder")
        with tempfile.TemporaryFile(dir=probe):  # really write: os.access says yes to root on a read-only disk
            pass
        taken = name is not None and _taken(out / name)
    except (OSError, ValueError) as exc:
        raise UserError(f"{out}: cannot write the run folder here ({getattr(exc, 'strerror', None) or exc})") from None
    if taken:
        raise UserError(f"{out / name}: a run of that name exists already; pick another --name")
    return out


def create_run(out: str | Path, name: str | None) -> Path:
    """A new, empty run folder under ``out``; an existing folder is never reused."""
    out = check_run_target(out, name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the run folder here ({exc.strerror or exc})") from None
    if name is not None:
        path = out / name
        try:
            path.mkdir()
        except FileExistsError:
            raise UserError(f"{path}: a run of that name exists already; pick another --name") from None
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            path = out / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
    (path / "checkpoints").mkdir()
    return path


def point_latest(run: Path, name: str = LATEST) -> None:
    """Make ``<out>/latest`` (or another ``name`` beside the run) a relative symlink to this run,
    replacing the old one atomically."""
    link = run.parent / name
    tmp = run.parent / f".{name}.tmp-{os.getpid()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(run.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        pass  # no symlinks here (some Windows setups): runs are still reachable by name


def save_backbone_files(run: Path, tokenizer, backbone) -> None:
    """The tokenizer and the backbone's architecture, so the run rebuilds without the original model."""
    final = run / "backbone"
    tmp = run / ".backbone.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    backbone.config.save_pretrained(str(tmp))
    os.replace(tmp, final)


class MetricsLog:
    """metrics.jsonl: one JSON object per epoch, rewritten whole so a crash never leaves half a line."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = read_metrics(path) if path.exists() else []

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write()

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Go back to the rows a checkpoint holds: a crash may have logged an epoch it never saved."""
        self.rows = list(rows)
        self._write()

    def _write(self) -> None:
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc.__class__.__name__})") from None
    for n, line in enumerate(text.split("\n"), 1):  # only \n ends a line: json.dumps never writes a bare one
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{n}: not a JSON line") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: not a JSON object")
            rows.append(row)
    return rows


# ---- finding a run's files --------------------------------------------------------------------


def _taken(path: Path) -> bool:
    return path.exists() or path.is_symlink()  # a dangling link still holds the name


def free_name(out: Path, name: str) -> str:
    """``name``, or the first of NAME-2, NAME-3, ... that nothing in ``out`` has."""
    candidates = itertools.chain([name], (f"{name}-{n}" for n in itertools.count(2)))
    return next(c for c in candidates if not _taken(out / c))


def runs_beside(path: Path) -> str:
    """The run folders beside a path that does not exist, and the closest name: what the user may have meant."""
    import difflib

    try:
        names = sorted(p.name for p in path.parent.iterdir() if (p / "config.yaml").is_file())
    except OSError:
        return ""
    if not names:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.5)
    listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    guess = f"; did you mean {path.parent / close[0]}?" if close else ""
    return f"{guess} (runs in {path.parent}: {listed})"


def resolve_run(path: str | Path) -> Path:
    run = Path(path)
    if not run.exists():
        raise UserError(f"{path}: no such run folder{runs_beside(run)}")
    if not run.is_dir() or not (run / "config.yaml").is_file():
        raise UserError(f"{path}: not an mtl run folder (no config.yaml)")
    return run.resolve()


def best_checkpoint(run: Path) -> Path:
    """The run's best checkpoint: as summary.json says, or the newest best of a run in progress."""
    summary = run / "summary.json"
    if summary.is_file():
        try:
            rel = json.loads(summary.read_text(encoding="utf-8")).get("best_checkpoint")
        except (json.JSONDecodeError, UnicodeDecodeError):
            rel = None
        if rel and (run / rel).is_file():
            return run / rel
    found = sorted(run.glob("checkpoints/best_epoch_*.pt"), key=lambda p: _epoch_of(p))
    if not found:
        raise UserError(f"{run}: no checkpoint yet (the run has not finished an epoch)")
    return found[-1]


def _epoch_of(path: Path) -> float:
    m = re.search(r"best_epoch_(\d+(?:\.\d+)?)\.pt$", path.name)
    return float(m.group(1)) if m else -1


# ---- a finished run's optimizer state ---------------------------------------------------------


def read_summary(run: Path) -> dict[str, Any]:
    """summary.json, or {} while the run has none (or an unreadable one)."""
    try:
        value = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def has_ended(summary: dict[str, Any]) -> bool:
    """The run finished or stopped early: not interrupted, not diverged, at least one epoch (or, with
    --max-steps, one optimizer step) done."""
    epochs, steps = summary.get("epochs_run"), summary.get("steps_run")
    done = (isinstance(epochs, int) and epochs >= 1) or (isinstance(steps, int) and steps >= 1)
    return done and not summary.get("interrupted") and not summary.get("diverged")


def spare_optimizer_state(run: Path) -> Path | None:
    """last.pt of a run that has ended, which nothing but training on with --resume reads; None
    when the run may still need it (interrupted, diverged, or training on: last.pt newer than
    summary.json)."""
    last, summary_file = run / LAST, run / "summary.json"
    try:
        if not has_ended(read_summary(run)) or last.stat().st_mtime_ns > summary_file.stat().st_mtime_ns:
            return None
    except OSError:  # no last.pt
        return None
    return last


def drop_optimizer_state(run: Path, last: Path) -> int:
    """Delete a finished run's last.pt (summary.json says so first); returns the bytes freed."""
    size = last.stat().st_size
    summary = read_summary(run)
    summary.update(last_checkpoint=None, optimizer_state=DROPPED)
    write_json(run / "summary.json", summary)
    last.unlink(missing_ok=True)
    return size


def run_folders(path: str | Path) -> list[Path]:
    """A run folder, or the run folders inside a folder of runs (the ``latest`` link left out)."""
    folder = Path(path)
    if (folder / "config.yaml").is_file():
        return [folder]
    if not folder.is_dir():
        raise UserError(f"{path}: no such folder{runs_beside(folder) if not folder.exists() else ''}")
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.is_symlink() and (p / "config.yaml").is_file())
