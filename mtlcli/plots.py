"""Learning curves: PNG with matplotlib, and charts drawn in the terminal with plotext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Series = dict[str, list[dict[str, Any]]]  # run name -> its metrics rows


def tasks_of(rows: list[dict[str, Any]]) -> list[str]:
    keys = rows[0].keys() if rows else []
    return [k[len("val_"):-len("_acc")] for k in keys if k.startswith("val_") and k.endswith("_acc")]


def default_panels(rows: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(title, metric keys) per panel: the combined loss, then each task's accuracy."""
    panels = [("loss", ["train_loss", "val_loss"])]
    panels += [(f"{t} accuracy", [f"train_{t}_acc", f"val_{t}_acc"]) for t in tasks_of(rows)]
    return panels


def best_epoch(rows: list[dict[str, Any]]) -> int | None:
    finite = [r for r in rows if r.get("val_loss") == r.get("val_loss")]  # NaN != NaN
    return min(finite, key=lambda r: r["val_loss"])["epoch"] if finite else None


def write_png(series: Series, panels: list[tuple[str, list[str]]], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for run, rows in series.items():
            for key in keys:
                xs = [r["epoch"] for r in rows if key in r]
                ys = [r[key] for r in rows if key in r]
                label = key if len(series) == 1 else f"{run}: {key}"
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
            best = best_epoch(rows)
            if best is not None:
                ax.axvline(best, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def terminal_chart(series: Series, title: str, keys: list[str], width: int | None = None, height: int = 15) -> str:
    """One chart as text (no colour codes), with the best epoch marked by a vertical line."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width or 80, height)
    for run, rows in series.items():
        for key in keys:
            xs = [r["epoch"] for r in rows if key in r and r[key] == r[key]]
            ys = [r[key] for r in rows if key in r and r[key] == r[key]]
            if xs:
                plt.plot(xs, ys, label=key if len(series) == 1 else f"{run}: {key}", marker="braille")
        best = best_epoch(rows)
        if best is not None and len(series) == 1:
            plt.vline(best)
    plt.title(title + (f" (best epoch {best_epoch(next(iter(series.values())))})" if len(series) == 1 else ""))
    plt.xlabel("epoch")
    return plt.uncolorize(plt.build())
