"""A run's validation set, looked at closely: the data's label counts, per-class precision / recall
/ F1, confusion matrices, and the examples the best checkpoint finds hardest, per task.

Computed once from the best checkpoint (the same loader and scoring routine as ``mtl eval``, so a
task's loss is the run's objective, with its class weights and label smoothing) on the
validation rows the run held out (its config.yaml re-creates the same split), then cached in the run
folder as ``validation.json``; a new best checkpoint (a resumed run) makes it stale.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli import atomic, config as config_mod, runs
from mtlcli.data import tables as data_mod
from mtlcli.reports.eval_files import dumps
from mtlcli.tasks import columns, multilabel
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind
from mtlcli.scoring import scores as scoring
from mtlcli.errors import RunFailed, UserError

CACHE = "validation.json"
VERSION = 4  # raise when the cached layout or its numbers change (2: losses are the run's objective; 3: task
# types; 4: a label set shown in the task's label order)
EXAMPLES = 5  # per task and list
TEXT_LIMIT = 300  # characters of an example's text kept in the cache and the page


def checkpoint_key(run: Path) -> dict[str, Any]:
    """What the cached analysis was computed from: the best checkpoint, as its name, size and time."""
    best = runs.best_checkpoint(run)
    stat = best.stat()
    return {"version": VERSION, "checkpoint": str(best.relative_to(run)), "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns}


def read_cached(run: Path) -> dict[str, Any] | None:
    """The cached analysis if it still matches the run's best checkpoint."""
    try:
        cached = json.loads((run / CACHE).read_text(encoding="utf-8"))
        return cached if cached.get("key") == checkpoint_key(run) else None
    except (OSError, ValueError, AttributeError, UserError):
        return None


def validation_report(run: Path, device: str = "auto", batch_size: int | None = None) -> tuple[dict[str, Any], bool]:
    """(the analysis, whether it came from the cache); computed and cached when missing or stale."""
    cached = read_cached(run)
    if cached is not None:
        return cached, True
    result = compute(run, device, batch_size)
    try:
        atomic.write_atomic(run / CACHE, dumps(result) + "\n")
    except RunFailed:
        pass  # a read-only run folder: the report is still made, it is only recomputed next time
    return result, False


def compute(run: Path, device: str = "auto", batch_size: int | None = None) -> dict[str, Any]:
    from mtlcli.data.batching import encode
    from mtlcli.inference.loaded_run import load_run

    key = checkpoint_key(run)
    # where the data is: the run's config.yaml (edit it there if the files moved), split as in training
    cfg = config_mod.resolve(run / "config.yaml", {})
    if not cfg.data:
        raise UserError(f"{run / 'config.yaml'}: names no training data")
    if not cfg.val and cfg.val_split == 0:
        raise UserError(f"{run}: trained on every row with no validation (--val-split 0), so there are no "
                        "validation rows to analyse; mtl eval RUN FILE scores it on other labelled data")
    train, val, _, _ = columns.load_train_val(cfg.data, cfg.val, cfg.text_column, cfg.tasks, cfg.val_split, cfg.seed,
                                              cfg.delimiter, cfg.task_types, cfg.to_dict())
    loaded = load_run(run, device, "run")  # the precision it trained with: the numbers match its validation
    targets = columns.encode_targets(val, loaded.tasks, ignore_unknown=True)
    encoded = encode(loaded.tokenizer, val.texts, targets, loaded.max_length)
    scored, result = scoring.score_encoded(loaded, encoded, batch_size, per_row=True)  # batched as validation was
    tasks = {name: task_analysis(task, scored["tasks"][name], result["tasks"][name], np.asarray(encoded.labels[name]), val)
             for name, task in loaded.tasks.items()}
    return {"key": key, "data": data_summary(train, val, loaded.tasks), "val_rows": len(val), "tasks": tasks}


