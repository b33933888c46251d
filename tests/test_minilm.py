"""The bundled all-MiniLM-L6-v2, trained end to end through the CLI on a few dozen rows."""

from __future__ import annotations

import json

import pytest

from conftest import sample_rows, write_csv

pytestmark = pytest.mark.slow  # trains the real 22M-parameter model


def test_bundled_minilm_trains_end_to_end(cli, tmp_path):
    data = write_csv(tmp_path / "few.csv", sample_rows(48))
    result = cli("train", data, "--epochs", "1", "--batch-size", "16", "--name", "mini")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "mini"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["model"].endswith("model")
    config = json.loads((run / "backbone" / "config.json").read_text())
    assert config["hidden_size"] == 384 and config["num_hidden_layers"] == 6
    row = json.loads((run / "metrics.jsonl").read_text())
    assert 0.0 <= row["val_class_label_acc"] <= 1.0 and row["val_loss"] > 0
    assert "epoch 1 | train_loss" in result.output  # plain lines when not on a terminal
