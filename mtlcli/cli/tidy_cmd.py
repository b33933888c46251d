"""mtl tidy: free the disk space finished runs keep only for training on (checkpoints/last.pt)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from mtlcli.cli.common import argument, console, handles_errors, option


@handles_errors
def tidy(
    paths: Annotated[list[Path], argument("PATH...", "Run folders, or folders of runs (e.g. runs).")],
    dry_run: Annotated[bool, option("--dry-run", "-n", help="Only list what would be deleted and how much space it frees.")] = False,
) -> None:
    """Delete the optimizer state (checkpoints/last.pt) of runs that finished or stopped early; an
    interrupted run keeps its own, so it can still be resumed. Best checkpoints are never touched."""
    from mtlcli import runs

    folders = list(dict.fromkeys(run.resolve() for path in paths for run in runs.run_folders(path)))
    freed, tidied = 0, 0
    for run in folders:
        last = runs.spare_optimizer_state(run)
        if last is None:
            continue
        size = last.stat().st_size if dry_run else runs.drop_optimizer_state(run, last)
        freed, tidied = freed + size, tidied + 1
        console.print(f"{last}: {_mb(size)}", soft_wrap=True, markup=False, highlight=False)
    if not tidied:
        console.print(f"Nothing to tidy: no finished run among {len(folders)} keeps its optimizer state",
                      soft_wrap=True, markup=False, highlight=False)
        return
    done = "Would free" if dry_run else "Freed"
    console.print(f"{done} {_mb(freed)}: the optimizer state of {tidied} finished run{'s' if tidied > 1 else ''} "
                  f"(of {len(folders)}); a tidied run can no longer train on with --resume", soft_wrap=True, markup=False,
                  highlight=False)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
