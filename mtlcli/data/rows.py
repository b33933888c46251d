"""One reader for every table of texts: CSV, TSV and other delimited text, JSON Lines and Parquet.

Train, eval and predict all read through ``open_rows`` (predict's plain text through ``Lines``), so
a file meets the same checks and the same messages whichever command reads it. Rows stream: the
whole file is never in memory at once. Every problem is one ``UserError`` line naming the file, the
line (Parquet: the row) and what is wrong.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mtlcli.errors import UserError, json_problem, shown

# Reviews can be long; Python's default 128 KiB field limit is a CSV-module default, not a rule of ours.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

DELIMITED = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
SNIFFED = ("\t", ",", ";", "|")  # on a tie, the earlier wins
JSON_LINES = (".jsonl", ".ndjson")
PARQUET = ".parquet"
SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".ods")
PARQUET_BATCH = 8192  # rows converted to Python at a time

# Bytes that are not UTF-8 are decoded as lone surrogates (surrogateescape), so the line they sit
# on is known exactly: a strict decoder fails a whole read-ahead chunk, many lines at once.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def delimiter_char(value: str | None) -> str | None:
    """A --delimiter value as the one character it names; ``tab`` and ``\\t`` name a tab."""
    if value is None:
        return None
    if value in ("tab", "\\t", "\t"):
        return "\t"
    if len(value) != 1 or value in '"\r\n\x00':
        raise UserError(f"delimiter '{shown(value)}': use one character, such as ; or | (tab or \\t for a tab)")
    return value


def sniff(line: str) -> str:
    """The delimiter a header line uses most among tab, comma, semicolon and pipe; comma when none."""
    best = max(SNIFFED, key=line.count)
    return best if line.count(best) else ","


# ---- text, line by line -----------------------------------------------------------------------


def check_file(path: str | Path) -> Path:
    """The path of an existing readable file, or the one line that says why not."""
    file = Path(path)
    try:
        if file.is_dir():
            raise UserError(f"{path}: is a folder, not a file")
        if not file.is_file():
            raise UserError(f"{path}: file not found")
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UserError(f"{shown(str(path), 300)}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return file


class Lines:
    """The lines of a text file (``-``: standard input), each checked for NUL bytes and UTF-8.

    Iterating yields each line with its line ending; ``number`` is the line last read. The file is
    closed when the lines run out, on an error, or on ``close()``; standard input stays open.
    """

    def __init__(self, path: str):
        if path == "-":
            raw = getattr(sys.stdin, "buffer", None)
            self.name, self.size, self._raw = "<stdin>", None, None
            stream = _decoded(raw) if raw is not None else sys.stdin
            self._release = stream.detach if raw is not None else (lambda: None)
        else:
            file = check_file(path)
            self.name, self.size = str(path), file.stat().st_size
            try:
                self._raw = open(file, "rb")  # noqa: SIM115  (closed when the lines run out)
            except OSError as exc:
                raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
            stream = _decoded(self._raw)
            self._release = stream.close
        self.number, self._released = 0, False
        self._lines = self._checked(stream)

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def __next__(self) -> str:
        return next(self._lines)

    def position(self) -> int:
        """Bytes read so far, for a progress bar."""
        if self._raw is None:
            return 0
        return self.size if self._raw.closed else self._raw.tell()

    def close(self) -> None:
        self._lines.close()
        self._release_once()  # a generator that never started skips its ``finally``

    def _release_once(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    def _checked(self, stream: io.TextIOBase) -> Iterator[str]:
        try:
            for line in stream:
                self.number += 1
                if "\x00" in line:
                    raise UserError(f"{self.name}:{self.number}: not a text file (contains NUL bytes)")
                if not line.isascii() and (bad := _NOT_UTF8.search(line)):
                    byte = ord(bad.group()) - 0xDC00
                    raise UserError(f"{self.name}:{self.number}: not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8")
                yield line
        finally:
            self._release_once()


def _decoded(raw: io.BufferedIOBase) -> io.TextIOWrapper:
    # newline="": only \n, \r and \r\n end a line, as in RFC 4180; str.splitlines() would also cut
    # at form feeds, U+2028 and other characters that are ordinary text inside a field.
    # utf-8-sig: a BOM from Excel is fine.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


# ---- rows -------------------------------------------------------------------------------------


@dataclass
class Rows:
    """A table's header and its rows, each with the number messages name it by.

    Every row has one cell per column and a text that is not blank; a row that breaks a rule stops
    the iteration with a ``UserError`` when it is reached.
    """

    name: str
    header: list[str]
    header_where: str  # "data.csv:1", or the file's name where the columns have no line of their own
    text_at: int | None  # the text column's index in the header and in every row (None: not asked for)
    records: Iterator[tuple[int, list[str]]]  # (line number, or Parquet row number; the cells)
    numbered: str = "line"  # what the numbers count: "line", or "row" (Parquet)
    size: int | None = None  # bytes, when known, for a progress bar
    position: Callable[[], int] = lambda: 0  # bytes read so far
    close_file: Callable[[], None] = lambda: None

    def where(self, number: int) -> str:
        return location(self.name, number, self.numbered)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return self.records

    def close(self) -> None:
        # closing a generator that never started skips its ``finally``: close the file as well
        self.records.close()
        self.close_file()


def open_rows(path: str | Path, text_column: str | None, delimiter: str | None = None) -> Rows:
    """The rows of a table file; the format follows the extension (see docs/train.md).

    ``text_column`` None: any header will do and no cell is required (to look at the columns)."""
    name, delimiter = str(path), delimiter_char(delimiter)
    file = check_file(path)
    suffix = file.suffix.lower()
    if suffix in SPREADSHEETS:
        raise UserError(f"{name}: a spreadsheet ({suffix}) cannot be read; export it as CSV (UTF-8) and give that file")
    if file.stat().st_size == 0:
        raise UserError(f"{name}: the file is empty")
    if suffix in JSON_LINES:
        return json_rows(name, text_column)
    if suffix == PARQUET:
        return parquet_rows(name, text_column)
    return delimited_rows(Lines(name), text_column, delimiter or DELIMITED.get(suffix))


def location(name: str, number: int, numbered: str = "line") -> str:
    """Where a message points: ``data.csv:7`` (line 7), or ``data.parquet: row 7``."""
    return f"{name}:{number}" if numbered == "line" else f"{name}: {numbered} {number}"


def check_header(header: list[str], text_column: str | None, where: str, hint: str = "") -> int | None:
    """The text column's index, after checking that every column has one distinct name."""
    seen: set[str] = set()
    for i, name in enumerate(header):
        if not name:
            raise UserError(f"{where}: column {i + 1} of the header has no name")
        if name in seen:
            raise UserError(f"{where}: column '{shown(name)}' appears twice in the header")
        seen.add(name)
    if text_column is None:
        return None
    if text_column not in seen:
        raise UserError(f"{where}: no text column '{shown(text_column)}' (columns: {listed(header)}); "
                        f"name it with --text-column{hint}")
    return header.index(text_column)


