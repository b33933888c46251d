"""mtl eval: score a trained run on labelled data, as Rich tables or one JSON object."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from mtlcli.cli.common import console, err_console, handles_errors

Opt = typer.Option


@handles_errors
def eval_(
    run: Annotated[Path, typer.Argument(help="Run folder, e.g. runs/latest.", show_default=False)],
    data: Annotated[Path, typer.Argument(help="Labelled CSV: the run's text column and any of its task columns.", show_default=False)],
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object instead of tables.")] = False,
    out: Annotated[Optional[Path], Opt(help="Also write eval.json and confusion_<task>.png here.")] = None,
    ignore_unknown: Annotated[bool, Opt("--ignore-unknown", help="Leave out rows whose label the run never saw, instead of stopping.")] = False,
    text_column: Annotated[Optional[str], Opt(help="Column with the text. (default: the run's)")] = None,
    delimiter: Annotated[Optional[str], Opt(help="Field delimiter of delimited text, one character (tab: \\t or tab). (default: by extension; else sniffed)")] = None,
    batch_size: Annotated[Optional[int], Opt(help="Sentences per batch. (default: 64 on a CPU, 256 on a GPU, as predict and validation)")] = None,
    device: Annotated[str, Opt(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, Opt(help="run (as the run trained, so scores match its validation), auto, fp32, bf16 or fp16.")] = "run",
) -> None:
    """Score RUN's best checkpoint on DATA.csv: loss, accuracy, macro-F1, per-class scores, confusion matrix."""
    from mtlcli import scoring
    from mtlcli.inference import load_run

    loaded = load_run(run, device, precision)
    report = scoring.score(loaded, data, text_column, ignore_unknown, batch_size, delimiter)
    for task, labels in report.get("ignored", {}).items():
        rows = sum(labels.values())
        listed = ", ".join(f"'{label}' ({n})" for label, n in labels.items())
        err_console.print(f"ignored {rows} row(s) of task '{task}' with labels the run never saw: {listed}",
                          soft_wrap=True, markup=False)
    if out:
        written = scoring.write_report(report, out)
        err_console.print(f"wrote {', '.join(str(p) for p in written)}", soft_wrap=True, markup=False)
    if as_json:
        typer.echo(scoring.dumps(report))
        return
    console.print(f"{report['n']} rows of {data} scored with {loaded.checkpoint.relative_to(loaded.run.parent)}; "
                  f"combined loss {_fmt(report['loss'])}", soft_wrap=True, markup=False, highlight=False)
    for task, r in report["tasks"].items():
        console.print(f"\n[bold]{escape(task)}[/]: accuracy {_fmt(r['accuracy'])}, macro-F1 {_fmt(r['macro_f1'])}, "
                      f"loss {_fmt(r['loss'])} (n={r['n']})", soft_wrap=True, highlight=False)
        if r.get("warning"):
            err_console.print(f"warning: {r['warning']}", soft_wrap=True, markup=False, highlight=False, style="yellow")
        console.print(scores_table(r))
        console.print(confusion_table(r))


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def scores_table(r: dict[str, Any]) -> Table:
    table = Table()
    table.add_column("label")
    for col in ("precision", "recall", "F1", "support"):
        table.add_column(col, justify="right")
    for label, c in r["per_class"].items():
        table.add_row(escape(label), _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), str(c["support"]))
    return table


def confusion_table(r: dict[str, Any]) -> Table:
    table = Table(title="confusion matrix", title_justify="left")
    table.add_column("true \\ predicted")
    for label in r["labels"]:
        table.add_column(escape(label), justify="right")
    for i, (label, counts) in enumerate(zip(r["labels"], r["confusion_matrix"])):
        table.add_row(escape(label), *(f"[bold]{n}[/]" if i == j else str(n) for j, n in enumerate(counts)))
    return table
