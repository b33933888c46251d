"""mtl eval: score a trained run on labelled data, as Rich tables or one JSON object."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from mtlcli.cli.common import (argument, console, device_option, handles_errors, option, precision_option, print_note,
                               print_warning, whole_number_option)


@handles_errors
def eval_(
    run: Annotated[Path, argument("RUN", "Run folder, e.g. runs/latest.")],
    data: Annotated[Path, argument("DATA", "Labelled data (CSV, TSV, JSONL, Parquet): the run's text column and any of its task columns.")],
    as_json: Annotated[bool, option("--json", help="Print one JSON object instead of tables.")] = False,
    out: Annotated[Optional[Path], option("--out", metavar="DIR", help="Also write eval.json and a picture per task here (confusion matrix, per-label scores, or predicted vs true).")] = None,
    ignore_unknown: Annotated[bool, option("--ignore-unknown", help="Leave out rows whose label the run never saw, instead of stopping.")] = False,
    text_column: Annotated[Optional[str], option("--text-column", metavar="TEXT", help="Column with the text.", default="the run's")] = None,
    delimiter: Annotated[Optional[str], option("--delimiter", metavar="CHAR", help="Field delimiter of delimited text, one character (tab: \\t or tab).", default="by extension; else sniffed")] = None,
    batch_size: Annotated[Optional[int], whole_number_option("--batch-size", help="Sentences per batch, as predict and validation.", default="64 on a CPU, 256 on a GPU", low=1)] = None,
    device: Annotated[str, device_option()] = "auto",
    precision: Annotated[str, precision_option("run: as the run trained, so scores match its validation; int8: CPU only, quantized backbone.")] = "run",
) -> None:
    """Score RUN's best checkpoint on labelled DATA: each task's loss and its type's metrics (classes:
    accuracy, macro-F1, per-class scores, confusion matrix; multi-label: F1s, subset accuracy, per-label
    scores and thresholds; regression: RMSE, MAE, Spearman, R²)."""
    from mtlcli.inference.loaded_run import load_run
    from mtlcli.reports import eval_files
    from mtlcli.scoring import scores as scoring

    loaded = load_run(run, device, precision)
    report, points = scoring.score(loaded, data, text_column, ignore_unknown, batch_size, delimiter)
    for task, labels in report.get("ignored", {}).items():
        rows = sum(labels.values())
        listed = ", ".join(f"'{label}' ({n})" for label, n in labels.items())
        print_note(f"ignored {rows} row(s) of task '{task}' with labels the run never saw: {listed}")
    if out:
        written = eval_files.write_report(report, out, points)
        print_note(f"wrote {', '.join(str(p) for p in written)}")
    if as_json:
        typer.echo(eval_files.dumps(report))
        return
    console.print(f"{report['n']} rows of {data} scored with {loaded.checkpoint.relative_to(loaded.run.parent)}; "
                  f"combined loss {_fmt(report['loss'])}", soft_wrap=True, markup=False, highlight=False)
    for task, r in report["tasks"].items():
        console.print("\n" + headline(task, r), soft_wrap=True, highlight=False)
        if r.get("warning"):
            print_warning(r["warning"])
        for shown in details(r, console):
            console.print(shown)


def headline(task: str, r: dict[str, Any]) -> str:
    """``topic: accuracy 0.8816, macro-F1 0.8816, loss 0.7014 (classification, n=2981)``: the task
    type's metrics by their names, then the loss."""
    from mtlcli import vocabulary as vocab
    from mtlcli.tasks.columns import task_type

    scores = [f"{m.label} {_fmt(r.get(m.name))}" for m in task_type(r["type"]).metrics if m != vocab.LOSS]
    scores.append(f"loss {_fmt(r['loss'])}")
    return f"[bold]{escape(task)}[/]: {', '.join(scores)} ({escape(r['type'])}, n={r['n']})"


def details(r: dict[str, Any], console: Console) -> list[Table]:
    """The tables a task's type has beyond its headline: per class and the confusion matrix, or per
    label with its threshold; none for a single value."""
    if "confusion_matrix" in r:
        return [scores_table(r), confusion_table(r, console)]
    if "per_label" in r:
        return [labels_table(r)]
    return []


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def scores_table(r: dict[str, Any]) -> Table:
    """Precision, recall, F1 and support per class (or per label of a multi-label task, with its threshold)."""
    thresholds = r.get("thresholds")
    table = Table()
    table.add_column("label")
    for col in ("precision", "recall", "F1", "support") + (("threshold",) if thresholds else ()):
        table.add_column(col, justify="right")
    for i, (label, c) in enumerate((r.get("per_class") or r["per_label"]).items()):
        table.add_row(escape(label), _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), str(c["support"]),
                      *([_fmt(thresholds[i], 3)] if thresholds else []))
    return table


def labels_table(r: dict[str, Any]) -> Table:
    """A multi-label task's labels: each one's scores at its threshold (a label is predicted where
    its probability reaches it)."""
    table = Table()
    table.add_column("label")
    for col in ("precision", "recall", "F1", "support", "threshold"):
        table.add_column(col, justify="right")
    thresholds = dict(zip(r.get("labels", []), r.get("thresholds", [])))
    for label, c in r["per_label"].items():
        table.add_row(escape(label), _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), str(c["support"]),
                      _fmt(thresholds.get(label), 3))
    return table


def confusion_table(r: dict[str, Any], console: Console) -> Table:
    """Columns headed by the full labels where they fit the terminal; otherwise by number, with each row's
    label in full after its number: cut labels would turn "Can't Tell" and "Cancelled Flight" both into "Can…"."""
    full = _confusion(r, [escape(label) for label in r["labels"]], [escape(label) for label in r["labels"]])
    if Measurement.get(console, console.options.update_width(10_000), full).maximum <= console.width:
        return full
    numbers = [str(n) for n in range(1, len(r["labels"]) + 1)]
    return _confusion(r, numbers, [f"{n} {escape(label)}" for n, label in zip(numbers, r["labels"])])


def _confusion(r: dict[str, Any], heads: list[str], rows: list[str]) -> Table:
    table = Table(title="confusion matrix", title_justify="left")
    table.add_column("true \\ predicted", overflow="fold")
    for head in heads:
        table.add_column(head, justify="right", no_wrap=True)
    for i, (label, counts) in enumerate(zip(rows, r["confusion_matrix"])):
        table.add_row(label, *(f"[bold]{n}[/]" if i == j else str(n) for j, n in enumerate(counts)))
    return table
