"""A table's task columns: each one's type (chosen with --task-type, else inferred where the cells
leave no doubt), fitted on the training rows, and turned into targets."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from mtlcli.data import tables as data_mod
from mtlcli.data.tables import Labels, Table
from mtlcli.errors import UserError, shown
from mtlcli.registry import task_types
from mtlcli.tasks import multilabel, regression
from mtlcli.tasks.base import Task, TaskType

MANY_INTEGERS = 20  # integer columns with more distinct values than this are read as amounts
ID_SHARE = 0.9  # a column with a distinct value on this share of its rows is an identifier
MIN_ROWS_PER_CLASS = 5  # a class column needs this many rows per distinct value on average


@lru_cache(maxsize=None)
def task_type(name: str) -> TaskType:
    """The registered task type ``name``, made once (types keep no state)."""
    return task_types.get(name)()


def kind(task: Task) -> TaskType:
    return task_type(task.type)


def choose_types(table: Table, chosen: dict[str, str], separator: str) -> dict[str, tuple[str, str]]:
    """Task -> (its type, why): as chosen, else what the cells of ``table`` show."""
    out = {}
    for task, cells in table.labels.items():
        if task in chosen:
            task_type(chosen[task])  # an unknown type is an error listing the known ones
            out[task] = (chosen[task], "--task-type")
        else:
            out[task] = infer(cells, separator)
            if out[task][0] == "regression" and "whole number" in out[task][1]:
                check_not_identifier(task, cells, table.path)
        if out[task][0] == "classification":
            check_learnable(task, cells, table.path, out[task][1] == "--task-type")
    return out


def infer(cells: Labels, separator: str) -> tuple[str, str]:
    """The type the cells leave no doubt about, and why; classification when in doubt."""
    values = cells.present()
    several = sum(1 for v in values if multilabel.split_cell(v, separator) not in (None, [v]))
    if several:
        return "multilabel", f"{several} distinct cells hold several labels joined by '{separator}'"
    numbers = [regression.read_number(v) for v in values]
    if values and all(n is not None for n in numbers):
        if any(n != int(n) for n in numbers):
            return "regression", "every cell is a number, some with decimals"
        if len(values) > MANY_INTEGERS:
            return "regression", f"every cell is a whole number, {len(values)} distinct"
        return "classification", f"whole numbers with {len(values)} distinct values, read as classes"
    return "classification", "one label per cell"


def check_learnable(task: str, cells: Labels, path: str, chosen: bool) -> None:
    """A class column with about one row per value (an id) or too many values for its rows cannot
    be learned as classes; say so rather than train a model that cannot learn it."""
    counts = np.bincount(cells.codes, minlength=len(cells.names))
    present = [(name, int(counts[code])) for code, name in enumerate(cells.names) if name and counts[code]]
    labelled = sum(n for _, n in present)
    distinct = len(present)
    numeric = all(regression.read_number(name) is not None for name, _ in present)
    fix = (f"leave it out (name the tasks to train with --task), or train it as numbers with "
           f"--task-type {task}=regression" if numeric else "leave it out (name the tasks to train with --task)")
    if labelled >= 20 and distinct >= ID_SHARE * labelled:
        raise UserError(f"{path}: column '{shown(task)}' has a different value on {distinct} of its {labelled} rows, "
                        f"like an identifier: it cannot be learned as classes; {fix}")
    if distinct > MANY_INTEGERS and distinct * MIN_ROWS_PER_CLASS > labelled:
        raise UserError(f"{path}: column '{shown(task)}' has {distinct} distinct labels in {labelled} rows, too few rows "
                        f"per label to learn them as classes{'' if chosen else ' (read as classification)'}; {fix}")


def check_not_identifier(task: str, cells: Labels, path: str) -> None:
    """Whole numbers that differ on every row (1, 2, 3, ...) are an id, not an amount to learn,
    unless the user says so with --task-type."""
    counts = np.bincount(cells.codes, minlength=len(cells.names))
    labelled = int(sum(counts[code] for code, name in enumerate(cells.names) if name))
    distinct = sum(1 for code, name in enumerate(cells.names) if name and counts[code])
    if labelled >= 20 and distinct == labelled:
        raise UserError(f"{path}: column '{shown(task)}' holds a different whole number on each of its {labelled} "
                        f"rows, like an identifier; leave it out (name the tasks to train with --task), or "
                        f"--task-type {task}=regression if it is an amount to predict")


def fit_tasks(train: Table, types: dict[str, tuple[str, str]], settings: dict[str, Any]) -> dict[str, Task]:
    """Each task as its training rows define it; a class task needs two labels or more."""
    tasks = {}
    for name, (type_name, _) in types.items():
        kind_ = task_type(type_name)
        tasks[name] = kind_.fit(name, train.labels[name], train.where, settings)
    for name, task in tasks.items():
        need = task_type(task.type).min_labels
        if len(task.labels) < need:
            found = f"only '{shown(task.labels[0])}'" if task.labels else "no labels"
            trainable = [t for t, other in tasks.items() if len(other.labels) >= kind(other).min_labels]
            fix = ("; leave it out by naming the tasks to train: " + " ".join(f"--task {shown(t)}" for t in trainable)
                   if trainable and trainable != [name] else "; add rows with other labels")
            raise UserError(f"{train.path}: task '{shown(name)}' has {found} in the training rows; "
                            f"a {task.type} task needs at least {need} label{'s' if need > 1 else ''}{fix}")
    return tasks


def encode_targets(table: Table, tasks: dict[str, Task], ignore_unknown: bool = False,
                   hint: str = "") -> dict[str, np.ndarray]:
    """Each task's targets for the rows of ``table`` (tasks it has no column for are left out)."""
    return {name: kind(task).targets(task, table.labels[name], table.where, ignore_unknown, hint)
            for name, task in tasks.items() if name in table.labels}