def listed(names: list[str], most: int = 20) -> str:
    shown_names = ", ".join(shown(n, 40) for n in names[:most])
    return shown_names + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _checked_text(cells: list[str], at: int | None, text_column: str | None, where: str) -> list[str]:
    if at is not None and not cells[at].strip():
        raise UserError(f"{where}: empty '{shown(text_column)}'")
    return cells


# ---- delimited text ---------------------------------------------------------------------------


def delimited_rows(lines: Lines, text_column: str | None, delimiter: str | None = None,
                   first: Iterable[str] = ()) -> Rows:
    """Rows of delimited text, quoted as CSV is; ``delimiter`` None: sniffed from the header line.

    ``first``: lines already taken from ``lines`` (line 1 onwards), read again before the rest.
    """
    try:
        taken = list(first)
        if not any(line.strip() for line in taken):
            for line in lines:
                taken.append(line)
                if line.strip():
                    break
        header_line = next((line for line in taken if line.strip()), "")
        if not header_line:
            raise UserError(f"{lines.name}: the file is empty")
        delimiter = delimiter or sniff(header_line)
        reader = csv.reader(itertools.chain(taken, lines), delimiter=delimiter, strict=True)
        kind = {",": "CSV", "\t": "TSV"}.get(delimiter, "delimited")
        header, at_line = _header_row(reader, lines.name, kind)
        where_header = f"{lines.name}:{at_line}"
        text_at = check_header(header, text_column, where_header, ", and make sure the file starts with a header row")
    except BaseException:
        lines.close()
        raise
    records = _delimited_records(reader, lines, len(header), text_at, text_column, kind)
    return Rows(lines.name, header, where_header, text_at, records, "line", lines.size, lines.position, lines.close)


def _header_row(reader, name: str, kind: str) -> tuple[list[str], int]:
    start = 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                return [cell.strip() for cell in row], start
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{name}:{start}: not a valid {kind} row ({exc})") from None
    raise UserError(f"{name}: the file is empty")


