"""The `mtl` command: composed from one module per command. Heavy imports happen inside commands."""

from __future__ import annotations

import typer

from mtlcli import __version__
from mtlcli.cli import eval_cmd, export_cmd, plot_cmd, plugins_cmd, predict_cmd, report_cmd, serve_cmd, train_cmd

app = typer.Typer(
    name="mtl",
    help="Multi-task fine-tuning of sentence transformers: train, evaluate, predict, plot, report, export and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def main() -> None:
    app()
