"""mtl plot through the CLI: terminal charts, overlays, --metric, a PNG with one panel per metric."""

from __future__ import annotations

import json
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
