"""The run folder: everything a run writes, each file written atomically (temp file + rename)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from mtlcli.errors import UserError

NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LATEST = "latest"


def write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def create_run(out: str | Path, name: str | None) -> Path:
    """A new, empty run folder under ``out``; an existing folder is never reused."""
    out = Path(out)
    if name is not None and (not NAME_OK.match(name) or name == LATEST):
        raise UserError(f"--name '{name}': use letters, digits, '.', '_' and '-' only, not starting with '.' (and not 'latest')")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as exc:
        raise UserError(f"{out}: cannot write the run folder here ({exc.strerror or exc})") from None
    if name is not None:
        path = out / name
        if path.exists() or path.is_symlink():
            raise UserError(f"{path}: a run of that name exists already; pick another --name")
        path.mkdir()
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


def point_latest(run: Path) -> None:
    """Make ``<out>/latest`` a relative symlink to this run, replacing the old one atomically."""
    link = run.parent / LATEST
    tmp = run.parent / f".{LATEST}.tmp-{os.getpid()}"
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
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}:{n}: not a JSON line") from None
    return rows


# ---- finding a run's files --------------------------------------------------------------------


def resolve_run(path: str | Path) -> Path:
    run = Path(path)
    if not run.exists():
        raise UserError(f"{path}: no such run folder")
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


def _epoch_of(path: Path) -> int:
    m = re.search(r"best_epoch_(\d+)\.pt$", path.name)
    return int(m.group(1)) if m else -1
