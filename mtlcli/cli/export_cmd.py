"""mtl export: write a run as a standard sentence-transformers folder or an ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional


from mtlcli.cli.common import argument, choice_option, handles_errors, option, print_note
from mtlcli.export import QUANTIZE
from mtlcli.export.folder import KINDS



@handles_errors
def export(
    run: Annotated[Path, argument("RUN", "Run folder, e.g. runs/latest.")],
    fmt: Annotated[str, choice_option("--format", "-f", choices=KINDS, help="What to write.")],
    out: Annotated[Path, option("--out", "-o", metavar="DIR", help="The folder to write (new, or empty).")],
    quantize: Annotated[Optional[str], choice_option(
        "--quantize", choices=QUANTIZE, default="none: fp32",
        help="onnx only: int8 weights, inputs quantized per batch (ONNX Runtime's dynamic quantization); "
             "smaller, and faster on CPUs without bf16; a few labels may differ from fp32's (docs/export.md).")] = None,
) -> None:
    """Export RUN's best checkpoint to a folder that other programs load, with its heads, labels and a model card."""
    from mtlcli.export import export as export_run

    report = export_run(run, fmt, out, quantize)
    checked = (f"; ONNX Runtime{' (int8)' if quantize else ''} matches PyTorch{' (fp32)' if quantize else ''} "
               f"within {report['max_abs_diff']:.1e}" if "max_abs_diff" in report else "")
    print_note(f"wrote {fmt}{' int8' if quantize else ''} export to {out}{checked}")
