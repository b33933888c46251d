"""Help at any terminal width with every option name whole.

Typer lays out an options panel as a Rich table whose columns may all shrink; on a narrow terminal
(80 columns) Rich shrinks the name columns too and cuts names with an ellipsis (``--attention-drop…``),
so the one thing a reader needs from the help is gone. Here the name columns keep their width and
the type and help columns take the squeeze (a word of help wider than its column is still cut). A switch's second name (``--no-normalize``) goes under its first rather than in a column of its own,
which leaves the help about 20 more characters on every line.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

SQUEEZABLE = 2  # the last columns of an options row: its type and its help; the others hold names


class _WholeNamesTable(Table):
    def add_row(self, *renderables, **kwargs) -> None:
        cells = list(renderables)
        if len(cells) in (6, 7) and all(isinstance(c, Text) for c in cells[-6:-2]):
            # an options row: [required,] long names, short names, second long names, second short names, type, help
            first, second = cells[-6], cells[-4]
            if second.plain:
                cells[-6], cells[-4] = Text("\n").join([first, second]), Text("")
        super().add_row(*cells, **kwargs)  # creates the columns on the first row
        for column, cell in zip(self.columns[:-SQUEEZABLE], cells[:-SQUEEZABLE]):
            column.no_wrap = True  # Rich shrinks the columns that may wrap first
            # and, where that is not enough, every column: not below its longest name
            widest = max((len(line) for line in getattr(cell, "plain", "").split("\n")), default=0)
            column.min_width = max(column.min_width or 0, widest)


def _whole_names() -> None:
    # Typer builds its tables with the name Table of its rich_utils module, which it imports only to
    # show help; this is the one place its layout can be changed.
    from typer import rich_utils

    rich_utils.Table = _WholeNamesTable


class Command(TyperCommand):
    def format_help(self, ctx, formatter) -> None:
        _whole_names()
        return super().format_help(ctx, formatter)


class Group(TyperGroup):
    def format_help(self, ctx, formatter) -> None:
        _whole_names()
        return super().format_help(ctx, formatter)