def _delimited_records(reader, lines: Lines, width: int, text_at: int | None, text_column: str | None,
                       kind: str) -> Iterator[tuple[int, list[str]]]:
    start = reader.line_num + 1
    try:
        for row in reader:
            if row:  # blank lines carry nothing
                where = f"{lines.name}:{start}"
                if len(row) != width:
                    raise UserError(f"{where}: expected {width} fields as in the header, found {len(row)}")
                yield start, _checked_text(row, text_at, text_column, where)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{lines.name}:{start}: not a valid {kind} row ({exc})") from None
    finally:
        lines.close()


# ---- JSON Lines -------------------------------------------------------------------------------


def json_rows(name: str, text_column: str | None) -> Rows:
    """One JSON object per line; the columns are their keys, in the order they first appear.

    The file is read twice, the first time for the keys only, so a key that a later line adds is
    still a column; a line without a key has an empty cell there.
    """
    header: dict[str, None] = {}
    for _, obj in _json_objects(Lines(name)):
        header.update(dict.fromkeys(obj))
    if not header:
        raise UserError(f"{name}: the file is empty")
    columns = list(header)
    text_at = check_header(columns, text_column, name)
    lines = Lines(name)
    records = _json_records(lines, columns, text_at, text_column)
    return Rows(name, columns, name, text_at, records, "line", lines.size, lines.position, lines.close)


def _json_objects(lines: Lines) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        for line in lines:
            if not line.strip():
                continue
            where = f"{lines.name}:{lines.number}"
            try:
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not valid JSON ({json_problem(exc, line=False)})") from None
            except ValueError as exc:  # a number too long to convert
                raise UserError(f"{where}: not valid JSON ({shown(str(exc), 120)})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{where}: not a JSON object (found {_json_kind(obj)}); write one object per line")
            yield lines.number, obj
    finally:
        lines.close()


def _json_records(lines: Lines, columns: list[str], text_at: int | None,
                  text_column: str | None) -> Iterator[tuple[int, list[str]]]:
    for number, obj in _json_objects(lines):
        where = f"{lines.name}:{number}"
        cells = [cell_text(obj.get(key), key, where) for key in columns]
        yield number, _checked_text(cells, text_at, text_column, where)


def cell_text(value: Any, column: str, where: str) -> str:
    """A JSON or Parquet value as a cell: text as it is, numbers and true/false as JSON writes them,
    null (or no value) as an empty cell, a list of strings (a multi-label cell) as its JSON text
    (``[]``: none applies), which the multi-label type reads; any other list or an object is an error."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{where}: column '{shown(column)}' is not UTF-8 text (byte 0x{value[exc.start]:02x})") from None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return json.dumps(list(value), ensure_ascii=False)
    if isinstance(value, (dict, list, tuple)):
        raise UserError(f"{where}: column '{shown(column)}' holds {_json_kind(value)}; "
                        "a cell must be text, a number, true/false, null or a list of labels (strings)")
    return str(value)  # dates, decimals: as they print


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")


# ---- Parquet ----------------------------------------------------------------------------------


def parquet_rows(name: str, text_column: str | None) -> Rows:
    """A Parquet file's rows, read a record batch at a time (pyarrow, imported only here)."""
    from mtlcli.extras import require

    pq = require("pyarrow.parquet", "parquet", f"{name}: reading Parquet")
    import pyarrow
    try:
        file = pq.ParquetFile(name)
    except (pyarrow.ArrowException, OSError) as exc:
        raise UserError(f"{name}: not a readable Parquet file ({shown(str(exc), 200)})") from None
    header = list(file.schema_arrow.names)
    text_at = check_header(header, text_column, name)
    size, total = Path(name).stat().st_size, max(file.metadata.num_rows, 1)
    done = [0]

    def where(n: int) -> str:
        return location(name, n, "row")

    def records() -> Iterator[tuple[int, list[str]]]:
        try:
            for batch in file.iter_batches(batch_size=PARQUET_BATCH):
                columns = [column.to_pylist() for column in batch.columns]
                for values in zip(*columns):
                    done[0] += 1
                    cells = [cell_text(v, c, where(done[0])) for v, c in zip(values, header)]
                    yield done[0], _checked_text(cells, text_at, text_column, where(done[0]))
        except (pyarrow.ArrowException, OSError) as exc:
            raise UserError(f"{where(done[0] + 1)}: cannot read ({shown(str(exc), 200)})") from None
        finally:
            file.close()

    return Rows(name, header, name, text_at, records(), "row", size, lambda: size * done[0] // total, file.close)
