"""Texts in, predictions out, in bounded chunks: a file of any length runs in constant memory.

Input: texts given directly, a table with the run's text column (CSV, TSV, JSON Lines, Parquet,
read by ``mtlcli.data.rows``), or plain text (one per line), from a file or standard input. Output: JSONL
or CSV written chunk by chunk, and optionally the sentence vectors as a ``.npy`` file assembled at
the end from rows appended to a temporary file.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

from mtlcli.data import rows
from mtlcli.atomic import replacing, temporary_name
from mtlcli.tasks.base import Task
from mtlcli.tasks.multilabel import NONE
from mtlcli.tasks.columns import kind
from mtlcli.errors import UserError, shown
from mtlcli.inference.predictor import Predictor

CHUNK = 4096  # texts read, predicted and written at a time
MAYBE_PLAIN = ("", ".txt")  # extensions whose file may be a table or plain text; so may standard input
_HEADER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,39}")


@dataclass
class Source:
    """Where texts come from. ``columns`` is the table's header, or None for plain text."""

    name: str
    columns: list[str] | None
    records: Iterator[tuple[list[str] | None, str]]  # (the table row or None, the text)
    size: int | None = None  # bytes, when known, for a progress bar
    position: Callable[[], int] = lambda: 0  # bytes read so far
    warning: str | None = None  # for the user: how the input was understood, when it may surprise


@dataclass
class Chunk:
    texts: list[str]
    rows: list[list[str]] | None  # the table rows the texts came from
    probs: dict[str, np.ndarray]  # task -> its outputs: probabilities [n, labels], or values [n]
    embeddings: np.ndarray | None


# ---- reading ----------------------------------------------------------------------------------


def empty_text(i: int, text: str) -> str | None:
    """Why ``texts[i]`` cannot be labelled (empty or only whitespace, as an empty text cell is refused
    in training), or None: the API and the server refuse such texts alike."""
    return None if text.strip() else f"texts[{i}] is empty{' (only whitespace)' if text else ''}; every text needs words"


def from_texts(texts: list[str]) -> Source:
    return Source("arguments", None, ((None, t) for t in texts))


def open_input(path: str, text_column: str, delimiter: str | None = None) -> Source:
    """A table or plain text, by the rule in docs/predict.md; ``-`` reads standard input.

    .csv, .tsv, .tab, .jsonl, .ndjson, .parquet and any other extension but .txt: a table. .txt, no
    extension and standard input: a table when the first line names ``text_column`` (or with a
    ``delimiter``), else one text per line (blank lines skipped).
    """
    delimiter = rows.delimiter_char(delimiter)
    if path != "-" and Path(path).suffix.lower() not in MAYBE_PLAIN:
        return _table(rows.open_rows(path, text_column, delimiter))
    lines = rows.Lines(path)
    first = next(lines, None)
    if first is None:
        raise UserError(f"{lines.name}: no texts (the input is empty)")
    if delimiter or text_column in _fields(first, rows.sniff(first)):
        return _table(rows.delimited_rows(lines, text_column, delimiter, first=[first]))
    source = Source(lines.name, None, _text_records(first, lines), lines.size, lines.position)
    if _looks_like_header(first):
        source.warning = (f"{lines.name}: the first line looks like a header ({shown(first.strip(), 80)}) but names "
                          f"no column '{shown(text_column)}', so the input is read as plain text, one text per line; "
                          "to read it as a table, name its text column with --text-column (and its delimiter with "
                          "--delimiter)")
    return source


def _table(table: rows.Rows) -> Source:
    records = ((cells, cells[table.text_at].strip()) for _, cells in table)
    return Source(table.name, table.header, records, table.size, table.position)


def _fields(line: str, delimiter: str) -> list[str]:
    try:
        return [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter), [])]
    except csv.Error:
        return []


def _looks_like_header(line: str) -> bool:
    """Tab-separated, or several comma, semicolon or pipe fields that are all short names
    (``review,stars``; prose such as ``Well, no`` has a space after its comma)."""
    line = line.strip()
    if "\t" in line:
        return True
    names = line.split(rows.sniff(line))
    return len(names) >= 2 and all(_HEADER_NAME.fullmatch(name.strip('"')) for name in names)


def _text_records(first: str, lines: rows.Lines) -> Iterator[tuple[None, str]]:
    for line in _chain(first, lines):
        text = line.strip()
        if text:
            yield None, text


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def chunks(source: Source, size: int) -> Iterator[tuple[list[list[str]] | None, list[str]]]:
    rows: list[list[str]] = []
    texts: list[str] = []
    for row, text in source.records:
        texts.append(text)
        if row is not None:
            rows.append(row)
        if len(texts) == size:
            yield (rows if source.columns is not None else None), texts
            rows, texts = [], []
    if texts:
        yield (rows if source.columns is not None else None), texts


def predict_chunks(predictor: Predictor, source: Source, batch_size: int | None = None, with_embeddings: bool = False,
                   chunk_size: int | None = None, on_batch: Callable[[int, int], None] | None = None) -> Iterator[Chunk]:
    """Predictions chunk by chunk; ``on_batch(done, total)`` reports progress within each chunk.

    ``predictor``: a ``mtlcli.inference.predictor.Predictor`` (a loaded run, an ONNX export, or a
    ``mtlcli.Model``); only its ``encode`` and ``probs_encoded`` are used. The next
    chunk is read and tokenized in a background thread while this one runs through the model (the
    fast tokenizer does its work outside the GIL), so the model seldom waits for the file or the
    tokenizer. A bad row is reported when its chunk is reached, as before.
    """
    from concurrent.futures import ThreadPoolExecutor

    parts = chunks(source, chunk_size or CHUNK)

    def read_next():
        for rows, texts in parts:
            return rows, texts, predictor.encode(texts)
        return None

    with ThreadPoolExecutor(1, thread_name_prefix="mtl-read") as pool:
        upcoming = pool.submit(read_next)
        while (ready := upcoming.result()) is not None:
            upcoming = pool.submit(read_next)
            rows, texts, data = ready
            out = predictor.probs_encoded(data, batch_size, with_embeddings, on_batch)
            embeddings = out.pop("_embeddings", None)
            yield Chunk(texts, rows, out, embeddings)


