"""mtl export: write a run as a standard sentence-transformers folder or an ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated


from mtlcli.cli.common import argument, choice_option, handles_errors, option, print_note
from mtlcli.export.folder import KINDS



@handles_errors
def export(
    run: Annotated[Path, argument("RUN", "Run folder, e.g. runs/latest.")],
    fmt: Annotated[str, choice_option("--format", "-f", choices=KINDS, help="What to write.")],
    out: Annotated[Path, option("--out", "-o", metavar="DIR", help="The folder to write (new, or empty).")],
) -> None:
    """Export RUN's best checkpoint to a folder that other programs load, with its heads, labels and a model card."""
    from mtlcli.export import export as export_run

    report = export_run(run, fmt, out)
    checked = (f"; ONNX Runtime matches PyTorch within {report['max_abs_diff']:.1e}"
               if "max_abs_diff" in report else "")
    print_note(f"wrote {fmt} export to {out}{checked}")
