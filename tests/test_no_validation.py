"""--val-split 0: every row trains for all the epochs; no validation, no early stopping, and the
kept best checkpoint is the last epoch's."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import sample_rows, write_csv
from mtlcli import vocabulary as vocab


@pytest.fixture(scope="module")
def unvalidated(tiny_model, tmp_path_factory):
    """3 epochs with patience 1 (which a validated run of so few rows would stop early at) on 100
    rows with a multi-label column; (run, its training rows, the output)."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("no-val")
    tag_sets = ["fast|cheap", "slow", "[]", "cheap", "fast", "slow|cheap"]
    rows = [[text, topic, sentiment, tag_sets[i % 6]] for i, (text, topic, sentiment) in enumerate(sample_rows(100))]
    data = write_csv(folder / "data.csv", rows, ["sentence", "class_label", "sentiment_label", "tags"])
    result = CliRunner().invoke(app, [
        "train", str(data), "--val-split", "0", "--epochs", "3", "--patience", "1", "--out", str(folder / "runs"),
        "--name", "all", "--model", tiny_model, "--batch-size", "16", "--lr-backbone", "1e-3", "--lr-heads", "3e-3",
        "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "all", rows, result.output


def test_every_row_trains_for_every_epoch_and_the_last_is_kept(unvalidated):
    run, rows, output = unvalidated
    assert "Training on 100 rows, no validation (--val-split 0: the last epoch is kept)" in output
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2, 3]  # no early stopping
    assert all(vocab.split_of(k) != vocab.VAL for r in logged for k in r)  # and no validation scores
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_rule"] == "last epoch (--val-split 0: no validation)"
    assert summary["best_epoch"] == summary["epochs_run"] == 3 and summary["stopped_early"] is False
    assert summary["best_val_loss"] is None and "task_checks" not in summary
    assert summary["best_checkpoint"] == "checkpoints/best_epoch_3.pt"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["best_epoch_3.pt"]
    assert summary["best_metrics"] == logged[-1]
    assert "Kept the last epoch, 3 of 3 (no validation: --val-split 0), training scores:" in output
    assert "epoch 3 | train_loss " in output and "class_label train acc " in output


def test_multilabel_thresholds_stay_at_their_default(unvalidated):
    run = unvalidated[0]
    best = torch.load(run / "checkpoints" / "best_epoch_3.pt", weights_only=True)
    assert best["task_types"]["tags"]["params"]["thresholds"] == [0.5, 0.5, 0.5]


def test_plot_and_report_cope_without_validation(cli, unvalidated, tmp_path):
    run = unvalidated[0]
    assert (run / "plots" / "learning_curves.png").stat().st_size > 0
    drawn = cli("plot", run)
    assert drawn.exit_code == 0, drawn.output
    assert "train_loss" in drawn.output and "val_loss" not in drawn.output
    result = cli("report", run, "-o", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert "no validation analysis" in result.output and "--val-split 0" in result.output
    html = (tmp_path / "r.html").read_text()
    assert "the last: no validation (--val-split 0)" in html
    assert "none (--val-split 0: every row trains; the last epoch is kept)" in html


def test_a_split_of_zero_is_accepted_and_below_zero_is_not(cli, small_csv, train_args):
    result = cli("train", small_csv, *train_args, "--val-split", "-0.1")
    assert result.exit_code == 2 and "--val-split -0.1: must be 0 (no validation) or between 0 and 1" in result.output
