"""mtl report: one self-contained HTML page about one or more runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated


from mtlcli.cli.common import argument, device_option, handles_errors, option, print_note, print_warning
from mtlcli.errors import UserError



@handles_errors
def report(
    runs: Annotated[list[Path], argument("RUN...", "Run folders (runs/latest works); several are compared.")],
    output: Annotated[Path, option("--output", "-o", metavar="FILE", help="The HTML file to write.", default="report.html")] = Path("report.html"),
    device: Annotated[str, device_option("Where the validation set is scored when a run has no validation.json yet.")] = "auto",
) -> None:
    """Write one HTML page (no network needed) with each run's settings, data, curves and validation analysis."""
    from mtlcli import atomic
    from mtlcli.reports import html as report_mod

    views = report_mod.collect([str(r) for r in runs], device, warn=print_warning, on_compute=print_note)
    html = report_mod.render(views)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(output, html)
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write there ({exc.strerror or exc})") from None
    size = len(html.encode("utf-8"))
    print_note(f"wrote {output} ({size / 1e3:.0f} kB, {len(views)} run{'s' if len(views) > 1 else ''})")
