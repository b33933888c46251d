"""Learning curves: PNG with matplotlib, and charts drawn in the terminal with plotext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtlcli.atomic import replacing
from mtlcli.errors import UserError
from mtlcli import vocabulary as vocab

Series = dict[str, list[dict[str, Any]]]  # run name -> its metrics rows
Bests = dict[str, int | None]  # run name -> its best epoch, as training names it


def load_series(paths: list[str]) -> tuple[Series, Bests]:
    """Each run's metrics rows and best epoch, keyed by the run's folder name; a run in progress is fine."""
    from mtlcli import runs

    series: Series = {}
    bests: Bests = {}
    seen: set[Path] = set()
    for given in paths:
        run = runs.resolve_run(given)
        if run in seen:
            continue
        seen.add(run)
        log = run / "metrics.jsonl"
        rows = runs.read_metrics(log) if log.is_file() else []
        if not rows:
            raise UserError(f"{given}: no epoch finished yet (metrics.jsonl is missing or empty)")
        name = run.name if run.name not in series else f"{run.parent.name}/{run.name}"
        name = name if name not in series else str(given)
        series[name] = rows
        bests[name] = best_epoch(rows, _read(run / "summary.json"), _read(run / "config.yaml"))
    return series, bests


def best_epoch(rows: list[dict[str, Any]], summary: dict[str, Any], config: dict[str, Any]) -> int | None:
    """The run's best epoch as training named it: summary.json's once it covers these rows (the run
    ended), else early stopping's rule replayed on them with the run's --min-delta (in progress)."""
    last = rows[-1].get(vocab.EPOCH) if rows else None
    if summary.get("epochs_run") == last and isinstance(summary.get("best_epoch"), int):
        return summary["best_epoch"] or None
    min_delta = config.get("min_delta")
    min_delta = float(min_delta) if _is_number(min_delta) else 0.0
    return vocab.best_epoch(((r.get(vocab.EPOCH), r[vocab.VAL_LOSS]) for r in rows if _is_number(r.get(vocab.VAL_LOSS))),
                     min_delta)


def _read(path: Path) -> dict[str, Any]:
    """A run's summary.json or config.yaml as a dict; {} when it is missing or unreadable."""
    import json

    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def names_of(rows: list[dict[str, Any]]) -> list[str]:
    """Every key the rows hold, in the order they first appear: runs compared may have different tasks."""
    return list(dict.fromkeys(k for r in rows for k in r))


