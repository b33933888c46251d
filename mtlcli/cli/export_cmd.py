"""mtl export: write a run as a standard sentence-transformers folder or an ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtlcli.cli.common import err_console, handles_errors

Opt = typer.Option


@handles_errors
def export(
    run: Annotated[Path, typer.Argument(help="Run folder, e.g. runs/latest.", show_default=False)],
    fmt: Annotated[str, Opt("--format", "-f", help="sentence-transformers or onnx.", show_default=False)],
    out: Annotated[Path, Opt("--out", "-o", help="The folder to write (new, or empty).", show_default=False)],
) -> None:
    """Export RUN's best checkpoint to a folder that other programs load, with its heads, labels and a model card."""
    from mtlcli.export import export as export_run

    report = export_run(run, fmt, out)
    checked = (f"; ONNX Runtime matches PyTorch within {report['max_abs_diff']:.1e}"
               if "max_abs_diff" in report else "")
    err_console.print(f"wrote {fmt} export to {out}{checked}", soft_wrap=True, markup=False)
