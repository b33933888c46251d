"""mtl plugins: every component of every kind, where it comes from, and whether it loads."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from mtlcli.cli.common import choices_metavar, console, handles_errors, option
from mtlcli.errors import UserError
from mtlcli.registry import KINDS, singular


def _kind(value: str | None) -> list[str]:
    if value is None:
        return list(KINDS)
    for kind in KINDS:  # "head", "heads", "loss-combiner" all name one kind
        if value.replace("-", "_") in (kind, singular(kind)):
            return [kind]
    raise UserError(f"--kind {value}: not one of {', '.join(KINDS)}")


def component_rows(kinds: list[str]) -> list[dict[str, Any]]:
    """One row per component, plugins imported and checked; a failure is a row, not a crash."""
    import mtlcli.components  # noqa: F401  (the built-ins are listed too)
    import mtlcli.tasks  # noqa: F401
    from mtlcli.registry import REGISTRIES

    rows = []
    for kind in kinds:
        registry = REGISTRIES[kind]
        for entry in registry.entries(load=True):
            problem = registry.problem(entry)
            rows.append({"kind": kind, "name": entry.name, "source": entry.source, "version": entry.version,
                         "target": entry.target, "status": "failed" if problem else "ok", "error": problem})
    return rows


@handles_errors
def plugins(
    kind: Annotated[Optional[str], option("--kind", metavar=choices_metavar(KINDS), help="Only this kind (head, loss-combiner and the like work too).", default="every kind")] = None,
    as_json: Annotated[bool, option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List the components (built-in and from installed plugins) and whether each loads.

    A plugin that fails is shown as failed with the reason, and `mtl train` keeps working with the
    others; set MTL_STRICT_PLUGINS=1 to make any broken plugin an error.
    """
    rows = component_rows(_kind(kind))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="mtl components")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("from")  # a package and its version may wrap onto two lines
    table.add_column("status", overflow="fold")  # a long reason folds rather than being cut
    for row in rows:
        origin = "built-in" if row["source"] == "built-in" else f"{row['source']} {row['version']}"
        status = "[green]ok[/]" if row["error"] is None else f"[red]failed[/]: {_escape(row['error'])}"
        table.add_row(row["kind"], row["name"], origin, status)
    console.print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
