"""``mtl eval``'s files: the scores as ``eval.json`` and a picture per task, as its type shows best."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli import atomic
from mtlcli.errors import UserError
from mtlcli.reports import plots


def dumps(obj: Any, level: int = 0) -> str:
    """JSON indented by 2, but each list of plain values (labels, a confusion-matrix row) on one line."""
    pad, end = "  " * (level + 1), "  " * level
    if isinstance(obj, dict) and obj:
        return "{\n" + ",\n".join(f"{pad}{json.dumps(k)}: {dumps(v, level + 1)}" for k, v in obj.items()) + f"\n{end}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(f"{pad}{dumps(v, level + 1)}" for v in obj) + f"\n{end}]"
    return json.dumps(obj, ensure_ascii=False)


def _file_part(name: str) -> str:
    """A task name made safe as part of a file name: a column called '../x' must not leave --out."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "task"


def write_report(report: dict[str, Any], out: str | Path, points: dict[str, Any] | None = None) -> list[Path]:
    """``eval.json`` and a picture per task in ``out``: ``confusion_<task>.png`` for a class task,
    ``labels_<task>.png`` (per-label precision, recall, F1) for a multi-label one,
    ``predicted_<task>.png`` (predicted against true, from ``points``) for a value task. Returns the
    files written."""
    out = Path(out)
    points = points or {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(out / "eval.json", dumps(report) + "\n")
        written = [out / "eval.json"]
        for task, r in report["tasks"].items():
            title, part = f"{task} (n={r['n']})", _file_part(task)
            if "confusion_matrix" in r:
                cm = np.asarray(r["confusion_matrix"])
                written.append(plots.write_confusion_png(cm, r["labels"], title, out / f"confusion_{part}.png"))
            elif "per_label" in r:
                thresholds = dict(zip(r.get("labels", []), r.get("thresholds", [])))
                written.append(plots.write_labels_png(r["per_label"], thresholds, title, out / f"labels_{part}.png"))
            elif task in points:
                written.append(plots.write_predicted_png(points[task], title, out / f"predicted_{part}.png"))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return written
