"""A table of texts in, checked rows out: reading, partial labels, the validation split.

Everything here runs before the model loads, so bad input is reported in seconds. A table is kept
compact (a million short rows in a few hundred MB): the texts, and per task each distinct label
string once with an int32 code per row.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from mtlcli.data import rows as rows_mod
from mtlcli.errors import UserError, shown

MISSING = -100  # label id of an empty cell: the row is left out of that task's loss and metrics


@dataclass(eq=False)
class Labels(Sequence):
    """One task's cells, row by row, as strings ('' = no label), stored as codes into ``names``."""

    names: list[str]  # each distinct cell once
    codes: np.ndarray  # int32, one per row

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> str:
        return self.names[self.codes[i]]

    def __iter__(self) -> Iterator[str]:
        names = self.names
        return (names[c] for c in self.codes.tolist())

    def __eq__(self, other: object) -> bool:
        """Equal to the same cells in the same order, as a list of them would be."""
        if isinstance(other, (Labels, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # equal by value, and mutable

    def __contains__(self, value: object) -> bool:
        return value in self.names and bool((self.codes == self.names.index(value)).any())

    def present(self) -> list[str]:
        """The distinct labels the rows carry, without the empty cell."""
        return [self.names[c] for c in np.unique(self.codes) if self.names[c]]

    def subset(self, index: np.ndarray) -> "Labels":
        return Labels(self.names, self.codes[index])

    def joined(self, other: "Labels") -> "Labels":
        """These rows, then ``other``'s, its codes moved onto these names."""
        names = list(self.names)
        index = {name: code for code, name in enumerate(names)}
        for name in other.names:
            if name not in index:
                index[name] = len(names)
                names.append(name)
        moved = np.array([index[name] for name in other.names], dtype=np.int32)
        return Labels(names, np.concatenate([self.codes, moved[other.codes]]))


@dataclass
class Table:
    """The rows of one file: texts, label cells per task ('' = no label) and line numbers."""

    path: str
    texts: list[str]
    labels: dict[str, Labels]
    lines: np.ndarray  # int32: the line each row starts on, for messages
    numbered: str = "line"  # what ``lines`` counts: "line", or "row" (Parquet)

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, i: int) -> str:
        """Row ``i`` as messages name it: ``data.csv:7`` or ``data.parquet: row 7``."""
        return rows_mod.location(self.path, int(self.lines[i]), self.numbered)

    def subset(self, index: list[int] | np.ndarray) -> "Table":
        index = np.asarray(index, dtype=np.int64)
        return Table(self.path, [self.texts[i] for i in index.tolist()],
                     {t: v.subset(index) for t, v in self.labels.items()}, self.lines[index], self.numbered)

    def joined(self, other: "Table") -> "Table":
        """These rows, then ``other``'s (the same tasks)."""
        return Table(self.path, self.texts + other.texts, {t: v.joined(other.labels[t]) for t, v in self.labels.items()},
                     np.concatenate([self.lines, other.lines]), self.numbered)


def read_header(path: str | Path, delimiter: str | None = None) -> list[str]:
    """The column names of a table file, checked except for the text column."""
    rows = rows_mod.open_rows(path, None, delimiter)
    rows.close()
    return rows.header


def read_table(path: str | Path, text_column: str, tasks: list[str] | None, delimiter: str | None = None) -> Table:
    """Read and check a labelled table. ``tasks`` empty or None: every column but the text column."""
    rows = rows_mod.open_rows(path, text_column, delimiter)
    try:
        columns = _task_columns(rows, text_column, tasks)
        texts: list[str] = []
        lines = array("i")
        found: dict[str, dict[str, int]] = {t: {"": 0} for t in columns}  # cell -> code; '' is code 0
        codes = {t: array("i") for t in columns}
        for line, cells in rows:
            texts.append(cells[rows.text_at].strip())
            lines.append(line)
            for task, at in columns.items():
                cell = cells[at].strip()
                codes[task].append(found[task].setdefault(cell, len(found[task])))
    finally:
        rows.close()
    if not texts:
        raise UserError(f"{path}: has a header but no rows")
    labels = {t: Labels(list(found[t]), np.frombuffer(codes[t], dtype=np.int32)) for t in columns}
    return Table(str(path), texts, labels, np.frombuffer(lines, dtype=np.int32), rows.numbered)


def _task_columns(rows: rows_mod.Rows, text_column: str, tasks: list[str] | None) -> dict[str, int]:
    """Each task's column index; the header itself was checked by the reader."""
    where, header = rows.header_where, rows.header
    for t in tasks or []:
        if t not in header:
            raise UserError(f"{where}: no column '{shown(t)}' for task '{shown(t)}' (columns: {rows_mod.listed(header)})")
        if t == text_column:
            raise UserError(f"{where}: column '{shown(t)}' is the text column and cannot also be a task")
    if not tasks and len(header) < 2:
        raise UserError(f"{where}: no task columns: the header has only the text column '{shown(text_column)}'")
    return {t: header.index(t) for t in (tasks or [c for c in header if c != text_column])}


# ---- the validation split ---------------------------------------------------------------------


def stratified_split(table: Table, val_split: float, seed: int, on: str | None = "") -> tuple[Table, Table]:
    """Hold out ``val_split`` of each label of column ``on`` (rows with no label form a group); the
    first task's column by default, a plain random share with ``on`` None (no class column)."""
    if on is None:
        first = Labels([""], np.zeros(len(table), dtype=np.int32))  # one group: a plain random share
    else:
        first = table.labels[on or next(iter(table.labels))]
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(set(first.names)):
        index = np.flatnonzero(first.codes == first.names.index(label)).tolist()  # in file order
        if not index:
            continue
        rng.shuffle(index)
        n_val = round(len(index) * val_split)
        val += index[:n_val]
        train += index[n_val:]
    if not train or not val:
        which = "training" if not train else "validation"
        raise UserError(
            f"{table.path}: a validation split of {val_split} of {len(table)} rows leaves no {which} rows; "
            "add rows, change --val-split, or give --val FILE"
        )
    return table.subset(np.sort(train)), table.subset(np.sort(val))


def keep_labels_trainable(train: Table, validation: Table,
                          labels_of: dict[str, Callable[[str], Iterable[str]]]) -> tuple[Table, Table]:
    """The split is stratified on one column only: a rare label of another task can land in the
    held-out rows alone, where the model could never learn it. Such rows go back to training.
    ``labels_of``: for each column with labels, the labels a cell holds."""
    back = np.zeros(len(validation), dtype=bool)
    for task, labels in labels_of.items():
        seen = {label for cell in train.labels[task].present() for label in labels(cell)}
        values = validation.labels[task]
        unseen = [code for code, cell in enumerate(values.names) if cell and not set(labels(cell)) <= seen]
        back |= np.isin(values.codes, unseen)
    if not back.any():
        return train, validation
    merged = train.joined(validation.subset(np.flatnonzero(back)))
    order = np.argsort(merged.lines, kind="stable")  # file order, as the split keeps it
    return merged.subset(order), validation.subset(np.flatnonzero(~back))
