"""The `mtl` command: composed from one module per command. Heavy imports happen inside commands."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from mtlcli import __version__
from mtlcli.cli import (eval_cmd, export_cmd, plot_cmd, plugins_cmd, predict_cmd, report_cmd, serve_cmd, tidy_cmd,
                        train_cmd)


class OneLineErrors(TyperGroup):
    """Usage errors in any command are one line on stderr, 'error: ...', exit code 2, like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from rich.markup import escape
        from mtlcli.cli.common import click_errors, print_error, usage_line

        errors = click_errors()
        no_args = getattr(errors, "NoArgsIsHelpError", ())  # older Click prints the help and exits 0 itself
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except no_args as exc:  # plain `mtl`: the help is what was asked for
            help_text = exc.format_message()  # empty when Typer's rich help has printed itself already
            if help_text.strip():
                typer.echo(help_text)
            code = 0
        except errors.ClickException as exc:
            print_error(escape(usage_line(exc)))
            code = 2
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="mtl",
    cls=OneLineErrors,
    help="Multi-task fine-tuning of sentence transformers: train, evaluate, predict, plot, report, export, serve and tidy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Multi-task fine-tuning of sentence transformers."""


app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.eval_)
app.command("predict")(predict_cmd.predict)
app.command("plot")(plot_cmd.plot)
app.command("report")(report_cmd.report)
app.command("plugins")(plugins_cmd.plugins)
app.command("export")(export_cmd.export)
app.command("serve")(serve_cmd.serve)
app.command("tidy")(tidy_cmd.tidy)


def main() -> None:
    app()
