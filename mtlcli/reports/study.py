"""`mtl report runs/<study>`: the trials of an `mtl tune` study side by side, from the study.json that
`mtl tune` rewrites after every trial (no Optuna needed to read it)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from mtlcli.errors import UserError
from mtlcli.reports import charts
from mtlcli.reports.html import fmt, table

STUDY_FILE = "study.json"  # written by mtlcli.tuning.study


def read_study(folder: str | Path) -> dict[str, Any] | None:
    """The study a folder holds, or None when it is not a study's folder."""
    path = Path(folder) / STUDY_FILE
    if not path.is_file():
        return None
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise UserError(f"{path}: not valid JSON") from None
    if not isinstance(study, dict) or not isinstance(study.get("trials"), list):
        raise UserError(f"{path}: not an mtl tune study file (no trials)")
    return {**study, "folder": str(folder)}


def best_run(study: dict[str, Any]) -> Path | None:
    """The best trial's run folder, where it is on this machine."""
    best = study.get("best_trial")
    run = Path(study["folder"]) / f"trial-{best}"
    return run if best is not None and (run / "metrics.jsonl").is_file() else None


def study_section(study: dict[str, Any]) -> str:
    finished = [t for t in study["trials"] if t.get("state") in ("complete", "pruned")]
    keys = list(dict.fromkeys(k for t in finished for k in t.get("settings") or {}))
    # the settings that differ between trials; the same in all of them says nothing about the search
    varied = [k for k in keys if len({json.dumps((t.get("settings") or {}).get(k)) for t in finished}) > 1]
    best = study.get("best_trial")
    body = [[f"<b>{t['number']}</b>" if t["number"] == best else str(t["number"]), escape(t["state"]),
             fmt(t.get("value")), *(fmt((t.get("settings") or {}).get(k), None) for k in varied),
             escape(t.get("note") or "")] for t in study["trials"]]
    trials_table = table(["trial", "state", "objective", *map(escape, varied), "note"], body, "num")
    found = study.get("importances") or {}
    mattered = (table(["setting", "importance"], [[escape(k), fmt(v, 3)] for k, v in found.items()], "num")
                if found else f'<p class="muted">{escape(study.get("importances_note") or "no importances")}</p>')
    chart = (f'<img class="curves" alt="objective by trial" src="{charts.objective_svg(finished, best)}">'
             if finished else '<p class="muted">No trial has finished yet.</p>')
    return (f'<section id="study"><h2>Study {escape(str(study.get("study")))}</h2>'
            f'<p class="muted">{len(finished)} finished trials of {len(study["trials"])}; maximising '
            f'{escape(str(study.get("objective")))}; best: trial {fmt(best)}</p>'
            f'<div class="card wide" id="study-trials"><h3>Trials (settings that differ)</h3>'
            f'<div class="scroll">{trials_table}</div></div><div class="grid">'
            f'<div class="card" id="study-objective"><h3>Objective by trial</h3>{chart}</div>'
            f'<div class="card" id="study-importances"><h3>Which settings mattered</h3>{mattered}</div>'
            f'</div></section>')