def task_analysis(task: Task, report: dict[str, Any], rows: dict[str, Any], y: np.ndarray,
                  table: data_mod.Table) -> dict[str, Any]:
    """A task's scores (``report``, as ``mtl eval`` gives them) with its hardest examples, found from
    evaluation's per-row result (``rows``: outputs and losses)."""
    kind_ = kind(task)
    labelled = np.flatnonzero(np.asarray(kind_.labelled(y)))
    out = rows["outputs"]
    loss = rows["row_losses"][labelled]  # each example's term of the task's loss
    hardest = np.argsort(-loss, kind="stable")[:EXAMPLES]
    if task.type == "classification":
        pred = out.argmax(-1)

        def example(i: int, example_loss: float) -> dict[str, Any]:
            return {**_line(table, i), "true": task.labels[y[i]], "predicted": task.labels[pred[i]],
                    "confidence": float(out[i, pred[i]]), "p_true": float(out[i, y[i]]), "loss": float(example_loss)}

        wrong = np.flatnonzero(pred[labelled] != y[labelled])
        confident = wrong[np.argsort(-out[labelled[wrong], pred[labelled[wrong]]], kind="stable")][:EXAMPLES]
        report["confidently_wrong"] = [example(int(labelled[k]), loss[k]) for k in confident]
    else:
        truth = kind_.decide(task, _as_outputs(task, y), 1)
        decided = kind_.decide(task, out, 1)

        def example(i: int, example_loss: float) -> dict[str, Any]:
            return {**_line(table, i), "true": _shown(truth[i], task), "predicted": _shown(decided[i], task),
                    "loss": float(example_loss)}

        found = scoring.points(task, out, y)  # a value task's predicted-vs-true chart
        if found is not None:
            report["points"] = found
    report["hardest"] = [example(int(labelled[k]), loss[k]) for k in hardest]
    return report


def _line(table: data_mod.Table, i: int) -> dict[str, Any]:
    text = table.texts[i]
    return {"line": int(table.lines[i]), "text": text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "..."}


def _as_outputs(task: Task, y: np.ndarray) -> np.ndarray:
    """Targets as the outputs that would state them exactly (for showing the truth as a prediction)."""
    if task.type == "regression":
        return kind(task).values(task, y)
    return np.nan_to_num(y, nan=0.0)  # a multi-label row's 0/1: probabilities at 0 and 1


def _shown(prediction: dict[str, Any], task: Task) -> str:
    """A prediction (or the truth) in words; a set of labels in the task's order, so that the same
    set reads the same whatever the probabilities."""
    if "value" in prediction:
        return f"{prediction['value']:.4g}"
    if "labels" in prediction:
        return ", ".join(label for label in task.labels if label in prediction["labels"]) or "(none)"
    return str(prediction.get("label", ""))


def data_summary(train: data_mod.Table, val: data_mod.Table, tasks: dict[str, Task]) -> dict[str, Any]:
    """Rows, label counts (in the run's label order; a multi-label row counts for each of its labels;
    a regression task's values summarised) and unlabelled (partial-label) rows per task."""

    def counts(table: data_mod.Table) -> dict[str, Any]:
        out = {}
        for name, values in table.labels.items():
            task = tasks.get(name)
            cells = [v for v in values if v]
            entry: dict[str, Any] = {"unlabelled": len(values) - len(cells)}
            if task is not None and task.type == "regression":
                numbers = np.asarray([float(v) for v in cells], dtype=np.float64)
                entry["labels"] = {}
                entry["values"] = {k: float(f(numbers)) if len(numbers) else None
                                   for k, f in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max))}
            else:
                split = (lambda c: multilabel.split_cell(c, task.params["separator"]) or []) \
                    if task is not None and task.type == "multilabel" else (lambda c: [c])
                found = Counter(label for cell in cells for label in split(cell))
                known = task.labels if task is not None else []
                order = [label for label in known if label in found] + sorted(set(found) - set(known))
                entry["labels"] = {label: found[label] for label in order}
            out[name] = entry
        return out

    return {"train_rows": len(train), "val_rows": len(val), "train": counts(train), "val": counts(val)}