def default_panels(rows: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(title, metric keys) per panel: the combined loss, then each task's headline score (accuracy),
    for every task of any of the rows."""
    names = names_of(rows)
    panels = [(vocab.LOSS.label, vocab.keys_of(names, None, vocab.LOSS))]
    for t in vocab.tasks(names):
        metric = vocab.headline(names, t)
        if metric is not None:
            panels.append((f"{t} {metric.label}", vocab.keys_of(names, t, metric)))
    return panels


def metric_panels(rows: list[dict[str, Any]], names: list[str]) -> list[tuple[str, list[str]]]:
    """A panel per name: a key of metrics.jsonl (``val_loss``), or a name whose keys on each split
    are drawn together (``loss``, ``class_label_acc``)."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k != vocab.EPOCH and _numeric(rows, k)]
    panels = []
    for name in names:
        pair = [k for k in (vocab.on_split(split, name) for split in vocab.SPLITS) if k in keys]
        if name in keys:
            panels.append((name, [name]))
        elif pair:
            panels.append((name, pair))
        else:
            families = dict.fromkeys(vocab.without_split(k) for k in keys)
            raise UserError(f"--metric {name}: not in metrics.jsonl (metrics: {', '.join(families)}; "
                            f"or a full key such as {vocab.VAL_LOSS})")
    return panels


def _numeric(rows: list[dict[str, Any]], key: str) -> bool:
    return all(isinstance(r[key], (int, float)) for r in rows if key in r)


def write_png(series: Series, panels: list[tuple[str, list[str]]], path: str | Path, bests: Bests) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for i, (run, rows) in enumerate(series.items()):
            drawn = False
            for key in keys:
                xs = [r["epoch"] for r in rows if key in r]
                ys = [r[key] for r in rows if key in r]
                if not xs:  # this run has no such metric (another task): no curve, no legend entry
                    continue
                label = key if len(series) == 1 else f"{run}: {key}"
                # several runs: a colour per run; training dashed with squares, validation solid with dots
                train = vocab.split_of(key) == vocab.TRAIN
                style = {} if len(series) == 1 else {"color": f"C{i}", "linestyle": "--" if train else "-"}
                ax.plot(xs, ys, marker="s" if train and style else "o", markersize=3, label=label, **style)
                drawn = True
            best = bests.get(run)
            if best is not None and drawn:
                ax.axvline(best, color="grey" if len(series) == 1 else f"C{i}", linestyle=":", linewidth=1)
        ax.set_title(title)
        epoch_axis(ax, series)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def epochs_of(series: Series) -> list[int]:
    """Every epoch the runs have rows for, in order."""
    return sorted({r[vocab.EPOCH] for rows in series.values() for r in rows if isinstance(r.get(vocab.EPOCH), int)})


def epoch_ticks(epochs: list[int], most: int = 8) -> list[int]:
    """Whole epochs to mark on an axis, at most about ``most`` of them, first and last included."""
    if not epochs:
        return []
    low, high = epochs[0], epochs[-1]
    step = max(1, -(-(high - low) // most))
    return list(range(low, high + 1, step))


def epoch_axis(ax, series: Series) -> None:
    """A matplotlib axis of whole epochs; a single epoch sits in the middle (not on 0.945 ... 1.050)."""
    from matplotlib.ticker import MaxNLocator

    epochs = epochs_of(series)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.set_xticks(epochs)


TEXT_MARKERS = ("•", "x", "+", "o", "*", "#", "@", "%")  # lines stay apart without colour


def terminal_chart(series: Series, title: str, keys: list[str], bests: Bests, width: int | None = None,
                   height: int = 15, color: bool = False) -> str:
    """One chart as text, with the best epoch marked by a vertical line; colour codes only if asked."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width or 80, height)
    for paint in (plt.canvas_color, plt.axes_color, plt.ticks_color):
        paint("default")  # the terminal's own background and text colour; only the lines are coloured
    n = 0
    drawn = []  # the runs with a curve here: runs compared may have different tasks
    for run, rows in series.items():
        for key in keys:
            xs = [r["epoch"] for r in rows if key in r and r[key] == r[key]]
            ys = [r[key] for r in rows if key in r and r[key] == r[key]]
            if xs:
                marker = TEXT_MARKERS[n % len(TEXT_MARKERS)]
                plt.plot(xs, ys, label=key if len(series) == 1 else f"{run}: {key}", marker=marker)
                n += 1
                drawn += [run] if run not in drawn else []
        best = bests.get(run)
        if best is not None and len(series) == 1:
            plt.vline(best)
    marks = ", ".join(f"{run} {bests[run]}" if len(series) > 1 else str(bests[run])
                      for run in drawn if bests.get(run) is not None)
    plt.title(title + (f" (best epoch {marks})" if marks else ""))
    plt.xlabel("epoch")
    epochs = epochs_of(series)
    if len(epochs) == 1:
        plt.xlim(epochs[0] - 1, epochs[0] + 1)
    plt.xticks(epoch_ticks(epochs))
    chart = plt.build()
    return chart if color else plt.uncolorize(chart)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig, path: str | Path) -> Path:
    path = Path(path)
    with replacing(path) as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def write_confusion_png(cm, labels: list[str], title: str, path: str | Path) -> Path:
    """A confusion matrix (rows: true label, columns: predicted) with the count in each cell."""
    plt = _pyplot()
    size = 1.6 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    high = cm.max() / 2 if cm.size and cm.max() else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if cm[i, j] > high else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save_png(fig, path)


def write_labels_png(per_label: dict[str, dict[str, Any]], thresholds: dict[str, float], title: str,
                     path: str | Path) -> Path:
    """A multi-label task's labels, one row each: precision, recall and F1 as bars, with each label's
    support and threshold beside its name."""
    import numpy as np

    plt = _pyplot()
    labels = list(per_label)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.42 * len(labels)))
    y = np.arange(len(labels))
    for i, (name, color) in enumerate((("precision", "#93c5fd"), ("recall", "#fca5a5"), ("f1", "#2563eb"))):
        ax.barh(y + (i - 1) * 0.27, [per_label[label][name] for label in labels], height=0.27, color=color,
                label="F1" if name == "f1" else name)
    shown = [f"{label} (n={per_label[label]['support']}"
             + (f", t={thresholds[label]:.2f})" if label in thresholds else ")") for label in labels]
    ax.set_yticks(y, shown)
    ax.invert_yaxis()  # the first label on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("score at the label's threshold t")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save_png(fig, path)


def draw_predicted(ax, true: list[float], predicted: list[float]) -> None:
    """A value task's predictions against the truth, one dot per row, on equal axes with the
    diagonal where a perfect model's dots would lie."""
    ax.scatter(true, predicted, s=8, alpha=0.5 if len(true) < 2000 else 0.15, color="#2563eb", linewidths=0)
    values = [*true, *predicted]
    if values:
        low, high = min(values), max(values)
        pad = (high - low) * 0.05 or 0.5
        low, high = low - pad, high + pad
        ax.plot([low, high], [low, high], color="#94a3b8", linestyle="--", linewidth=1)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")


def write_predicted_png(points: dict[str, list[float]], title: str, path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    draw_predicted(ax, points["true"], points["predicted"])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save_png(fig, path)
