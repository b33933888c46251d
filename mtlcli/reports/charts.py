"""Charts for the HTML report (learning curves, a value task's predictions against the truth):
matplotlib figures as SVG data URIs (text stays text, so a
chart is a few tens of kB and sharp at any zoom; each is its own document, so ids never clash)."""

from __future__ import annotations

import base64
import io
from typing import Any

from mtlcli.reports.plots import Bests, draw_predicted, epoch_axis, names_of
from mtlcli import vocabulary as vocab

Rows = list[dict[str, Any]]
STYLE = {
    "svg.fonttype": "none", "svg.hashsalt": "mtl",  # text as text; the same input gives the same bytes
    "font.family": "sans-serif", "font.sans-serif": ["Helvetica", "Arial", "DejaVu Sans", "Liberation Sans"],
    "font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#94a3b8",
    "axes.titlesize": 10, "axes.titleweight": "bold", "axes.titlelocation": "left", "grid.color": "#e2e8f0",
    "xtick.color": "#475569", "ytick.color": "#475569", "legend.frameon": False, "legend.fontsize": 8,
}
RUN_COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563"]


def panels(rows: Rows) -> list[tuple[str, list[str]]]:
    """(title, metric keys): the combined loss, then each of each task's scores (loss, accuracy,
    macro-F1), for every task of any of the rows (runs compared may have different tasks)."""
    names = names_of(rows)
    out = [("combined loss", vocab.keys_of(names, None, vocab.LOSS))]
    for t in vocab.tasks(names):
        out += [(f"{t}: {m.label}", vocab.keys_of(names, t, m)) for m in vocab.metrics(names, t)]
    return out


def curves_svg(series: dict[str, Rows], chart_panels: list[tuple[str, list[str]]], bests: Bests, columns: int = 4) -> str:
    """One figure, a panel per metric; several runs overlay (a colour per run, training dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        cols = min(columns, len(chart_panels))
        nrows = -(-len(chart_panels) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.5 * nrows), squeeze=False)
        for ax, (title, keys) in zip(axes.flat, chart_panels):
            for i, (run, rows) in enumerate(series.items()):
                color = RUN_COLORS[i % len(RUN_COLORS)]
                drawn = False
                for key in keys:
                    points = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
                    if not points:
                        continue
                    train = vocab.split_of(key) == vocab.TRAIN
                    who = vocab.TRAIN if train else vocab.VAL
                    label = who if len(series) == 1 else f"{run} {who}"
                    ax.plot(*zip(*points), color="#94a3b8" if train and len(series) == 1 else color,
                            linestyle="--" if train else "-", marker="s" if train else "o", markersize=3,
                            linewidth=1.4, label=label)
                    drawn = True
                best = bests.get(run)
                if best is not None and drawn:  # a run without this metric gets no marker here either
                    ax.axvline(best, color=color, linestyle=":", linewidth=1)
            ax.set_title(title)
            epoch_axis(ax, series)
            ax.grid(True, linewidth=0.6)
            if ax.lines:
                ax.legend(loc="best")
        for ax in list(axes.flat)[len(chart_panels):]:
            ax.set_visible(False)
        return _svg(fig)


def _svg(fig) -> str:
    """The figure as an SVG data URI (drawn under ``STYLE``), and closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})  # no date: the same run gives the same page
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def predicted_svg(points: dict[str, list[float]]) -> str:
    """A value task's validation rows: predicted against true, a dot per row, the diagonal dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(3.6, 3.6))
        draw_predicted(ax, points["true"], points["predicted"])
        ax.set_title("predicted vs true")
        ax.grid(True, linewidth=0.6)
        return _svg(fig)


def objective_svg(trials: list[dict[str, Any]], best: int | None) -> str:
    """A study's finished trials: the objective against the trial number (pruned ones hollow, the best ringed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 2.8))
        for state, face in (("complete", RUN_COLORS[0]), ("pruned", "none")):
            shown = [t for t in trials if t["state"] == state and t.get("value") is not None]
            ax.scatter([t["number"] for t in shown], [t["value"] for t in shown], s=28, facecolors=face,
                       edgecolors=RUN_COLORS[0], label=state)
        top = [t for t in trials if t["number"] == best]
        if top:
            ax.scatter([top[0]["number"]], [top[0]["value"]], s=120, facecolors="none", edgecolors=RUN_COLORS[1],
                       label="best")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel("objective")
        ax.grid(True, linewidth=0.6)
        ax.legend(loc="lower right")
        return _svg(fig)
