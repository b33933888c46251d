"""mtl report: one self-contained HTML page about one or more runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtlcli.cli.common import console, err_console, handles_errors, print_warning
from mtlcli.errors import UserError

Opt = typer.Option


@handles_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (runs/latest works); several are compared.", show_default=False)],
    output: Annotated[Path, Opt("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    device: Annotated[str, Opt(help="auto, cpu or cuda: where the validation set is scored when a run has no validation.json yet.")] = "auto",
) -> None:
    """Write one HTML page (no network needed) with each run's settings, data, curves and validation analysis."""
    from mtlcli import atomic, report as report_mod

    def progress(message: str) -> None:
        err_console.print(message, soft_wrap=True, markup=False, highlight=False)

    views = report_mod.collect([str(r) for r in runs], device, warn=print_warning, on_compute=progress)
    html = report_mod.render(views)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(output, html)
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write there ({exc.strerror or exc})") from None
    size = len(html.encode("utf-8"))
    console.print(f"wrote {output} ({size / 1e3:.0f} kB, {len(views)} run{'s' if len(views) > 1 else ''})",
                  soft_wrap=True, markup=False, highlight=False)