def stratify_on(types: dict[str, tuple[str, str]]) -> str | None:
    """The column the validation split keeps the proportions of: the first class column."""
    return next((t for t, (name, _) in types.items() if name == "classification"), None)


def cell_labels(task: Task | tuple[str, str], separator: str):
    """What labels a cell of a class or multi-label column holds (for keeping labels trainable)."""
    name = task.type if isinstance(task, Task) else task[0]
    if name == "classification":
        return lambda cell: [cell]
    if name == "multilabel":
        return lambda cell: multilabel.split_cell(cell, separator) or []
    return None


def load_train_val(data: str, val: str | None, text_column: str, columns: list[str], val_split: float, seed: int,
                   delimiter: str | None = None, chosen: dict[str, str] | None = None,
                   settings: dict[str, Any] | None = None) -> tuple[Table, Table, dict[str, Task], dict[str, str]]:
    """The training and validation tables, each task fitted on the training rows, and why each task
    has its type; fully checked (a validation label the training rows lack is reported now)."""
    settings = settings or {}
    separator = settings.get("label_separator") or "|"
    train = data_mod.read_table(data, text_column, columns, delimiter)
    types = choose_types(train, chosen or {}, separator)
    if val:
        validation = data_mod.read_table(val, text_column, list(train.labels), delimiter)
    elif val_split == 0:  # every row trains; no validation (--val-split 0)
        validation = train.subset([])
    else:
        train, validation = data_mod.stratified_split(train, val_split, seed, stratify_on(types))
        labels_of = {t: f for t, chosen_type in types.items() if (f := cell_labels(chosen_type, separator))}
        train, validation = data_mod.keep_labels_trainable(train, validation, labels_of)
    tasks = fit_tasks(train, types, settings)
    encode_targets(validation, tasks)  # an unseen validation label is reported now
    return train, validation, tasks, {t: why for t, (_, why) in types.items()}


def load_test(path: str, text_column: str, tasks: dict[str, Task], delimiter: str | None = None) -> Table:
    """The test rows (--test), read and checked as validation rows are: every task's column, and
    only labels the training rows have."""
    test = data_mod.read_table(path, text_column, list(tasks), delimiter)
    encode_targets(test, tasks)
    return test
