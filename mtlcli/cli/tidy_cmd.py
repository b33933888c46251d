"""mtl tidy: free the disk space finished runs keep only for training on (checkpoints/last.pt), and,
when asked, the token cache beside the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from mtlcli.cli.common import argument, console, handles_errors, option


@handles_errors
def tidy(
    paths: Annotated[list[Path], argument("PATH...", "Run folders, or folders of runs (e.g. runs).")],
    dry_run: Annotated[bool, option("--dry-run", "-n", help="Only list what would be deleted and how much space it frees.")] = False,
    token_cache: Annotated[bool, option("--token-cache", help="Also delete the token cache of each folder of runs (PATH/.cache/tokens): the next run on the same texts tokenizes them again.")] = False,
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
        _say(f"{last}: {_mb(size)}")
    caches = _clear_token_caches(paths, dry_run) if token_cache else {}
    done = "Would free" if dry_run else "Freed"
    if tidied:
        _say(f"{done} {_mb(freed)}: the optimizer state of {tidied} finished run{'s' if tidied > 1 else ''} "
             f"(of {len(folders)}); a tidied run can no longer train on with --resume")
    elif not caches:
        _say(f"Nothing to tidy: no finished run among {len(folders)} keeps its optimizer state"
             + ("; no token cache either" if token_cache else ""))
    if caches:
        _say(f"{done} {_mb(sum(caches.values()))}: the token cache of {len(caches)} folder{'s' if len(caches) > 1 else ''} "
             "of runs; the next run on the same texts tokenizes them again")


def _clear_token_caches(paths: list[Path], dry_run: bool) -> dict[Path, int]:
    """Each folder of runs' token cache, deleted (or only listed); returns the bytes each held."""
    import shutil

    from mtlcli.data.token_cache import FOLDER

    sizes = {}
    for folder in dict.fromkeys(path.resolve() / FOLDER for path in paths):
        if not folder.is_dir():
            continue
        entries = [p for p in folder.iterdir() if p.is_file()]
        sizes[folder] = sum(p.stat().st_size for p in entries)
        _say(f"{folder}: {_mb(sizes[folder])} ({len(entries)} entr{'ies' if len(entries) != 1 else 'y'})")
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)  # a run writing an entry now writes it again later
    return sizes


def _say(line: str) -> None:
    console.print(line, soft_wrap=True, markup=False, highlight=False)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
