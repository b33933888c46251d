"""CSV in, validated examples out: reading, label sets, partial labels, the validation split.

Everything here runs before the model loads, so bad input is reported in seconds.
"""

from __future__ import annotations

import csv
import io
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from mtlcli.errors import UserError, shown

MISSING = -100  # label id of an empty cell: the row is left out of that task's loss and metrics

# Reviews can be long; Python's default 128 KiB field limit is a CSV-module default, not a rule of ours.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Table:
    """The rows of one CSV: texts, raw label strings per task ('' = no label) and line numbers."""

    path: str
    texts: list[str]
    labels: dict[str, list[str]]
    lines: list[int]  # the line each row starts on, for messages

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: list[int]) -> "Table":
        return Table(
            self.path,
            [self.texts[i] for i in index],
            {t: [v[i] for i in index] for t, v in self.labels.items()},
            [self.lines[i] for i in index],
        )


def _listed(names: list[str], most: int = 20) -> str:
    listed = ", ".join(shown(n, 40) for n in names[:most])
    return listed + (f", ... ({len(names)} in all)" if len(names) > most else "")


def read_header(path: str | Path) -> list[str]:
    return _open_rows(path)[0]


def _open_rows(path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a whole CSV, turning every way a file can be unreadable into one clear line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a CSV file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UserError(f"{shown(str(path), 300)}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if not raw.strip():
        raise UserError(f"{path}: the file is empty")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not a text CSV file (contains NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")  # a BOM from Excel is fine
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    # newline="": only \n, \r and \r\n end a row, as in RFC 4180; str.splitlines() would also cut
    # rows at form feeds, U+2028 and other characters that are ordinary text inside a field
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            if row:  # blank lines carry nothing
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{path}:{start}: not a valid CSV row ({exc})") from None
    if not rows:
        raise UserError(f"{path}: the file is empty")
    header = [h.strip() for h in rows[0][1]]
    return header, rows[1:]


def read_table(path: str | Path, text_column: str, tasks: list[str] | None) -> Table:
    """Read and check a labelled CSV. ``tasks`` empty or None: every column but the text column."""
    header, rows = _open_rows(path)
    columns = _check_header(path, header, text_column, tasks)
    task_names = tasks or [c for c in header if c != text_column]
    text_at = columns[text_column]
    texts, lines = [], []
    labels: dict[str, list[str]] = {t: [] for t in task_names}
    for line, row in rows:
        if len(row) != len(header):
            raise UserError(f"{path}:{line}: expected {len(header)} fields as in the header, found {len(row)}")
        text = row[text_at].strip()
        if not text:
            raise UserError(f"{path}:{line}: empty '{shown(text_column)}'")
        texts.append(text)
        lines.append(line)
        for t in task_names:
            labels[t].append(row[columns[t]].strip())
    if not texts:
        raise UserError(f"{path}: has a header but no rows")
    return Table(str(path), texts, labels, lines)


def _check_header(path, header: list[str], text_column: str, tasks: list[str] | None) -> dict[str, int]:
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if not name:
            raise UserError(f"{path}:1: column {i + 1} of the header has no name")
        if name in seen:
            raise UserError(f"{path}:1: column '{shown(name)}' appears twice in the header")
        seen[name] = i
    if text_column not in seen:
        raise UserError(
            f"{path}:1: no text column '{shown(text_column)}' in the header (columns: {_listed(header)}); "
            "name it with --text-column, and make sure the file starts with a header row"
        )
    for t in tasks or []:
        if t not in seen:
            raise UserError(f"{path}:1: no column '{shown(t)}' for task '{shown(t)}' in the header (columns: {_listed(header)})")
        if t == text_column:
            raise UserError(f"{path}:1: column '{shown(t)}' is the text column and cannot also be a task")
    if not tasks and len(header) < 2:
        raise UserError(f"{path}:1: no task columns: the header has only the text column '{shown(text_column)}'")
    return seen


# ---- label sets -------------------------------------------------------------------------------


def _label_key(label: str):
    """Integer labels sort as numbers (2 before 10); others as strings."""
    try:
        return (0, int(label), "")
    except ValueError:
        return (1, 0, label)


def build_label_sets(table: Table) -> dict[str, list[str]]:
    """Each task's labels, sorted, from the training rows; every task needs two or more."""
    sets = {}
    for task, values in table.labels.items():
        labels = sorted({v for v in values if v}, key=_label_key)
        if len(labels) < 2:
            found = f"only '{shown(labels[0])}'" if labels else "no labels"
            raise UserError(f"{table.path}: task '{shown(task)}' has {found} in the training rows; a task needs at least two labels")
        sets[task] = labels
    return sets


def encode_labels(table: Table, label_sets: dict[str, list[str]], ignore_unknown: bool = False) -> dict[str, list[int]]:
    """Label strings -> ids per task; an empty cell is MISSING, an unseen label an error."""
    out = {}
    for task, labels in label_sets.items():
        if task not in table.labels:
            continue
        index = {label: i for i, label in enumerate(labels)}
        ids = []
        for value, line in zip(table.labels[task], table.lines):
            if not value:
                ids.append(MISSING)
            elif value in index:
                ids.append(index[value])
            elif ignore_unknown:
                ids.append(MISSING)
            else:
                raise UserError(
                    f"{table.path}:{line}: label '{shown(value)}' of task '{shown(task)}' is not one the model knows "
                    f"(known: {_listed(labels)})"
                )
        out[task] = ids
    return out


# ---- the validation split ---------------------------------------------------------------------


def stratified_split(table: Table, val_split: float, seed: int) -> tuple[Table, Table]:
    """Hold out ``val_split`` of each label of the first task (rows with no label form a group)."""
    first = next(iter(table.labels))
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(table.labels[first]):
        groups.setdefault(label, []).append(i)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(groups):
        index = groups[label]
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
    return table.subset(sorted(train)), table.subset(sorted(val))


def _keep_labels_trainable(train: Table, validation: Table) -> tuple[Table, Table]:
    """The split is stratified on the first task only: a rare label of another task can land in
    the held-out rows alone, where the model could never learn it. Such rows go back to training."""
    back = set()
    for task, values in validation.labels.items():
        seen = set(train.labels[task])
        back.update(i for i, v in enumerate(values) if v and v not in seen)
    if not back:
        return train, validation
    moved = sorted(back)
    merged = Table(train.path, train.texts + [validation.texts[i] for i in moved],
                   {t: v + [validation.labels[t][i] for i in moved] for t, v in train.labels.items()},
                   train.lines + [validation.lines[i] for i in moved])
    order = sorted(range(len(merged)), key=lambda i: merged.lines[i])  # file order, as the split keeps it
    return merged.subset(order), validation.subset([i for i in range(len(validation)) if i not in back])


def load_train_val(
    data: str, val: str | None, text_column: str, tasks: list[str], val_split: float, seed: int
) -> tuple[Table, Table, dict[str, list[str]]]:
    """The training and validation tables and the label sets, fully checked."""
    train = read_table(data, text_column, tasks)
    if val:
        validation = read_table(val, text_column, list(train.labels))
    else:
        train, validation = stratified_split(train, val_split, seed)
        train, validation = _keep_labels_trainable(train, validation)
    label_sets = build_label_sets(train)
    encode_labels(validation, label_sets)  # an unseen validation label is reported now
    return train, validation, label_sets