# ---- what a prediction is ---------------------------------------------------------------------


def decide(chunk: Chunk, tasks: dict[str, Task], top_k: int, min_score: float | None = None) -> dict[str, list[dict]]:
    """Each task's prediction per text. With ``min_score``, a class task's label whose probability is
    below it becomes None (no label); its score and top-k stay, so the doubt shows."""
    decided = {t: kind(task).decide(task, chunk.probs[t], top_k) for t, task in tasks.items()}
    if min_score is not None:
        for predictions in decided.values():
            for p in predictions:
                if "label" in p and p["score"] < min_score:
                    p["label"] = None
    return decided


def records(chunk: Chunk, tasks: dict[str, Task], top_k: int,
            min_score: float | None = None) -> Iterator[dict[str, Any]]:
    """One dict per text: ``{"text": ..., task: its type's prediction}``, numbers to 6 decimals:
    classification ``{"label", "score", "top": [[label, p], ...]}`` (label None below ``min_score``),
    multi-label ``{"labels", "scores", "top"}``, regression ``{"value"}`` (docs/predict.md)."""
    decided = decide(chunk, tasks, top_k, min_score)
    for i, text in enumerate(chunk.texts):
        yield {"text": text, **{t: _rounded(decided[t][i]) for t in tasks}}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


# ---- writing ----------------------------------------------------------------------------------


@contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    """Standard output, or a file that appears under its name only once complete."""
    if path is None or path == "-":
        yield sys.stdout
        return
    with ExitStack() as stack:
        try:
            f = stack.enter_context(replacing(path, "w", durable=False))
        except OSError as exc:
            raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
        yield f


def write_jsonl(out: IO[str], chunk: Chunk, tasks: dict[str, Task], top_k: int,
                min_score: float | None = None) -> None:
    out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(chunk, tasks, top_k, min_score)))


class CsvWriter:
    """The input's columns (or ``text``), then per task: ``T`` and ``T_score`` (a class task: the label
    and its probability, the label empty below ``min_score``; a multi-label task: the labels at or
    above their thresholds and their probabilities, each joined by the run's separator, or ``[]``
    and nothing when none is), ``T_top`` with top-k > 1 (a JSON array of [label, score] pairs); a
    regression task: ``T``, the value.

    When the input already has a column ``T`` (labelled data), the prediction goes in
    ``T_predicted`` so both can be compared.
    """

    def __init__(self, out: IO[str], columns: list[str] | None, tasks: dict[str, Task], top_k: int,
                 min_score: float | None = None):
        self.writer = csv.writer(out)
        self.tasks = tasks
        self.top_k = top_k
        self.min_score = min_score
        self.columns = columns
        taken = set(columns or ["text"])
        header = list(columns or ["text"])
        for t, task in tasks.items():
            name = t if t not in taken else f"{t}_predicted"
            header += [name] if not task.labels else [name, f"{name}_score"] + ([f"{name}_top"] if top_k > 1 else [])
        self.writer.writerow(header)

    def write(self, chunk: Chunk) -> None:
        rows = chunk.rows if chunk.rows is not None else [[t] for t in chunk.texts]
        decided = decide(chunk, self.tasks, self.top_k, self.min_score)
        for i, row in enumerate(rows):
            cells = list(row)
            for t, task in self.tasks.items():
                cells += self._cells(task, decided[t][i])
            self.writer.writerow(cells)

    def _cells(self, task: Task, p: dict[str, Any]) -> list[str]:
        if "value" in p:
            return [str(_rounded(float(p["value"])))]  # as JSON Lines has it, to 6 decimals
        if "labels" in p:
            joined = task.params.get("separator", "|")
            cells = [joined.join(p["labels"]) or NONE, joined.join(f"{s:.4f}" for s in p["scores"])]
        else:
            cells = [p["label"] if p["label"] is not None else "", f"{p['score']:.4f}"]
        if self.top_k > 1:  # JSON: a label may hold spaces, colons or commas
            cells.append(json.dumps([[label, round(float(s), 4)] for label, s in p["top"]], ensure_ascii=False))
        return cells


class NpyWriter:
    """Sentence vectors appended chunk by chunk, then written as one ``.npy`` of shape [n, dim]."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.suffix != ".npy":
            raise UserError(f"--embeddings {path}: the file name must end in .npy")
        self.rows_file = temporary_name(self.path.with_name(self.path.name + ".rows"))
        try:
            self.rows = open(self.rows_file, "wb")
        except OSError as exc:
            raise UserError(f"--embeddings {path}: cannot write ({exc.strerror or exc})") from None
        self.n = 0
        self.dim: int | None = None

    def append(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        self.dim = vectors.shape[1]
        self.n += vectors.shape[0]
        self.rows.write(vectors.tobytes())

    def finish(self) -> None:
        self.rows.close()
        try:
            with replacing(self.path, durable=False) as f, open(self.rows_file, "rb") as rows:
                header = {"descr": "<f4", "fortran_order": False, "shape": (self.n, self.dim or 0)}
                np.lib.format.write_array_header_1_0(f, header)
                shutil.copyfileobj(rows, f, 1 << 20)
        finally:
            self.discard()

    def discard(self) -> None:
        self.rows.close()
        if self.rows_file.exists():
            self.rows_file.unlink()
