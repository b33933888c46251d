"""mtl plot: learning curves of one or more runs, in the terminal or as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from rich.text import Text

from mtlcli.cli.common import argument, console, handles_errors, option, print_note, whole_number_option
from mtlcli.errors import UserError
from mtlcli import vocabulary as vocab

# what --metric takes besides a whole key: the combined loss, and a task's metric on every split
# (every metric a task type logs, by its suffix in metrics.jsonl)
METRIC_NAMES = (f"{vocab.LOSS.suffix}, or TASK_METRIC with METRIC one of "
                + ", ".join(m.suffix if m.label.lower() == m.suffix else f"{m.suffix} ({m.label})" for m in vocab.METRICS.values()))


@handles_errors
def plot(
    runs: Annotated[list[Path], argument("RUN...", "Run folders (runs/latest works); several overlay in each chart.")],
    metric: Annotated[Optional[list[str]], option("--metric", "-m", metavar="METRIC", help=f"A metric to chart (repeatable): {METRIC_NAMES}, or a key of metrics.jsonl such as {vocab.VAL_LOSS}.", default="loss and each task's headline score: accuracy, macro-F1 or RMSE by its type")] = None,
    png: Annotated[Optional[Path], option("--png", metavar="FILE", help="Write the charts to this PNG (one panel per metric) instead of drawing them.")] = None,
    width: Annotated[Optional[int], whole_number_option("--width", help="Chart width in characters.", default="the terminal's, at most 100", low=20)] = None,
    height: Annotated[int, whole_number_option("--height", help="Chart height in lines.", default="15", low=5)] = 15,
) -> None:
    """Chart loss and each task's scores per epoch from each run's metrics.jsonl, marking the best epoch."""
    from mtlcli.reports import plots

    series, bests = plots.load_series([str(r) for r in runs])
    rows = [row for run_rows in series.values() for row in run_rows]
    panels = plots.metric_panels(rows, metric) if metric else plots.default_panels(rows)
    if png:
        try:
            path = plots.write_png(series, panels, png, bests)
        except OSError as exc:
            raise UserError(f"{png}: cannot write the PNG ({exc.strerror or exc})") from None
        print_note(f"wrote {path} ({len(panels)} panels: {', '.join(t for t, _ in panels)})")
        return
    color = console.is_terminal and console.color_system is not None  # plain text for pipes and NO_COLOR
    for title, keys in panels:
        chart = plots.terminal_chart(series, title, keys, bests, width or min(console.width, 100), height, color)
        console.print(Text.from_ansi(chart), soft_wrap=True)
