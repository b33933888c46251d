"""What `mtl tune` shows while it runs: a live table of this process's trials (plain text at the end
when standard error is not a terminal)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mtlcli.cli.common import print_warning
from mtlcli.training.reporter import Reporter
from mtlcli.tuning.study import Display


class _Warnings(Reporter):
    """A trial's own training shows nothing but its warnings: the table is the display."""

    def warning(self, message: str) -> None:
        print_warning(message)


class TrialTable(Display):
    def __init__(self, console: Console, quiet: bool):
        self.console = console
        self.rows: dict[int, dict[str, Any]] = {}
        self.live = Live(self._table(), console=console, auto_refresh=False, transient=False) if not quiet else None

    def __enter__(self) -> "TrialTable":
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None and self.rows:
            self.live.update(self._table(), refresh=True)
            self.live.stop()

    def trial_start(self, number: int, values: dict[str, Any]) -> None:
        if self.live is not None and not self.rows:  # the table appears with its first trial
            self.live.start()
        self.rows[number] = {"state": "running", "value": None, "values": values, "note": ""}
        self._refresh()

    def validation(self, number: int, step: int, value: float) -> None:
        self.rows[number].update(value=value, note=f"validation {step}")
        self._refresh()

    def trial_end(self, number: int, state: str, value: float | None, note: str) -> None:
        self.rows[number].update(state=state, value=value, note=note)
        self._refresh()

    def training_reporter(self) -> Reporter:
        return _Warnings()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)

    def _table(self) -> Table:
        table = Table(title="trials", title_justify="left")
        table.add_column("trial", justify="right")
        table.add_column("state")
        table.add_column("objective", justify="right")
        table.add_column("settings", overflow="fold")
        table.add_column("note", overflow="fold", max_width=30)
        for number, row in self.rows.items():
            settings = " ".join(f"{k}={_shown(v)}" for k, v in row["values"].items())
            table.add_row(str(number), row["state"], "-" if row["value"] is None else f"{row['value']:.4f}",
                          settings, row["note"])
        return table


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)
