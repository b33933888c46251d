"""mtl train end to end through the CLI, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mtlcli.inference.loaded_run import load_run, predict_batches


def test_train_writes_a_complete_run(cli, small_csv, train_args, tmp_path):
    result = cli("train", small_csv, *train_args, "--name", "r1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "r1"
    assert (tmp_path / "runs" / "latest").resolve() == run.resolve()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["epochs"] == 2 and cfg["pooling"] == "mean" and cfg["tasks"] == ["class_label", "sentiment_label"]
    labels = json.loads((run / "labels.json").read_text())
    assert labels == {"class_label": ["electronics", "food", "travel"], "sentiment_label": ["negative", "neutral", "positive"]}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    expected = {"epoch", "lr_backbone", "lr_heads", "seconds", "train_loss", "val_loss"}
    for t in labels:
        expected |= {f"train_{t}_loss", f"train_{t}_acc", f"val_{t}_loss", f"val_{t}_acc", f"val_{t}_f1"}
    assert expected <= set(rows[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 2
    assert summary["best_val_loss"] == min(r["val_loss"] for r in rows)
    assert (run / summary["best_checkpoint"]).is_file()
    assert len(list((run / "checkpoints").glob("best_epoch_*.pt"))) == 1
    png = run / "plots" / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Run saved in" in result.output


def test_best_checkpoint_reloads_to_the_same_predictions(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--name", "r").exit_code == 0
    run = tmp_path / "runs" / "r"
    loaded = load_run(run, device="cpu", precision="fp32")
    texts = ["The laptop is excellent.", "The soup was a huge disappointment. Never again."]
    probs = predict_batches(loaded, texts)
    again = predict_batches(load_run(run, device="cpu", precision="fp32"), texts)
    for task in loaded.label_sets:
        assert probs[task].shape == (2, len(loaded.label_sets[task]))
        assert torch.allclose(torch.tensor(probs[task]), torch.tensor(again[task]))
    # the reloaded model gives what the trained model gave at validation time
    ckpt = torch.load(loaded.checkpoint, weights_only=True)
    summary = json.loads((run / "summary.json").read_text())
    assert ckpt["epoch"] == summary["best_epoch"]


def test_same_seed_gives_the_same_metrics(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--name", "a").exit_code == 0
    assert cli("train", small_csv, *train_args, "--name", "b").exit_code == 0
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if "seconds" not in k and "per_s" not in k}
                       for line in p.read_text().splitlines()]
    assert strip(tmp_path / "runs/a/metrics.jsonl") == strip(tmp_path / "runs/b/metrics.jsonl")


def test_config_file_repeats_the_run_and_flags_win(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--name", "first", "--pooling", "cls").exit_code == 0
    first = tmp_path / "runs" / "first"
    result = cli("train", "--config", first / "config.yaml", "--name", "second", "--epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((tmp_path / "runs/second/config.yaml").read_text())
    assert cfg["pooling"] == "cls" and cfg["epochs"] == 1 and cfg["data"] == str(small_csv.resolve())


def test_never_reuses_a_run_folder(cli, small_csv, train_args):
    assert cli("train", small_csv, *train_args, "--name", "same").exit_code == 0
    result = cli("train", small_csv, *train_args, "--name", "same")
    assert result.exit_code == 2
    assert "exists already" in result.output


def test_partial_labels_train_and_are_left_out_of_metrics(cli, tmp_path, train_args):
    from conftest import sample_rows, write_csv

    rows = sample_rows(160)
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row[2] = ""  # no sentiment label on every third row
    train = write_csv(tmp_path / "partial.csv", rows[:120])
    val = write_csv(tmp_path / "partial_val.csv", rows[120:])
    result = cli("train", train, "--val", val, *train_args, "--name", "p", "--epochs", "1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "p"
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])

    # recompute validation accuracy per task by hand from the saved model, over labelled rows only
    loaded = load_run(run, device="cpu", precision="fp32")
    texts = [r[0] for r in rows[120:]]
    probs = predict_batches(loaded, texts)
    for task, col in (("class_label", 1), ("sentiment_label", 2)):
        labels = loaded.label_sets[task]
        pairs = [(p.argmax(), labels.index(r[col])) for p, r in zip(probs[task], rows[120:]) if r[col]]
        acc = sum(int(a == b) for a, b in pairs) / len(pairs)
        assert metrics[f"val_{task}_acc"] == pytest.approx(acc, abs=1e-9)
    assert sum(1 for r in rows[120:] if r[2]) < len(rows[120:])  # the case really had gaps


def test_a_taken_name_from_a_config_file_gets_the_next_free_one(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--name", "base", "--epochs", "1").exit_code == 0
    saved = tmp_path / "runs" / "base" / "config.yaml"
    again = cli("train", "--config", saved, "--quiet")
    assert again.exit_code == 0, again.output
    assert "run name 'base'" in again.stderr and "this run is 'base-2'" in again.stderr
    assert yaml.safe_load((tmp_path / "runs" / "base-2" / "config.yaml").read_text())["name"] == "base-2"
    typed = cli("train", "--config", saved, "--name", "base", "--quiet")  # typed on the command line: the user's choice
    assert typed.exit_code == 2 and "exists already" in typed.output


def test_the_start_line_names_each_task_type():
    from io import StringIO

    from rich.console import Console

    from mtlcli.cli.progress import PlainReporter

    err = StringIO()
    reporter = PlainReporter(Console(file=StringIO()), Console(file=err, width=400))
    reporter.train_start({"run": "runs/r", "device": "cpu", "precision": "fp32", "train_rows": 8, "val_rows": 2,
                          "cuda_graphs": "--no-cuda-graphs",
                          "tasks": {"topic": ["a", "b"], "tags": ["x", "y", "z"], "stars": []},
                          "task_types": {"topic": {"type": "classification"}, "tags": {"type": "multilabel"},
                                         "stars": {"type": "regression"}}})
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("Training on 8 rows, validating on 2; 3 tasks; device cpu (fp32)")
    assert lines[1:4] == ["  topic: classification, 2 labels", "  tags: multilabel, 3 labels", "  stars: regression"]
    assert lines[4].startswith("  a type not set is read from the cells; --task-type TASK=TYPE sets it (")
