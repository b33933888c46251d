"""Texts in, predictions out, in bounded chunks: a file of any length runs in constant memory.

Input: texts given directly, a CSV with the run's text column, or plain text (one per line), from a
file or standard input. Output: JSONL or CSV written chunk by chunk, and optionally the sentence
vectors as a ``.npy`` file assembled at the end from rows appended to a temporary file.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

from mtlcli.atomic import replacing, temporary_name
from mtlcli.errors import UserError

CHUNK = 4096  # texts read, predicted and written at a time
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Source:
    """Where texts come from. ``columns`` is the CSV header, or None for plain text."""

    name: str
    columns: list[str] | None
    records: Iterator[tuple[list[str] | None, str]]  # (the CSV row or None, the text)
    size: int | None = None  # bytes, when known, for a progress bar
    position: Callable[[], int] = lambda: 0  # bytes read so far


@dataclass
class Chunk:
    texts: list[str]
    rows: list[list[str]] | None  # the CSV rows the texts came from
    probs: dict[str, np.ndarray]  # task -> [n, labels]
    embeddings: np.ndarray | None


# ---- reading ----------------------------------------------------------------------------------


def from_texts(texts: list[str]) -> Source:
    return Source("arguments", None, ((None, t) for t in texts))


def open_input(path: str, text_column: str) -> Source:
    """A CSV when the file ends in .csv or its first line is a header naming ``text_column``;
    otherwise one text per line (blank lines skipped). ``-`` reads standard input."""
    if path == "-":
        raw = getattr(sys.stdin, "buffer", None)
        stream = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") if raw is not None else sys.stdin
        name, size, position = "<stdin>", None, lambda: 0
        close = stream.detach if raw is not None else (lambda: None)  # standard input stays open
    else:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"{path}: {'is a folder, not a file' if file.is_dir() else 'file not found'}")
        raw = open(file, "rb")  # noqa: SIM115  (closed when the records run out)
        stream = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        name, size = path, file.stat().st_size
        position = lambda: size if raw.closed else raw.tell()  # noqa: E731  (closed: read to the end)
        close = stream.close
    lines = _checked_lines(stream, name, close)
    first = next(lines, None)
    if first is None:
        raise UserError(f"{name}: no texts (the input is empty)")
    try:
        header = [h.strip() for h in next(csv.reader([first]), [])]
    except csv.Error:
        header = []
    if text_column in header or name.lower().endswith(".csv"):
        if text_column not in header:
            lines.close()  # runs its ``finally``: the file is closed
            raise UserError(f"{name}:1: no text column '{text_column}' in the header (columns: {', '.join(header)}); "
                            "name it with --text-column")
        return Source(name, header, _csv_records(first, lines, header, header.index(text_column), name), size, position)
    return Source(name, None, _text_records(first, lines), size, position)


def _checked_lines(stream: IO[str], name: str, close: Callable[[], Any]) -> Iterator[str]:
    line = 0
    try:
        for text in stream:
            line += 1
            yield text
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}:{line + 1}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save it as UTF-8") from None
    finally:
        close()


def _text_records(first: str, lines: Iterator[str]) -> Iterator[tuple[None, str]]:
    for line in _chain(first, lines):
        text = line.strip()
        if text:
            yield None, text


def _csv_records(first: str, lines: Iterator[str], header: list[str], at: int,
                 name: str) -> Iterator[tuple[list[str], str]]:
    reader = csv.reader(_chain(first, lines), strict=True)
    start = 1
    try:
        next(reader)  # the header
        start = reader.line_num + 1
        for row in reader:
            if row:
                if len(row) != len(header):
                    raise UserError(f"{name}:{start}: expected {len(header)} fields as in the header, found {len(row)}")
                text = row[at].strip()
                if not text:
                    raise UserError(f"{name}:{start}: empty '{header[at]}'")
                yield row, text
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{name}:{start}: not a valid CSV row ({exc})") from None


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


def predict_chunks(predictor, source: Source, batch_size: int | None = None, with_embeddings: bool = False,
                   chunk_size: int | None = None, on_batch: Callable[[int, int], None] | None = None) -> Iterator[Chunk]:
    """Predictions chunk by chunk; ``on_batch(done, total)`` reports progress within each chunk.

    ``predictor``: anything with ``encode(texts)`` and ``probs_encoded(data, batch_size,
    with_embeddings, on_batch)``: a loaded run, an ONNX export, or a ``mtlcli.Model``. The next
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


def top_labels(probs: np.ndarray, labels: list[str], k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` most likely labels per row, most likely first: the first is the argmax."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(labels[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


def records(chunk: Chunk, label_sets: dict[str, list[str]], top_k: int) -> Iterator[dict[str, Any]]:
    """One dict per text: ``{"text": ..., task: {"label", "score", "top": [[label, p], ...]}}``."""
    tops = {t: top_labels(chunk.probs[t], labels, top_k) for t, labels in label_sets.items()}
    for i, text in enumerate(chunk.texts):
        record: dict[str, Any] = {"text": text}
        for t in label_sets:
            top = tops[t][i]
            record[t] = {"label": top[0][0], "score": round(top[0][1], 6),
                         "top": [[label, round(p, 6)] for label, p in top]}
        yield record


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


def write_jsonl(out: IO[str], chunk: Chunk, label_sets: dict[str, list[str]], top_k: int) -> None:
    out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(chunk, label_sets, top_k)))


class CsvWriter:
    """The input's columns (or ``text``), then ``T`` and ``T_score`` per task (``T_top`` with top-k > 1).

    When the input already has a column ``T`` (labelled data), the prediction goes in
    ``T_predicted`` so both can be compared.
    """

    def __init__(self, out: IO[str], columns: list[str] | None, label_sets: dict[str, list[str]], top_k: int):
        self.writer = csv.writer(out)
        self.label_sets = label_sets
        self.top_k = top_k
        self.columns = columns
        taken = set(columns or ["text"])
        header = list(columns or ["text"])
        for t in label_sets:
            name = t if t not in taken else f"{t}_predicted"
            header += [name, f"{name}_score"] + ([f"{name}_top"] if top_k > 1 else [])
        self.writer.writerow(header)

    def write(self, chunk: Chunk) -> None:
        rows = chunk.rows if chunk.rows is not None else [[t] for t in chunk.texts]
        tops = {t: top_labels(chunk.probs[t], labels, self.top_k) for t, labels in self.label_sets.items()}
        for i, row in enumerate(rows):
            cells = list(row)
            for t in self.label_sets:
                top = tops[t][i]
                cells += [top[0][0], f"{top[0][1]:.4f}"]
                if self.top_k > 1:
                    cells.append(" ".join(f"{label}:{p:.4f}" for label, p in top))
            self.writer.writerow(cells)


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
