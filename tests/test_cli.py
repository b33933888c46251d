"""What every command shares: -h, one-line usage errors on stderr with exit code 2, help that shows
choices and defaults the same way, and results on stdout apart from notes on stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["train", "eval", "predict", "plot", "report", "plugins", "export", "serve", "tidy"]


def mtl(*args, cwd=None, columns: int = 100) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mtlcli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def one_line_on_stderr(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["train", "--epochs", "abc"], "--epochs abc: expected a whole number"),
    (["train", "x.csv", "--device", "gpu"], "--device gpu: must be one of auto, cpu, cuda"),
    (["train", "--epoch", "3"], "no such option: --epoch"),
    (["eval"], "missing argument 'RUN'"),
    (["predict", "runs/x", "a text", "--top-k", "0"], "--top-k 0: must be at least 1"),
    (["predict", "runs/x", "a text", "--min-score", "-1"], "--min-score -1: must be at least 0"),
    (["tidy"], "missing argument 'PATH...'"),
    (["export", "runs/x", "--format", "zip", "--out", "o"], "--format zip: must be one of sentence-transformers, onnx"),
    (["serve", "runs/x", "--port", "http"], "--port http: expected a whole number"),
    (["nope"], "no such command 'nope'"),
])
def test_usage_errors_are_one_line_on_stderr_naming_the_flag(args, needle, tmp_path):
    assert needle in one_line_on_stderr(mtl(*args, cwd=tmp_path))


def test_h_is_help_everywhere_and_bare_mtl_shows_help():
    for args in (["-h"], [], *([c, "-h"] for c in COMMANDS)):
        result = mtl(*args)
        assert result.returncode == 0 and result.stdout.count("Usage:") == 1 and result.stderr == "", (args, result.stderr)


def option_names(command: str | None) -> list[str]:
    """Every name of every option of ``mtl COMMAND`` (of ``mtl`` itself for None), as Click declares them."""
    import typer

    from mtlcli.cli.app import app

    group = typer.main.get_command(app)
    cmd = group if command is None else group.commands[command]
    return [name for param in cmd.params for name in (*param.opts, *param.secondary_opts) if name.startswith("-")]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_at_80_columns_shows_every_option_name_whole(command):
    result = mtl(*([] if command is None else [command]), "-h", columns=80)
    assert result.returncode == 0, result.stderr
    assert max(map(len, result.stdout.splitlines())) <= 80
    names = option_names(command) + ["-h", "--help"]  # the help option is the context's, not a parameter
    assert len(names) >= 3
    for name in names:  # the whole name, not a prefix of it cut with an ellipsis
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w…-])", result.stdout), (command, name, result.stdout)
    assert not re.search(r"-[\w-]*…", result.stdout), result.stdout


def test_help_lists_choices_and_defaults_one_way():
    def help_of(command: str) -> str:
        return mtl(command, "-h", columns=400).stdout  # wide: no help text wraps

    train = help_of("train")
    assert "[auto|cpu|cuda|cuda:N]" in train and "[auto|fp32|bf16|fp16]" in train
    assert "(default: 3)" in train and "(default: 5e-05)" in train and "(default: a timestamp)" in train
    predict = help_of("predict")
    assert "[table|csv|jsonl]" in predict and "[run|auto|fp32|bf16|fp16|int8]" in predict and "(default: run)" in predict
    assert "[sentence-transformers|onnx]" in help_of("export")
    for command in COMMANDS:
        assert "[default:" not in help_of(command), command


def test_results_on_stdout_notes_on_stderr(trained_run, tmp_path):
    run, val = trained_run
    scored = mtl("eval", run, val, "--json", "--out", tmp_path / "eval")
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout.startswith("{") and scored.stderr.startswith("wrote ")
    drawn = mtl("plot", run, "--png", tmp_path / "curves.png")
    assert drawn.returncode == 0 and drawn.stdout == "" and drawn.stderr.startswith("wrote ")


def test_every_config_key_is_in_the_docs_with_its_flag():
    from mtlcli.config import SETTINGS, flag_of

    text = (Path(__file__).resolve().parents[1] / "docs" / "train.md").read_text(encoding="utf-8")
    for key in SETTINGS:
        assert f"| `{key}`" in text or f", `{key}`" in text, key
        assert f"`{flag_of(key)}" in text, key
