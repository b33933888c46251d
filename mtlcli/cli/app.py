"""The `mtl` command: composed from one module per command. Heavy imports happen inside commands."""

from __future__ import annotations

import gc
import logging
import os
import sys

import typer

from mtlcli import __version__
from mtlcli.cli import (eval_cmd, export_cmd, plot_cmd, plugins_cmd, predict_cmd, report_cmd, serve_cmd, tidy_cmd,
                        train_cmd, tune_cmd)
from mtlcli.cli.help_layout import Command, Group


class OneLineErrors(Group):
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
    help="Multi-task fine-tuning of sentence transformers: train, tune, evaluate, predict, plot, report, export, serve and tidy.",
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


app.command("train", cls=Command)(train_cmd.train)
app.command("tune", cls=Command)(tune_cmd.tune)
app.command("eval", cls=Command)(eval_cmd.eval_)
app.command("predict", cls=Command)(predict_cmd.predict)
app.command("plot", cls=Command)(plot_cmd.plot)
app.command("report", cls=Command)(report_cmd.report)
app.command("plugins", cls=Command)(plugins_cmd.plugins)
app.command("export", cls=Command)(export_cmd.export)
app.command("serve", cls=Command)(serve_cmd.serve)
app.command("tidy", cls=Command)(tidy_cmd.tidy)


def main() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # not one of several torchrun processes
        try:
            app()
        finally:
            # The process ends here. Python's last collection would walk every object left (torch
            # alone: 0.25 s of a 2 s `mtl predict RUN "text"`) to free memory the process gives back
            # anyway; frozen objects are skipped. Files and trackers are closed by then (atexit runs first).
            gc.freeze()
        return
    # A process under torchrun ends with os._exit once its command is over and its output is out.
    # The interpreter's own teardown would free torch.distributed's objects after their threads:
    # now and then that aborts the process ("terminate called without an active exception"), and
    # torchrun answers by stopping the other processes while they still save the run.
    try:
        app()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
