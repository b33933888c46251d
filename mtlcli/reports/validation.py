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
from mtlcli.scoring import scores as scoring
from mtlcli.errors import RunFailed, UserError

CACHE = "validation.json"
VERSION = 2  # raise when the cached layout or its numbers change (2: losses are the run's objective)
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
    train, val, _ = data_mod.load_train_val(cfg.data, cfg.val, cfg.text_column, cfg.tasks, cfg.val_split, cfg.seed,
                                            cfg.delimiter)
    loaded = load_run(run, device, "run")  # the precision it trained with: the numbers match its validation
    ids = data_mod.encode_labels(val, loaded.label_sets, ignore_unknown=True)
    encoded = encode(loaded.tokenizer, val.texts, ids, loaded.max_length)
    scored, result = scoring.score_encoded(loaded, encoded, batch_size, per_row=True)  # batched as validation was
    tasks = {}
    for task, labels in loaded.label_sets.items():
        tasks[task] = task_analysis(scored["tasks"][task], result["tasks"][task], np.asarray(encoded.labels[task]),
                                    labels, val)
    return {"key": key, "data": data_summary(train, val, loaded.label_sets), "val_rows": len(val), "tasks": tasks}


def task_analysis(report: dict[str, Any], rows: dict[str, Any], y: np.ndarray, labels: list[str],
                  table: data_mod.Table) -> dict[str, Any]:
    """A task's scores (``report``, as ``mtl eval`` gives them) with its hardest examples, found from
    evaluation's per-row result (``rows``: predictions, probabilities and losses)."""
    labelled = np.flatnonzero(y != data_mod.MISSING)
    pred, p = rows["predictions"], rows["probs"]
    truth = y[labelled]
    loss = rows["row_losses"][labelled]  # each example's term of the task's loss

    def example(i: int, example_loss: float) -> dict[str, Any]:
        text = table.texts[i]
        return {"line": int(table.lines[i]), "text": text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "...",
                "true": labels[y[i]], "predicted": labels[pred[i]], "confidence": float(p[i, pred[i]]),
                "p_true": float(p[i, y[i]]), "loss": float(example_loss)}

    hardest = np.argsort(-loss, kind="stable")[:EXAMPLES]
    wrong = np.flatnonzero(pred[labelled] != truth)
    confident = wrong[np.argsort(-p[labelled[wrong], pred[labelled[wrong]]], kind="stable")][:EXAMPLES]
    report["hardest"] = [example(int(labelled[k]), loss[k]) for k in hardest]
    report["confidently_wrong"] = [example(int(labelled[k]), loss[k]) for k in confident]
    return report


def data_summary(train: data_mod.Table, val: data_mod.Table, label_sets: dict[str, list[str]]) -> dict[str, Any]:
    """Rows, label counts (in the run's label order) and unlabelled (partial-label) rows per task."""

    def counts(table: data_mod.Table) -> dict[str, Any]:
        out = {}
        for task, values in table.labels.items():
            found = Counter(v for v in values if v)
            order = [label for label in label_sets.get(task, []) if label in found] + sorted(set(found) - set(label_sets.get(task, [])))
            out[task] = {"labels": {label: found[label] for label in order}, "unlabelled": sum(1 for v in values if not v)}
        return out

    return {"train_rows": len(train), "val_rows": len(val), "train": counts(train), "val": counts(val)}
