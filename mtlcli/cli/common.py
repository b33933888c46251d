"""What every command shares: consoles, and turning a UserError into one line and exit code 2."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer
from rich.console import Console

from mtlcli.errors import UserError

console = Console()
err_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    # soft_wrap keeps the message on one line however narrow the terminal is
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True)


def print_warning(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {_escape(message)}", soft_wrap=True, markup=True)


def handles_errors(command: Callable) -> Callable:
    """Run a command; a UserError becomes 'error: ...' on stderr and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mtlcli.registry import set_warning_handler

        set_warning_handler(print_warning)  # a broken plugin is one line on stderr, not a traceback
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            print_error(_escape(str(exc)))
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def is_terminal() -> bool:
    return console.is_terminal and sys.stdout.isatty()
