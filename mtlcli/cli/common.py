"""What every command shares: consoles, option help, and turning any error into one line and exit code 2.

Results (what a command is for: eval's scores, predict's records, plot's charts, plugins' list,
train's final summary, help) go to standard output; progress, warnings, errors and notes about
files written go to standard error, so a pipe carries only the result.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

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


def print_note(message: str) -> None:
    """Progress and notes (a file written, a name chosen): standard error, plain text."""
    err_console.print(message, soft_wrap=True, markup=False, highlight=False)


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


def option_help(text: str, default: str | None = None) -> str:
    """Help with its default, written the same way in every command."""
    return f"{text} (default: {default})" if default is not None else text


def option(*names: str, help: str, default: str | None = None, **settings: Any) -> Any:
    """A command's option; ``default`` is how help shows the default (Typer's own display is off)."""
    return typer.Option(*names, help=option_help(help, default), show_default=False, **settings)


def argument(metavar: str, help: str) -> Any:
    return typer.Argument(metavar=metavar, help=help, show_default=False)


def choice_option(*names: str, choices: tuple[str, ...], help: str, default: str | None = None) -> Any:
    """An option that takes one of ``choices``, listed in help."""
    return option(*names, help=help, default=default, parser=choice(choices), metavar=choices_metavar(choices))


def device_option(help: str = "Where to run: auto (CUDA when present), cpu or cuda.") -> Any:
    from mtlcli.config import DEVICES

    return choice_option("--device", choices=DEVICES, help=help, default="auto")


def precision_option(help: str) -> Any:
    from mtlcli.config import PREDICT_PRECISIONS

    return choice_option("--precision", choices=("run", *PREDICT_PRECISIONS), help=help, default="run")


def whole_number_option(*names: str, help: str, default: str | None = None, low: int | None = None,
                        high: int | None = None) -> Any:
    from mtlcli.config import read_whole_number

    return option(*names, help=help, default=default, parser=in_range(read_whole_number, low, high), metavar="N")


def number_option(*names: str, help: str, default: str | None = None, low: float | None = None,
                  high: float | None = None) -> Any:
    from mtlcli.config import read_number

    return option(*names, help=help, default=default, parser=in_range(read_number, low, high), metavar="X")


class BadValue(typer.BadParameter):
    """A value a parser below refused; the usage line shows it after the flag."""

    def __init__(self, value: str, problem: str):
        super().__init__(problem)
        self.value = value


def choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A parser that takes one of ``choices`` (``name:N`` stands for name:0, name:1, ...)."""
    from mtlcli.config import is_choice

    def parse(value: str) -> str:
        if not is_choice(value, choices):
            raise BadValue(value, f"must be one of {', '.join(choices)}")
        return value

    return parse


def in_range(read: Callable[[str], Any], low: float | None = None, high: float | None = None) -> Callable[[str], Any]:
    """A parser: ``read`` the text (config.read_whole_number, config.read_number), then check the range."""

    def parse(text: Any) -> Any:
        if not isinstance(text, str):  # a default, already a value
            return text
        try:
            value = read(text)
        except ValueError as exc:
            raise BadValue(text, str(exc)) from None
        if low is not None and value < low:
            raise BadValue(text, f"must be at least {low}")
        if high is not None and value > high:
            raise BadValue(text, f"must be at most {high}")
        return value

    return parse


def choices_metavar(choices: tuple[str, ...]) -> str:
    return "[" + "|".join(choices) + "]"


def click_errors():
    """The module of the Click exceptions Typer raises: its own copy of Click since Typer 0.29, Click before."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def usage_line(exc) -> str:
    """A Click usage error as one line: a bad value names the flag and the value, as the value errors of
    the commands do; an unknown option, command or missing argument points at the command's help."""
    errors = click_errors()
    if (isinstance(exc, errors.BadParameter) and not isinstance(exc, errors.MissingParameter)
            and exc.param is not None):
        value = f" {exc.value}" if isinstance(exc, BadValue) else ""
        return " ".join(f"{_name_of(exc.param)}{value}: {exc.message}".split()).rstrip(".")
    message = " ".join(exc.format_message().split()).rstrip(".")
    command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "mtl"
    return f"{message[:1].lower()}{message[1:]} (see {command} -h)"


def _name_of(param) -> str:
    """--flag for an option (its first name), NAME for an argument."""
    return param.opts[0] if param.param_type_name == "option" else param.human_readable_name


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
