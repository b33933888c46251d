"""One vocabulary of metric keys; one best epoch in training, `mtl plot` and `mtl report`; one
scoring routine for `mtl eval` and the report's validation analysis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import sample_rows, write_csv
from mtlcli import vocabulary as vocab


def rows_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_every_key_training_logs_reads_back_and_is_spelled_the_same(trained_run):
    row = rows_of(trained_run[0])[0]
    assert vocab.tasks(row) == ["class_label", "sentiment_label"]
    parsed = {k: vocab.parse(k) for k in row}
    for name, key in parsed.items():
        if key is not None:
            assert vocab.key(*key) == name
    assert {k for k, v in parsed.items() if v is None} == {"epoch", "lr_backbone", "lr_heads", "seconds",
                                                           "train_seconds", "train_sentences_per_s"}
    assert parsed["val_loss"] == (vocab.VAL, None, vocab.LOSS)
    assert parsed["val_class_label_f1"] == (vocab.VAL, "class_label", vocab.MACRO_F1)
    assert vocab.metrics(row, "class_label", vocab.TRAIN) == [vocab.LOSS, vocab.ACCURACY]
    assert vocab.task_metrics(row, vocab.VAL) == [vocab.LOSS, vocab.ACCURACY, vocab.MACRO_F1]
    assert vocab.headline(row, "sentiment_label") == vocab.ACCURACY
    assert vocab.of_split(row, vocab.VAL) == {k: v for k, v in row.items() if k.startswith("val_")}


def test_a_task_whose_name_has_underscores_or_a_metric_word():
    assert vocab.parse("train_my_loss_task_acc") == (vocab.TRAIN, "my_loss_task", vocab.ACCURACY)
    assert vocab.parse("val_loss_loss") == (vocab.VAL, "loss", vocab.LOSS)
    assert vocab.parse("test_x_acc") == (vocab.TEST, "x", vocab.ACCURACY)  # --test FILE's scores
    assert vocab.parse("dev_x_acc") is None and vocab.parse("val_x_speed") is None


def test_the_best_epoch_is_early_stoppings_not_the_lowest_loss():
    losses = [(1, 1.0), (2, 0.95), (3, 0.9), (4, float("nan"))]
    assert vocab.best_epoch(losses) == 3
    assert vocab.best_epoch(losses, min_delta=0.06) == 3  # 0.95 is not 0.06 below 1.0; 0.9 is
    assert vocab.best_epoch(losses, min_delta=0.2) == 1
    assert vocab.best_epoch([(1, float("nan"))]) is None and vocab.best_epoch([]) is None


@pytest.fixture(scope="module")
def strict_run(tiny_model, tmp_path_factory):
    """4 epochs with --min-delta 10: no epoch after the first counts as an improvement, however low
    its loss, so training keeps epoch 1 while the lowest validation loss comes later."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("strict")
    rows = sample_rows()
    data = write_csv(folder / "data.csv", rows[:120])
    val = write_csv(folder / "val.csv", rows[120:180])
    result = CliRunner().invoke(app, [
        "train", str(data), "--val", str(val), "--model", tiny_model, "--epochs", "4", "--patience", "4",
        "--min-delta", "10", "--batch-size", "16", "--lr-backbone", "1e-3", "--lr-heads", "3e-3",
        "--precision", "fp32", "--quiet", "--out", str(folder / "runs"), "--name", "strict"])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "strict"


@pytest.mark.parametrize("in_progress", [False, True])
def test_plot_and_report_name_the_epoch_training_kept(cli, strict_run, tmp_path, in_progress):
    import shutil

    run = Path(shutil.copytree(strict_run, tmp_path / "strict"))
    rows = rows_of(run)
    lowest = min(rows, key=lambda r: r["val_loss"])["epoch"]
    kept = json.loads((run / "summary.json").read_text())["best_epoch"]
    assert kept == 1 and lowest != kept  # the two definitions disagree on this run
    if in_progress:  # as while it trains: no summary yet, only config.yaml's --min-delta
        (run / "summary.json").unlink()

    plot = cli("plot", run)
    assert plot.exit_code == 0, plot.output
    assert f"loss (best epoch {kept})" in plot.stdout

    report = cli("report", run, "-o", tmp_path / "r.html")
    assert report.exit_code == 0, report.output
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"<td>best epoch</td><td>{kept}</td>" in html
    assert f"Epoch <b>{kept}</b>: validation loss <b>{rows[kept - 1]['val_loss']:.4f}</b>" in html


def test_the_reports_task_loss_is_evals_under_the_runs_objective(cli, tiny_model, tmp_path):
    rows = sample_rows()
    data = write_csv(tmp_path / "data.csv", rows[:120])
    val = write_csv(tmp_path / "val.csv", rows[120:180])
    trained = cli("train", data, "--val", val, "--model", tiny_model, "--epochs", "2", "--batch-size", "16",
                  "--lr-backbone", "1e-3", "--lr-heads", "3e-3", "--precision", "fp32", "--quiet",
                  "--class-weight", "balanced", "--label-smoothing", "0.1", "--out", tmp_path / "runs", "--name", "w")
    assert trained.exit_code == 0, trained.output
    run = tmp_path / "runs" / "w"
    assert json.loads((run / "summary.json").read_text())["class_weights"]  # the objective is not a plain one

    scored = cli("eval", run, val, "--json")
    assert scored.exit_code == 0, scored.output
    evaluated = json.loads(scored.stdout)["tasks"]
    report = cli("report", run, "-o", tmp_path / "w.html")
    assert report.exit_code == 0, report.output
    analysis = json.loads((run / "validation.json").read_text())["tasks"]
    html = (tmp_path / "w.html").read_text(encoding="utf-8")
    best = json.loads((run / "summary.json").read_text())["best_metrics"]
    for task, r in analysis.items():
        assert r["loss"] == evaluated[task]["loss"]
        assert r["loss"] == pytest.approx(best[f"val_{task}_loss"], rel=1e-6)
        assert f'loss {r["loss"]:.3f}, n={r["n"]}' in html
        # each example's loss is its weighted, smoothed term, not the plain cross-entropy
        hardest = r["hardest"][0]
        assert hardest["loss"] != pytest.approx(-math.log(hardest["p_true"]), rel=1e-3)
