"""mtl predict: label texts with a trained run, streaming from arguments, a file or standard input."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtlcli.cli.common import (argument, choice_option, console, device_option, err_console, handles_errors,
                               number_option, option, precision_option, print_note, print_warning, whole_number_option)
from mtlcli.errors import RunFailed, UserError

FORMATS = ("table", "csv", "jsonl")


@handles_errors
def predict(
    run: Annotated[Path, argument("RUN", "Run folder, e.g. runs/latest, or a folder written by mtl export.")],
    texts: Annotated[Optional[list[str]], argument("TEXT...", "Texts to label (or use --input).")] = None,
    input_: Annotated[Optional[str], option("--input", "-i", metavar="FILE", help="A table with the run's text column (.csv, .tsv, .jsonl, .parquet, ...), or one text per line; - for standard input.")] = None,
    fmt: Annotated[Optional[str], choice_option("--format", "-f", choices=FORMATS, help="How to write the predictions.", default="table on a terminal; csv for --output *.csv; else jsonl")] = None,
    output: Annotated[Optional[Path], option("--output", "-o", metavar="FILE", help="Write here instead of standard output.")] = None,
    top_k: Annotated[int, whole_number_option("--top-k", help="Show the K most likely labels per task.", default="1", low=1)] = 1,
    min_score: Annotated[Optional[float], number_option("--min-score", help="A class task's label whose probability is below this is left out (empty in CSV, null in JSON Lines); its score and top-k still show.", default="none: always the most likely label", low=0, high=1)] = None,
    embeddings: Annotated[Optional[Path], option("--embeddings", metavar="FILE.npy", help="Also write the pooled sentence vectors to this .npy file, one row per text.")] = None,
    text_column: Annotated[Optional[str], option("--text-column", metavar="TEXT", help="Column with the text in a table input.", default="the run's")] = None,
    delimiter: Annotated[Optional[str], option("--delimiter", metavar="CHAR", help="Field delimiter of delimited text, one character (tab: \\t or tab); makes a .txt or standard input a table.", default="by extension; else sniffed")] = None,
    batch_size: Annotated[Optional[int], whole_number_option("--batch-size", help="Sentences per forward pass, as eval and validation.", default="64 on a CPU, 256 on a GPU", low=1)] = None,
    device: Annotated[str, device_option()] = "auto",
    precision: Annotated[str, precision_option("run: as the run trained, as mtl eval does; int8: CPU only, quantized backbone; an ONNX export runs as exported.")] = "run",
) -> None:
    """Predict each task for TEXT arguments or every line of --input: a label and its probability, the
    labels of a multi-label task, or the value of a regression task."""
    from mtlcli.inference import predict_io
    from mtlcli.api import Model

    fmt = _pick_format(fmt, output)
    if texts and input_:
        raise UserError("give TEXT arguments or --input, not both")
    if not texts and not input_:
        raise UserError("no texts: give TEXT arguments, or --input FILE (- for standard input)")
    for i, text in enumerate(texts or [], 1):  # as an empty cell of --input is refused: nothing to label
        if not text.strip():
            raise UserError(f"TEXT {i} is empty{' (only whitespace)' if text else ''}; every text needs words")
    model = Model.load(run, device, precision)
    column = text_column or model.text_column
    source = predict_io.open_input(input_, column, delimiter) if input_ else predict_io.from_texts(list(texts))
    if source.warning:
        print_warning(source.warning)
    tasks = model.tasks
    k = min(top_k, max(1, *(len(t.labels) for t in tasks.values())))

    npy = predict_io.NpyWriter(embeddings) if embeddings else None
    total = 0
    try:
        with predict_io.open_output(str(output) if output else None) as out, _progress(source, bool(input_)) as progress:
            write = _writer(fmt, out, source.columns, tasks, k, min_score)
            for chunk in predict_io.predict_chunks(model, source, batch_size, npy is not None, on_batch=progress.batch):
                write(chunk)
                if npy:
                    npy.append(chunk.embeddings)
                total += len(chunk.texts)
                progress.chunk_written()
            if total == 0:
                raise UserError(f"{source.name}: no texts to label")
        if npy:
            npy.finish()
    except (RuntimeError, MemoryError) as exc:
        from mtlcli.runtime.hardware import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        raise RunFailed(f"out of memory during prediction: lower --batch-size (now {batch_size or model.batch_size}); "
                        f"texts are cut at {model.max_length} tokens, the run's --max-length") from None
    finally:
        if npy:
            npy.discard()
    if output or embeddings:
        wrote = [str(p) for p in (output, embeddings) if p]
        print_note(f"{total} texts labelled; wrote {', '.join(wrote)}")


def _pick_format(fmt: str | None, output: Path | None) -> str:
    if fmt is not None:
        return fmt
    if output is not None:
        return "csv" if output.suffix.lower() == ".csv" else "jsonl"
    return "table" if console.is_terminal and sys.stdout.isatty() else "jsonl"


def _writer(fmt: str, out, columns, tasks, k, min_score: float | None = None) -> Callable:
    from mtlcli.inference import predict_io

    if fmt == "jsonl":
        return lambda chunk: (predict_io.write_jsonl(out, chunk, tasks, k, min_score), out.flush())
    if fmt == "csv":
        writer = predict_io.CsvWriter(out, columns, tasks, k, min_score)
        return writer.write
    target = console if out is sys.stdout else Console(file=out, width=120, force_terminal=False)
    return lambda chunk: target.print(prediction_table(predict_io.records(chunk, tasks, k, min_score), tasks))


def prediction_table(records: Iterator[dict], tasks: dict) -> Table:
    table = Table(show_lines=False)
    table.add_column("text", overflow="fold", ratio=3)
    for task in tasks:
        table.add_column(escape(task), ratio=1)
    for r in records:
        table.add_row(escape(r["text"]), *(_cell(r[task]) for task in tasks))
    return table


def _cell(p: dict) -> str:
    """One task's prediction in a table cell, a line per label: the label (a class task) or labels
    (a multi-label task) chosen in bold, then the rest of the top-k; or the value (a regression task)."""
    if "value" in p:
        return f"[bold]{p['value']:.4f}[/]"
    chosen = list(zip(p["labels"], p["scores"])) if "labels" in p else \
        [(p["label"], p["score"])] if p["label"] is not None else []  # below --min-score: no label
    rest = [(label, s) for label, s in p["top"] if label not in {c for c, _ in chosen}]
    lines = [f"[bold]{escape(label)}[/] {s:.3f}" for label, s in chosen] or ["[dim](none)[/]"]
    return "\n".join(lines + [f"{escape(label)} {s:.3f}" for label, s in rest])


class _Progress:
    """Texts done, and the share of the input read so far (bytes), moved along batch by batch."""

    def __init__(self, source, bar=None):
        self.source, self.bar, self.task = source, bar, None
        self.texts_before = self.in_chunk = 0  # texts of the chunks written, and of this one so far
        self.bytes_before = 0  # bytes of the input the written chunks came from
        if bar is not None:
            self.task = bar.add_task("predict", total=source.size, texts=0)

    def batch(self, done: int, total: int) -> None:
        self.in_chunk = done
        if self.bar is None:
            return
        fields = {"texts": self.texts_before + done}
        if self.source.size:  # this chunk's bytes, spread over its batches
            fields["completed"] = self.bytes_before + (self.source.position() - self.bytes_before) * done / total
        self.bar.update(self.task, **fields)

    def chunk_written(self) -> None:
        self.texts_before += self.in_chunk
        self.in_chunk = 0
        self.bytes_before = self.source.position()


@contextlib.contextmanager
def _progress(source, from_input: bool) -> Iterator[_Progress]:
    """A Rich progress bar on standard error when it is a terminal and texts come from --input."""
    if not (from_input and err_console.is_terminal):
        yield _Progress(source)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("labelling"), BarColumn(), TextColumn("{task.fields[texts]} texts")]
    columns += [DownloadColumn(), TimeRemainingColumn()] if source.size else [TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=True) as bar:
        yield _Progress(source, bar)
