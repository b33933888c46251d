"""mtl plot through the CLI: terminal charts, overlays, --metric, a PNG with one panel per metric."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def panels_size(n: int) -> tuple[int, int]:
    """What write_png draws for n panels: up to 3 a row, each 5 x 3.6 inches at 110 dpi."""
    cols, rows = min(3, n), -(-n // 3)
    return 550 * cols, 396 * rows


def copy_run(trained_run, where: Path) -> Path:
    return Path(shutil.copytree(trained_run[0], where))


def test_draws_loss_and_accuracy_in_a_plain_terminal(cli, trained_run):
    result = cli("plot", trained_run[0])
    assert result.exit_code == 0, result.output
    best = json.loads((trained_run[0] / "summary.json").read_text())["best_epoch"]
    out = result.stdout
    assert f"loss (best epoch {best})" in out
    assert "class_label accuracy" in out and "sentiment_label accuracy" in out
    assert "train_loss" in out and "val_loss" in out and "val_class_label_acc" in out
    assert "\x1b[" not in out  # no colour codes outside a terminal


def test_runs_latest_as_written_and_a_run_in_progress(cli, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "runs" / "young")
    (tmp_path / "runs" / "latest").symlink_to("young", target_is_directory=True)
    # as it looks after its first epoch: one metrics line, no summary yet
    first = (run / "metrics.jsonl").read_text().splitlines()[0]
    (run / "metrics.jsonl").write_text(first + "\n")
    (run / "summary.json").unlink()
    result = cli("plot", "runs/latest")
    assert result.exit_code == 0, result.output
    assert "loss (best epoch 1)" in result.stdout


def test_several_runs_overlay_with_their_names(cli, trained_run, tmp_path):
    a = copy_run(trained_run, tmp_path / "a")
    b = copy_run(trained_run, tmp_path / "b")
    result = cli("plot", a, b, "--metric", "loss")
    assert result.exit_code == 0, result.output
    for name in ("a: train_loss", "a: val_loss", "b: train_loss", "b: val_loss"):
        assert name in result.stdout
    best = json.loads((a / "summary.json").read_text())["best_epoch"]
    assert result.stdout.count(f"(best epoch a {best}, b {best})") == 1  # one chart, each run's best epoch


def test_metric_picks_charts_and_names_unknown_ones(cli, trained_run):
    result = cli("plot", trained_run[0], "-m", "class_label_f1", "-m", "val_loss")
    assert result.exit_code == 0, result.output
    assert "class_label_f1" in result.stdout and "val_class_label_f1" in result.stdout
    assert "class_label accuracy" not in result.stdout
    bad = cli("plot", trained_run[0], "--metric", "speed")
    assert bad.exit_code == 2
    assert "--metric speed" in bad.output and "class_label_acc" in bad.output


@pytest.mark.parametrize("metrics, panels", [([], 3), (["loss", "class_label_acc", "sentiment_label_acc", "class_label_f1"], 4)])
def test_png_is_a_real_image_with_a_panel_per_metric(cli, trained_run, tmp_path, metrics, panels):
    args = [a for m in metrics for a in ("--metric", m)]
    result = cli("plot", trained_run[0], *args, "--png", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    assert png_size(tmp_path / "curves.png") == panels_size(panels)
    assert f"{panels} panels" in result.stderr and not result.stdout  # a note about a file written, not a result


def test_a_run_without_epochs_or_a_missing_run_is_one_line(cli, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "new")
    (run / "metrics.jsonl").unlink()
    result = cli("plot", run)
    assert result.exit_code == 2 and "no epoch finished yet" in result.output
    result = cli("plot", tmp_path / "nothing")
    assert result.exit_code == 2 and "no such run folder" in result.output


@pytest.fixture(scope="module")
def one_epoch_runs(tiny_model, tmp_path_factory):
    """Two runs of one epoch each with different tasks: 'a' class_label and sentiment_label, 'b' mood."""
    from typer.testing import CliRunner

    from conftest import sample_rows, write_csv
    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("one-epoch")
    rows = sample_rows(80)
    data = {"a": write_csv(folder / "a.csv", rows),
            "b": write_csv(folder / "b.csv", [[r[0], r[2]] for r in rows], header=["sentence", "mood"])}
    for name, path in data.items():
        result = CliRunner().invoke(app, ["train", str(path), "--out", str(folder), "--name", name, "--model", tiny_model,
                                          "--epochs", "1", "--precision", "fp32", "--quiet"])
        assert result.exit_code == 0, result.output
    return folder / "a", folder / "b"


@pytest.fixture
def saved_axes(monkeypatch):
    """Each figure saved, as the list of its learning-curve panels when it is saved (matplotlib's own
    objects, read before the file is written): title, x tick labels, legend entries, labelled curves."""
    from matplotlib.figure import Figure

    seen: list[dict] = []
    save = Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()  # ticks as they are drawn
        seen.append([])
        for ax in fig.axes:
            if ax.get_visible() and ax.get_xlabel() == "epoch":
                legend = ax.get_legend()
                seen[-1].append({"title": ax.get_title("left") or ax.get_title(),
                             "ticks": [t.get_text() for t in ax.get_xticklabels() if t.get_text()],
                             "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
                             "curves": [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")
                                        and len(ln.get_xdata())]})
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return seen


def test_png_of_runs_with_different_tasks_shows_every_task_on_whole_epochs(cli, one_epoch_runs, tmp_path, saved_axes):
    a, b = one_epoch_runs
    result = cli("plot", a, b, "--png", tmp_path / "ab.png")
    assert result.exit_code == 0, result.output
    [figure] = saved_axes
    panels = {p["title"]: p for p in figure}
    assert list(panels) == ["loss", "class_label accuracy", "sentiment_label accuracy", "mood accuracy"]
    assert panels["mood accuracy"]["curves"] == ["b: train_mood_acc", "b: val_mood_acc"]
    assert panels["class_label accuracy"]["curves"] == ["a: train_class_label_acc", "a: val_class_label_acc"]
    assert panels["loss"]["curves"] == ["a: train_loss", "a: val_loss", "b: train_loss", "b: val_loss"]
    for panel in figure:
        assert panel["legend"] == panel["curves"], panel  # a legend entry for each curve drawn, and only those
        assert panel["ticks"] == ["1"], panel  # one epoch: one whole tick, not 0.95 ... 1.05
    assert png_size(tmp_path / "ab.png") == panels_size(4)


def test_report_of_runs_with_different_tasks_charts_every_task_on_whole_epochs(cli, one_epoch_runs, tmp_path,
                                                                             saved_axes):
    a, b = (Path(shutil.copytree(run, tmp_path / run.name)) for run in one_epoch_runs)
    result = cli("report", a, b, "-o", tmp_path / "ab.html")
    assert result.exit_code == 0, result.output
    assert len(saved_axes) == 3  # each run's curves, and the comparison's
    for panel in (p for figure in saved_axes for p in figure):
        assert panel["legend"] == panel["curves"], panel
        assert panel["ticks"] == ["1"], panel
    # the comparison: every task of both runs, each run's curves where it has them
    [compared] = [{p["title"]: p["curves"] for p in figure} for figure in saved_axes
                  if any(c.startswith("b ") for p in figure for c in p["curves"])
                  and any(c.startswith("a ") for p in figure for c in p["curves"])]
    assert compared["mood: accuracy"] == ["b train", "b val"]
    assert compared["sentiment_label: accuracy"] == ["a train", "a val"]
    assert compared["combined loss"] == ["a train", "a val", "b train", "b val"]


def test_terminal_charts_of_runs_with_different_tasks(cli, one_epoch_runs):
    a, b = one_epoch_runs
    result = cli("plot", *one_epoch_runs)
    assert result.exit_code == 0, result.output
    charts = re.split(r"(?m)^ *epoch *$", result.stdout)  # each chart ends with its axis label
    titles = [c.strip().splitlines()[0].split(" (best")[0].strip() for c in charts if c.strip()]
    assert titles == ["loss", "class_label accuracy", "sentiment_label accuracy", "mood accuracy"]
    mood = charts[3]
    assert "b: val_mood_acc" in mood and "a: " not in mood and "(best epoch b 1)" in mood
    for chart in charts[:4]:
        axis = chart.rstrip().splitlines()[-1]  # the line of epoch numbers under the chart
        assert axis.split() == ["1"], chart
