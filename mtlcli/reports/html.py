"""`mtl report`: one self-contained HTML page about one or more runs, built from their run folders.

Everything is inline (CSS, SVG charts as data URIs, no script), so the page opens offline, can be
mailed as one file, and shows the same in any browser. Per run: settings, data, learning curves,
best-epoch metrics, each task's scores on the validation set as its type shows them (per-class
scores and a confusion matrix; per-label scores and thresholds; predicted against true values),
and the hardest (for a class task also the most confidently wrong) validation examples. With several runs: the settings that differ, the
metrics side by side, and overlaid curves.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable

import yaml

from mtlcli import __version__, runs
from mtlcli.config import BUNDLED_MODEL
from mtlcli.reports import plots
from mtlcli.reports import charts as report_charts
from mtlcli.errors import UserError
from mtlcli import vocabulary as vocab

HIDDEN = ("out", "name")  # where a run went says nothing about how it trained


@dataclass
class RunView:
    """What the page shows of one run."""

    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    validation: dict[str, Any] | None = None
    missing: str | None = None  # why there is no validation analysis
    tasks: list[str] = field(default_factory=list)
    best: int | None = None  # the best epoch, as training named it


def collect(paths: list[str], device: str = "auto", warn: Callable[[str], None] = lambda m: None,
            on_compute: Callable[[str], None] = lambda m: None) -> list[RunView]:
    """Read each run folder; compute (and cache) its validation analysis where it has none yet."""
    from mtlcli.reports.validation import read_cached, validation_report

    series, bests = plots.load_series(paths)  # the same checks, names and best epochs as `mtl plot`
    folders = list(dict.fromkeys(runs.resolve_run(p) for p in paths))
    views = []
    for run, (name, rows) in zip(folders, series.items()):
        view = RunView(run, name, _read_yaml(run / "config.yaml"), _read_json(run / "summary.json"), rows)
        view.tasks, view.best = vocab.tasks(rows[0]), bests[name]
        try:
            if read_cached(run) is None and validated(view):
                on_compute(f"{name}: scoring the validation set with the best checkpoint (cached in {run.name}/validation.json)")
            view.validation, _ = validation_report(run, device)
        except UserError as exc:
            view.missing = str(exc)
            warn(f"{name}: no validation analysis ({exc})")
        views.append(view)
    return views


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the run's config ({exc.__class__.__name__})") from None
    return value if isinstance(value, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}  # a run still in progress
    except (OSError, UnicodeDecodeError, ValueError):
        raise UserError(f"{path}: not valid JSON") from None
    return value if isinstance(value, dict) else {}


# ---- what is shown ------------------------------------------------------------------------------


def settings(view: RunView) -> dict[str, Any]:
    """The settings that matter, in reading order."""
    c, s = view.config, view.summary
    return {
        "model": c.get("model") or s.get("model") or f"bundled {BUNDLED_MODEL}",
        "pooling": c.get("pooling"), "normalize": c.get("normalize"), "head": c.get("head"),
        "task types": c.get("task_types") or "classification each",
        "loss combiner": c.get("loss_combiner"), "task weights": c.get("task_weights") or "1.0 each",
        "scheduler": c.get("scheduler"), "lr backbone": c.get("lr_backbone"), "lr heads": c.get("lr_heads"),
        "weight decay": c.get("weight_decay"), "batch size": c.get("batch_size"), "max length": c.get("max_length"),
        "freeze": c.get("freeze") or "none",
        "epochs run": f"{s.get('epochs_run', len(view.rows))} of {c.get('epochs')}",
        "stopped early": s.get("pruned_reason") or s.get("stopped_early", "run in progress" if not s else False),
        "best epoch": view.best,
        "precision": s.get("precision", c.get("precision")), "device": s.get("device", c.get("device")),
        "seed": c.get("seed"), "data": c.get("data"),
        "validation": c.get("val") or (f"{c.get('val_split')} of the data, stratified" if validated(view)
                                       else "none (--val-split 0: every row trains; the last epoch is kept)"),
        "test": c.get("test") or "none",
    }


def validated(view: RunView) -> bool:
    """The run held validation rows (not --val-split 0)."""
    return bool(view.config.get("val")) or view.config.get("val_split") != 0


def best_row(view: RunView) -> dict[str, Any]:
    return next((r for r in view.rows if r.get(vocab.EPOCH) == view.best), {})


def differing(views: list[RunView]) -> list[tuple[str, list[Any]]]:
    """(setting, value per run) for each config key or outcome that is not the same in every run."""
    keys = list(dict.fromkeys(k for v in views for k in v.config if k not in HIDDEN))
    rows = [(k, [v.config.get(k) for v in views]) for k in keys]
    rows += [(k, [v.summary.get(k) for v in views]) for k in ("epochs_run", "stopped_early")]
    rows += [("best_epoch", [v.best for v in views])]
    return [(k, values) for k, values in rows if len({json.dumps(x, sort_keys=True) for x in values}) > 1]


# ---- HTML ---------------------------------------------------------------------------------------


def fmt(value: Any, digits: int | None = 4) -> str:
    """A value as HTML; ``digits=None`` shows a float as set (1e-05, 0.001), not rounded."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "&ndash;"
        return f"{value:g}" if digits is None else f"{value:.{digits}f}"
    if isinstance(value, (list, dict)):
        return escape(", ".join(map(str, value)) if isinstance(value, list) else
                      ", ".join(f"{k}={v}" for k, v in value.items()))
    return escape(str(value))


