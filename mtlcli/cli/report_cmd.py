"""mtl report: one self-contained HTML page about one or more runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated


from mtlcli.cli.common import argument, device_option, handles_errors, option, print_note, print_warning
from mtlcli.errors import UserError



@handles_errors
def report(
    runs: Annotated[list[Path], argument("RUN...", "Run folders (runs/latest works); several are compared. A study's folder (mtl tune) shows its trials and its best run.")],
    output: Annotated[Path, option("--output", "-o", metavar="FILE", help="The HTML file to write.", default="report.html")] = Path("report.html"),
    device: Annotated[str, device_option("Where the validation set is scored when a run has no validation.json yet.")] = "auto",
) -> None:
    """Write one HTML page (no network needed) with each run's settings, data, curves and validation analysis."""
    from mtlcli import atomic
    from mtlcli.reports import html as report_mod
    from mtlcli.reports import study as study_mod

    paths, studies = [], []
    for path in runs:
        study = study_mod.read_study(path)
        if study is None:
            paths.append(str(path))
            continue
        studies.append(study_mod.study_section(study))
        best = study_mod.best_run(study)
        paths += [str(best)] if best else []
    views = report_mod.collect(paths, device, warn=print_warning, on_compute=print_note)
    html = report_mod.render(views, studies)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(output, html)
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write there ({exc.strerror or exc})") from None
    size = len(html.encode("utf-8"))
    print_note(f"wrote {output} ({size / 1e3:.0f} kB, {len(views)} run{'s' if len(views) != 1 else ''}"
               + (f", {len(studies)} stud{'ies' if len(studies) > 1 else 'y'})" if studies else ")"))
