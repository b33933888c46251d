"""Files that appear whole or not at all: written under a temporary name beside the target, then renamed.

Every file mtl writes (checkpoints, metrics, summaries, plots, predictions) goes through ``replacing``,
so a reader sees the old file or the new one, never half of one, and a killed process leaves only
``.<name>.tmp-<pid>`` files behind, which ``runs.remove_leftovers`` recognises by that mark.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator

from mtlcli.errors import RunFailed

TMP_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def replacing(path: str | Path, mode: str = "wb", durable: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; when the block ends without an error it replaces ``path``.

    ``durable``: flushed to the disk before the rename, so a power cut cannot leave an empty file
    under the final name (checkpoints and run files); streams of predictions skip it.
    On an error the temporary file is removed and the old ``path`` is untouched.
    """
    path = Path(path)
    tmp = temporary_name(path)
    text = "b" not in mode
    try:
        with open(tmp, mode, **({"encoding": "utf-8", "newline": ""} if text else {})) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> None:
    """A whole file at once; a failed write (full disk, no permission) raises RunFailed."""
    try:
        with replacing(path) as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as exc:
        raise RunFailed(f"{path}: cannot write ({exc.strerror or exc}); the previous version is kept") from None


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")