def table(head: list[str], body: list[list[str]], cls: str = "") -> str:
    """A table from cells that are already HTML."""
    th = "".join(f"<th>{h}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>'


def confusion_html(r: dict[str, Any]) -> str:
    """Rows: true label, columns: predicted; each cell shaded by its share of the true label's rows."""
    labels = r["labels"]
    head = "".join(f'<th class="pred">{escape(label)}</th>' for label in labels)
    body = []
    for i, (label, counts) in enumerate(zip(labels, r["confusion_matrix"])):
        total = sum(counts) or 1
        cells = []
        for j, n in enumerate(counts):
            share = n / total
            ink = "#fff" if share > 0.55 else "#0f172a"
            hue = "37,99,235" if i == j else "220,38,38"  # right: blue, wrong: red
            cells.append(f'<td class="{"diag" if i == j else ""}" style="background:rgba({hue},{0.08 + 0.85 * share:.2f});'
                         f'color:{ink}" title="{escape(label)} predicted as {escape(labels[j])}: {n}">{n}</td>')
        body.append(f'<tr><th class="true">{escape(label)}</th>{"".join(cells)}</tr>')
    # in a box that scrolls sideways: a matrix of many labels is wider than its card
    return (f'<div class="scroll"><table class="confusion"><thead><tr><th class="corner">true \u2193 predicted \u2192</th>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def per_class_html(r: dict[str, Any]) -> str:
    body = [[escape(label), fmt(c["precision"], 3), fmt(c["recall"], 3), fmt(c["f1"], 3), str(c["support"])]
            for label, c in r["per_class"].items()]
    body.append(["<b>macro</b>", "", "", f"<b>{fmt(r['macro_f1'], 3)}</b>", str(r["n"])])
    return table(["label", "precision", "recall", "F1", "support"], body, "num per-class")


def examples_html(items: list[dict[str, Any]], empty: str, marks_wrong: bool = True) -> str:
    """Examples as a table; ``confidence`` where the items have it (a class task's), a wrong
    prediction in red where ``marks_wrong`` (not for values, which are never exactly right)."""
    if not items:
        return f'<p class="muted">{empty}</p>'
    confidence = all("confidence" in e for e in items)
    body = [[str(e["line"]), f'<span class="text">{escape(e["text"])}</span>', escape(e["true"]),
             f'<span class="wrong">{escape(e["predicted"])}</span>' if marks_wrong and e["predicted"] != e["true"]
             else escape(e["predicted"]),
             *([fmt(e["confidence"], 3)] if confidence else []), fmt(e["loss"], 3)] for e in items]
    head = ["line", "text", "true", "predicted", *(["confidence"] if confidence else []), "loss"]
    return table(head, body, "examples" + ("" if confidence else " no-confidence"))


def run_section(index: int, view: RunView) -> str:
    sid = f"run-{index}"
    parts = [f'<section class="run" id="{sid}"><h2>{escape(view.name)}</h2>'
             f'<p class="muted path">{escape(str(view.path))}</p><div class="grid">']
    parts.append(f'<div class="card" id="{sid}-settings"><h3>Settings</h3>' + table(
        ["setting", "value"], [[escape(k), fmt(v, None)] for k, v in settings(view).items()], "kv") + "</div>")
    parts.append(f'<div class="card" id="{sid}-data"><h3>Data</h3>{data_html(view)}</div></div>')
    parts.append(f'<div class="card wide" id="{sid}-curves"><h3>Learning curves</h3>'
                 f'<p class="muted">Dotted line: the best epoch, the one training kept (its validation loss '
                 f'fell by more than --min-delta).</p>'
                 f'<img class="curves" alt="learning curves of {escape(view.name)}" src="'
                 + report_charts.curves_svg({view.name: view.rows}, report_charts.panels(view.rows), {view.name: view.best})
                 + '"></div>')
    parts.append(f'<div class="card wide" id="{sid}-best"><h3>Best epoch</h3>{best_html(view)}</div>')
    parts.append(test_html(sid, view))
    parts.append(validation_html(sid, view))
    parts.append("</section>")
    return "".join(parts)


def data_html(view: RunView) -> str:
    if view.validation is None:
        return f'<p class="muted">Not available: {escape(view.missing or "")}</p>'
    d = view.validation["data"]
    types = view.config.get("task_types") or {}
    out = [f'<p><b>{d["train_rows"]}</b> training rows, <b>{d["val_rows"]}</b> validation rows.</p>']
    for task in d["train"]:
        tr, va = d["train"][task], d["val"].get(task, {"labels": {}, "unlabelled": 0})
        note = f' <span class="muted">{escape(types[task])}</span>' if task in types else ""
        if "values" in tr:  # a value task: how its numbers spread
            body = [[stat, fmt(tr["values"].get(stat)), fmt(va.get("values", {}).get(stat))]
                    for stat in ("mean", "std", "min", "max")]
            head = ["value", "train", "validation"]
        else:
            labels = list(dict.fromkeys([*tr["labels"], *va["labels"]]))
            body = [[escape(label), str(tr["labels"].get(label, 0)), str(va["labels"].get(label, 0))] for label in labels]
            head = ["label", "train", "validation"]
            if types.get(task) == "multilabel":
                note += ' <span class="muted">(a row counts for each of its labels)</span>'
        missing = "no value (partial)" if "values" in tr else "no label (partial)"
        body.append([f'<span class="muted">{missing}</span>', str(tr["unlabelled"]), str(va["unlabelled"])])
        out.append(f"<h4>{escape(task)}{note}</h4>" + table(head, body, "num counts"))
    return "".join(out)


def best_html(view: RunView) -> str:
    best = best_row(view)
    if not best:
        return '<p class="muted">No epoch finished yet.</p>'
    types = view.config.get("task_types") or {}
    tables = []
    for _, tasks in vocab.groups(best, view.tasks):  # a table per task type: no empty cells
        columns = [(split, m) for split in (vocab.VAL, vocab.TRAIN) for m in vocab.metrics(best, tasks[0], split)]
        body = [[escape(t), *(fmt(best.get(vocab.key(split, t, m))) for split, m in columns)] for t in tasks]
        kinds = ", ".join(dict.fromkeys(types[t] for t in tasks if t in types))
        tables.append((f"<h4>{escape(kinds)}</h4>" if kinds else "")
                      + table(["task", *(f"{split} {m.label}" for split, m in columns)], body, "num"))
    if vocab.VAL_LOSS not in best:
        return (f'<p>Epoch <b>{best.get(vocab.EPOCH)}</b>, the last: no validation (--val-split 0); training loss '
                f'<b>{fmt(best.get(vocab.TRAIN_LOSS))}</b>.</p>' + "".join(tables))
    return (f'<p>Epoch <b>{best.get(vocab.EPOCH)}</b>: validation loss <b>{fmt(best.get(vocab.VAL_LOSS))}</b> '
            f'(training loss {fmt(best.get(vocab.TRAIN_LOSS))}).</p>' + "".join(tables))


def test_html(sid: str, view: RunView) -> str:
    """--test's scores, as training wrote them to summary.json; nothing for a run without them."""
    scores = vocab.scores_on_test(view.summary)
    if not scores:
        return ""
    test = view.summary["test"]
    types = view.config.get("task_types") or {}
    tables = []
    for columns, tasks in vocab.groups(scores, vocab.tasks(scores), vocab.TEST):
        body = [[escape(t), str(test["tasks"][t].get("n", "")), *(fmt(scores.get(vocab.key(vocab.TEST, t, m)))
                                                                   for m in columns)] for t in tasks]
        kinds = ", ".join(dict.fromkeys(types[t] for t in tasks if t in types))
        tables.append((f"<h4>{escape(kinds)}</h4>" if kinds else "")
                      + table(["task", "rows", *(m.label for m in columns)], body, "num"))
    return (f'<div class="card wide" id="{sid}-test"><h3>Test set</h3>'
            f'<p class="muted">Scored with {escape(str(test.get("checkpoint")))} when training ended, on the '
            f'{test.get("n")} rows of {escape(str(test.get("data")))}: loss <b>{fmt(test.get("loss"))}</b>.</p>'
            + "".join(tables) + "</div>")


def scores_line(r: dict[str, Any]) -> str:
    """A task's type and scores in words: ``classification: accuracy 0.812, macro-F1 0.790, loss 0.512, n=30``."""
    from mtlcli.tasks.columns import task_type

    scores = [f"{m.label} {fmt(r.get(m.name), 3)}" for m in task_type(r["type"]).metrics if m != vocab.LOSS]
    scores += [f"loss {fmt(r['loss'], 3)}", f"n={r['n']}"]
    return f"{escape(r['type'])}: {', '.join(scores)}"


def per_label_html(r: dict[str, Any]) -> str:
    """A multi-label task's labels: precision, recall, F1 and support at each label's threshold."""
    thresholds = dict(zip(r.get("labels", []), r.get("thresholds", [])))
    body = [[escape(label), fmt(c["precision"], 3), fmt(c["recall"], 3), fmt(c["f1"], 3), str(c["support"]),
             fmt(thresholds.get(label), 3)] for label, c in r["per_label"].items()]
    body.append(["<b>macro</b>", "", "", f"<b>{fmt(r.get('macro_f1'), 3)}</b>", "", ""])
    return table(["label", "precision", "recall", "F1", "support", "threshold"], body, "num per-label")


def task_details_html(r: dict[str, Any], task: str) -> str:
    """What a task's type shows beyond its scores: per class and the confusion matrix; per label;
    or its predictions against the truth."""
    if "confusion_matrix" in r:
        return per_class_html(r) + confusion_html(r)
    if "per_label" in r:
        return per_label_html(r)
    if r.get("points"):
        return (f'<img class="scatter" alt="predicted against true values of {escape(task)}" '
                f'src="{report_charts.predicted_svg(r["points"])}">')
    return ""


def validation_html(sid: str, view: RunView) -> str:
    if view.validation is None:
        return (f'<div class="card wide" id="{sid}-validation"><h3>Validation set</h3>'
                f'<p class="muted">Not available: {escape(view.missing or "")}</p></div>')
    v = view.validation
    where = escape(v["key"]["checkpoint"])
    parts = [f'<div class="card wide" id="{sid}-validation"><h3>Validation set, per task</h3>'
             f'<p class="muted">Scored with {where} on the {v["val_rows"]} validation rows.</p>']
    for task, r in v["tasks"].items():
        parts.append(f'<div class="task"><h4>{escape(task)} <span class="muted">{scores_line(r)}</span></h4>'
                     f'<div class="pair">{task_details_html(r, task)}</div></div>')
    parts.append(f'</div><div class="card wide" id="{sid}-examples"><h3>Hardest validation examples</h3>'
                 '<p class="muted">Per task: the examples with the highest loss (the model finds them hardest), '
                 'and for a class task the wrong predictions made with the highest probability.</p>')
    for task, r in v["tasks"].items():
        parts.append(f'<div class="task"><h4>{escape(task)}</h4><h5>Highest loss</h5>'
                     + examples_html(r["hardest"], "No labelled rows.", marks_wrong=not r.get("points")))
        if "confidently_wrong" in r:
            parts.append("<h5>Most confidently wrong</h5>" + examples_html(r["confidently_wrong"], "No wrong predictions."))
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


def comparison_section(views: list[RunView]) -> str:
    names = [escape(v.name) for v in views]
    diff = differing(views)
    settings_table = (table(["setting", *names], [[escape(k), *(fmt(x, None) for x in values)] for k, values in diff], "kv diff")
                      if diff else '<p class="muted">The runs have the same settings.</p>')
    tasks = list(dict.fromkeys(t for v in views for t in v.tasks))
    bests = [best_row(v) for v in views]
    metric_rows = [["best epoch", *(fmt(b.get(vocab.EPOCH)) for b in bests)],
                   [f"{vocab.VAL} {vocab.LOSS.label}", *_marked([b.get(vocab.VAL_LOSS) for b in bests], vocab.LOSS)]]
    keys = [k for b in bests for k in b]
    for t in tasks:
        for m in vocab.metrics(keys, t, vocab.VAL):
            if m != vocab.LOSS:
                scores = [b.get(vocab.key(vocab.VAL, t, m)) for b in bests]
                metric_rows.append([f"{escape(t)} {m.label}", *_marked(scores, m)])
    series = {v.name: v.rows for v in views}
    chart_panels = report_charts.panels([r for v in views for r in v.rows[:1]])
    return (f'<section class="comparison" id="comparison"><h2>Comparison of {len(views)} runs</h2><div class="grid">'
            f'<div class="card" id="comparison-settings"><h3>Settings that differ</h3>{settings_table}</div>'
            f'<div class="card" id="comparison-metrics"><h3>Best-epoch metrics (validation)</h3>'
            f'{table(["metric", *names], metric_rows, "num")}</div></div>'
            f'<div class="card wide" id="comparison-curves"><h3>Learning curves, overlaid</h3>'
            f'<p class="muted">A colour per run; validation solid, training dashed; dotted: each run\'s best epoch.</p>'
            f'<img class="curves" alt="learning curves of every run" '
            f'src="{report_charts.curves_svg(series, chart_panels, {v.name: v.best for v in views})}">'
            f'</div></section>')


def _marked(values: list[Any], metric: vocab.Metric) -> list[str]:
    """Each value formatted, the best of them in bold."""
    numbers = [v for v in values if isinstance(v, (int, float)) and v == v]
    best = (max if metric.higher_is_better else min)(numbers) if len(numbers) > 1 else None
    return [f"<b>{fmt(v)}</b>" if best is not None and v == best else fmt(v) for v in values]


def render(views: list[RunView], studies: list[str] = ()) -> str:
    """The page; ``studies``: sections (reports.study) shown first, for `mtl report runs/<study>`."""
    nav = "".join(f'<a href="#run-{i}">{escape(v.name)}</a>' for i, v in enumerate(views, 1))
    if len(views) > 1:
        nav = '<a href="#comparison">comparison</a>' + nav
    if studies:
        nav = '<a href="#study">study</a>' + nav
    body = "".join(studies) + (comparison_section(views) if len(views) > 1 else "") + "".join(
        run_section(i, v) for i, v in enumerate(views, 1))
    title = "mtl report: " + ", ".join(v.name for v in views)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="mtl {escape(__version__)}"><title>{escape(title)}</title>'
            f'<style>{CSS}</style></head><body><header><h1>mtl report</h1><nav>{nav}</nav>'
            f'<p class="muted">{len(views)} run{"s" if len(views) > 1 else ""}; made with mtl {escape(__version__)} '
            f'on {stamp}</p></header><main>{body}</main></body></html>\n')


CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f1f5f9;color:#0f172a;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
header{background:#0f172a;color:#e2e8f0;padding:18px 32px}
header h1{margin:0 0 6px;font-size:22px;color:#fff}
header .muted{color:#94a3b8;margin:6px 0 0}
nav a{color:#93c5fd;margin-right:16px;text-decoration:none;font-weight:600}
nav a:hover{text-decoration:underline}
main{max-width:1280px;margin:0 auto;padding:12px 24px 48px}
section{margin-top:24px}
h2{font-size:20px;margin:0 0 2px}
h3{font-size:15px;margin:0 0 10px;color:#1e293b}
h4{font-size:14px;margin:14px 0 6px}
h5{font-size:12px;margin:10px 0 4px;text-transform:uppercase;letter-spacing:.04em;color:#475569}
.muted{color:#64748b;font-weight:normal}
.path{margin:0 0 10px;font-size:12px;word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:16px 18px;box-shadow:0 1px 2px rgba(15,23,42,.05);min-width:0}
.card.wide{margin-top:16px}
img.curves{width:100%;height:auto;display:block}
img.scatter{width:360px;max-width:100%;height:auto;display:block}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e2e8f0;text-align:left;vertical-align:top}
thead th{background:#f8fafc;color:#334155;font-weight:600;border-bottom:2px solid #cbd5e1}
table.num td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}
table.kv td:first-child{color:#475569;white-space:nowrap}
table.kv td:not(:first-child){overflow-wrap:anywhere}
.pair{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.scroll{overflow-x:auto;max-width:100%;min-width:0}
table.confusion td{text-align:center;min-width:44px;font-variant-numeric:tabular-nums;border:1px solid #fff}
table.confusion td.diag{font-weight:700}
table.confusion th.pred{font-size:12px;text-align:center}
table.confusion th.true{font-size:12px;background:#f8fafc}
table.confusion th.corner{font-size:11px;color:#64748b;font-weight:normal}
table.examples{width:100%;table-layout:fixed}
table.examples th:nth-child(1){width:56px}
table.examples th:nth-child(3),table.examples th:nth-child(4){width:14%}
table.examples th:nth-child(5){width:92px}
table.examples th:nth-child(6){width:64px}
table.examples.no-confidence th:nth-child(5){width:64px}
table.examples td{overflow-wrap:anywhere}
table.kv{width:100%}
table.examples td:nth-child(n+5),table.examples th:nth-child(n+5){text-align:right;font-variant-numeric:tabular-nums}
table.examples .text{display:block;max-width:640px}
.wrong{color:#b91c1c;font-weight:600}
.task{border-top:1px solid #f1f5f9;padding-top:4px}
"""
