"""What a person reads about a run with a class, a multi-label and a regression column: the start and
epoch lines of `mtl train`, its summary tables, `mtl eval` (text, --json, --out), `mtl plot` and
`mtl report`, each showing every task's own metrics, with the numbers training logged."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import sample_rows, write_csv
from mtlcli import vocabulary as vocab

HEADER = ["sentence", "topic", "tags", "rating"]
PNG = b"\x89PNG\r\n\x1a\n"


def mixed_rows(rows: list[list[str]]) -> list[list[str]]:
    """The sample rows as a class column (topic), a tag set (tags: '|'-joined, [] for none) and a
    number with decimals (rating), each following the text, so a model can learn all three."""
    out = []
    for i, (text, topic, sentiment) in enumerate(rows):
        tags = [t for t, on in (("happy", sentiment == "positive"), ("leisure", topic in ("travel", "food")),
                                ("long", len(text) > 80)) if on]
        rating = (4.2 if sentiment == "positive" else 1.8) + (i % 7) / 10
        out.append([text, topic, "|".join(tags) or "[]", f"{rating:.1f}"])
    return out


@pytest.fixture(scope="module")
def mixed_run(tiny_model, tmp_path_factory):
    """(run folder, its validation CSV, what `mtl train` printed): 2 epochs on 160 mixed rows,
    validated on the next 60, with the progress lines a pipe gets."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("mixed")
    rows = mixed_rows(sample_rows(220))
    train_csv = write_csv(folder / "train.csv", rows[:160], HEADER)
    val_csv = write_csv(folder / "val.csv", rows[160:], HEADER)
    result = CliRunner().invoke(app, [
        "train", str(train_csv), "--val", str(val_csv), "--out", str(folder / "runs"), "--name", "mixed",
        "--model", tiny_model, "--epochs", "2", "--batch-size", "16", "--lr-backbone", "1e-3", "--lr-heads", "3e-3",
        "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "mixed", val_csv, result.output


def best_row(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if r["epoch"] == summary["best_epoch"])


# ---- mtl train ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_start_names_each_tasks_type_and_why_and_how_to_change_it(mixed_run):
    output = mixed_run[2]
    assert "  topic: classification, 3 labels (one label per cell)" in output
    assert re.search(r"  tags: multilabel, 3 labels \(\d+ distinct cells hold several labels joined by '\|'\)", output)
    assert "  rating: regression (every cell is a number, some with decimals)" in output
    assert "--task-type TASK=TYPE sets it (classification, multilabel, regression)" in output


@pytest.mark.slow
def test_the_epoch_line_shows_each_tasks_metrics_by_their_names(mixed_run):
    run, _, output = mixed_run
    line = next(line for line in output.splitlines() if line.startswith("epoch 2 |"))
    best = best_row(run)
    assert f"topic acc {best['val_topic_acc']:.3f} macro-F1 {best['val_topic_f1']:.3f}" in line
    assert (f"tags macro-F1 {best['val_tags_f1']:.3f} micro-F1 {best['val_tags_microf1']:.3f} "
            f"samp-F1 {best['val_tags_samplesf1']:.3f} subset {best['val_tags_subsetacc']:.3f}") in line
    assert (f"rating RMSE {best['val_rating_rmse']:.3f} MAE {best['val_rating_mae']:.3f} "
            f"Spearman {best['val_rating_spearman']:.3f} R² {best['val_rating_r2']:.3f}") in line
    assert "microf1" not in line and "subsetacc" not in line


@pytest.mark.slow
def test_the_summary_is_a_table_per_type_within_80_columns(mixed_run):
    run, _, output = mixed_run
    summary = output[output.index("Best epoch"):]
    assert "None" not in summary and "…" not in summary
    assert all(len(line) <= 80 for line in summary.splitlines() if not line.startswith(("warning:", "Run saved")))
    for title in ("classification", "multilabel", "regression"):
        assert re.search(rf"^{title}\s*$", summary, re.M)
    best = best_row(run)
    row = next(line for line in summary.splitlines() if line.startswith("│ rating"))
    assert [float(v) for v in re.findall(r"-?\d+\.\d{4}", row)] == pytest.approx(
        [best[vocab.key(vocab.VAL, "rating", m)] for m in vocab.REGRESSION], abs=5e-5)


def test_best_tables_group_tasks_by_their_metrics():
    from mtlcli.cli.progress import best_tables

    row = {"val_a_loss": 1.0, "val_a_acc": 0.5, "val_a_f1": 0.4, "val_b_loss": 0.3, "val_b_rmse": 0.2,
           "val_c_loss": 0.9, "val_c_acc": 0.6, "val_c_f1": 0.5}
    tables = best_tables(row, {"a": "classification", "b": "regression", "c": "classification"})
    assert [t.title for t in tables] == ["classification", "regression"]
    assert [[c.header for c in t.columns] for t in tables] == [["task", "loss", "acc", "macro-F1"],
                                                               ["task", "loss", "RMSE"]]
    assert [t.row_count for t in tables] == [2, 1]


# ---- mtl eval -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_eval_json_gives_each_types_metrics_equal_to_the_logged_best_epoch(cli, mixed_run):
    run, val_csv, _ = mixed_run
    result = cli("eval", run, val_csv, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    best = best_row(run)
    assert report["loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    types = {"topic": "classification", "tags": "multilabel", "rating": "regression"}
    assert {t: r["type"] for t, r in report["tasks"].items()} == types
    for task, r in report["tasks"].items():
        assert r["n"] == 60
        logged = vocab.metrics(best, task, vocab.VAL)
        assert logged == list({"classification": vocab.CLASSIFICATION, "multilabel": vocab.MULTILABEL,
                               "regression": vocab.REGRESSION}[types[task]])
        for m in logged:
            assert r[m.name] == pytest.approx(best[vocab.key(vocab.VAL, task, m)], rel=1e-6, abs=1e-9), (task, m)
    tags = report["tasks"]["tags"]
    assert tags["labels"] == ["happy", "leisure", "long"] and len(tags["thresholds"]) == 3
    assert set(tags["per_label"]) == set(tags["labels"])
    assert {"precision", "recall", "f1", "support"} == set(tags["per_label"]["happy"])
    assert "confusion_matrix" not in tags and "confusion_matrix" not in report["tasks"]["rating"]
    assert sum(map(sum, report["tasks"]["topic"]["confusion_matrix"])) == 60


@pytest.mark.slow
def test_eval_text_shows_each_types_scores_and_tables(cli, mixed_run):
    run, val_csv, _ = mixed_run
    report = json.loads(cli("eval", run, val_csv, "--json").stdout)
    result = cli("eval", run, val_csv)
    assert result.exit_code == 0, result.output
    out = result.stdout
    topic, tags, rating = (report["tasks"][t] for t in ("topic", "tags", "rating"))
    assert (f"topic: accuracy {topic['accuracy']:.4f}, macro-F1 {topic['macro_f1']:.4f}, "
            f"loss {topic['loss']:.4f} (classification, n=60)") in out
    assert (f"tags: macro-F1 {tags['macro_f1']:.4f}, micro-F1 {tags['micro_f1']:.4f}, "
            f"samples-F1 {tags['samples_f1']:.4f}, subset accuracy {tags['subset_accuracy']:.4f}, "
            f"loss {tags['loss']:.4f} (multilabel, n=60)") in out
    assert (f"rating: RMSE {rating['rmse']:.4f}, MAE {rating['mae']:.4f}, Spearman {rating['spearman']:.4f}, "
            f"R² {rating['r2']:.4f}, loss {rating['loss']:.4f} (regression, n=60)") in out
    assert out.count("confusion matrix") == 1  # the class task's only
    tags_part = out[out.index("tags: macro-F1"):out.index("rating: RMSE")]
    assert "threshold" in tags_part
    for label, threshold in zip(tags["labels"], tags["thresholds"]):
        line = next(line for line in tags_part.splitlines() if f" {label} " in line)
        assert f"{threshold:.3f}" in line and str(tags["per_label"][label]["support"]) in line


@pytest.mark.slow
def test_eval_out_writes_a_picture_per_task_as_its_type_shows_best(cli, mixed_run, tmp_path):
    run, val_csv, _ = mixed_run
    result = cli("eval", run, val_csv, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["confusion_topic.png", "eval.json", "labels_tags.png", "predicted_rating.png"]
    for name in files:
        if name.endswith(".png"):
            assert (tmp_path / "out" / name).read_bytes()[:8] == PNG


# ---- mtl plot -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_plot_draws_each_tasks_headline_and_any_metric_of_its_type(cli, mixed_run, tmp_path):
    run = mixed_run[0]
    result = cli("plot", run, "--width", "60")
    assert result.exit_code == 0, result.output
    for title in ("loss", "topic accuracy", "tags macro-F1", "rating RMSE"):
        assert f"{title} (best epoch" in result.stdout
    picked = cli("plot", run, "--metric", "rating_mae", "--metric", "tags_microf1", "--metric", "rating_r2")
    assert picked.exit_code == 0, picked.output
    assert "val_rating_mae" in picked.stdout and "val_tags_microf1" in picked.stdout and "val_rating_r2" in picked.stdout
    png = cli("plot", run, "--png", tmp_path / "curves.png")
    assert png.exit_code == 0 and (tmp_path / "curves.png").read_bytes()[:8] == PNG
    assert "4 panels: loss, topic accuracy, tags macro-F1, rating RMSE" in png.output


def test_plot_metric_help_lists_every_types_metrics(cli):
    result = cli("plot", "--help")
    text = " ".join(result.stdout.split())
    for m in vocab.CLASSIFICATION + vocab.MULTILABEL + vocab.REGRESSION:
        assert re.search(rf"\b{m.suffix}\b", text), m.suffix


@pytest.mark.slow
def test_a_one_epoch_run_has_whole_epochs_on_its_x_axis(cli, mixed_run, tmp_path):
    import shutil

    run = tmp_path / "one"
    shutil.copytree(mixed_run[0], run, symlinks=True)
    first = (run / "metrics.jsonl").read_text().splitlines()[0]
    (run / "metrics.jsonl").write_text(first + "\n")
    (run / "summary.json").unlink()
    result = cli("plot", run, "--metric", "loss", "--width", "60")
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip().splitlines()
    assert lines[-1].strip() == "epoch" and lines[-2].split() == ["1"]  # one tick, at the one epoch


def test_a_png_axis_of_one_epoch_shows_that_epoch_only():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtlcli.reports import plots

    fig, ax = plt.subplots()
    ax.plot([1], [0.5])
    plots.epoch_axis(ax, {"run": [{"epoch": 1, "val_loss": 0.5}]})
    assert list(ax.get_xticks()) == [1] and ax.get_xlim() == (0, 2)
    plt.close(fig)
    assert plots.epoch_ticks([1, 2, 3]) == [1, 2, 3]
    assert plots.epoch_ticks(list(range(1, 41))) == list(range(1, 41, 5))


# ---- mtl report ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_shows_per_label_scores_a_regression_chart_and_the_runs_numbers(cli, mixed_run, tmp_path):
    import shutil

    run = tmp_path / "mixed"
    shutil.copytree(mixed_run[0], run, symlinks=True)
    result = cli("report", run, "-o", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    best = best_row(run)
    validation = json.loads((run / "validation.json").read_text())
    tags, rating = validation["tasks"]["tags"], validation["tasks"]["rating"]

    # the validation analysis scores as training did
    for task, r in validation["tasks"].items():
        for m in vocab.metrics(best, task, vocab.VAL):
            assert r[m.name] == pytest.approx(best[vocab.key(vocab.VAL, task, m)], rel=1e-4, abs=1e-9), (task, m)
    assert len(rating["points"]["true"]) == len(rating["points"]["predicted"]) == 60

    # a line of scores per task, by type
    assert (f"multilabel: macro-F1 {best['val_tags_f1']:.3f}, micro-F1 {best['val_tags_microf1']:.3f}, "
            f"samples-F1 {best['val_tags_samplesf1']:.3f}, subset accuracy {best['val_tags_subsetacc']:.3f}") in html
    assert f"regression: RMSE {best['val_rating_rmse']:.3f}, MAE {best['val_rating_mae']:.3f}" in html

    # the per-label table, with thresholds
    assert html.count('<table class="num per-label">') == 1
    assert "<th>threshold</th>" in html
    for label, threshold in zip(tags["labels"], tags["thresholds"]):
        c = tags["per_label"][label]
        assert (f"<td>{label}</td><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td><td>{c['f1']:.3f}</td>"
                f"<td>{c['support']}</td><td>{threshold:.3f}</td>") in html

    # one confusion matrix (the class task), one predicted-vs-true chart (the regression task)
    assert html.count('<table class="confusion">') == 1
    scatter = re.findall(r'<img class="scatter"[^>]*src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(scatter) == 1 and ET.fromstring(base64.b64decode(scatter[0])).tag.endswith("svg")

    # the best epoch: a table per type, no empty cells
    best_card = html[html.index('id="run-1-best"'):html.index('id="run-1-validation"')]
    assert "&ndash;" not in best_card
    assert f"<td>rating</td><td>{best['val_rating_loss']:.4f}</td><td>{best['val_rating_rmse']:.4f}</td>" in best_card

    # the data: a regression column's values, a multi-label column's label counts
    data = validation["data"]
    assert set(data["train"]["rating"]["values"]) == {"mean", "std", "min", "max"}
    assert f"<td>mean</td><td>{data['train']['rating']['values']['mean']:.4f}</td>" in html
    happy = sum("happy" in row[2].split("|") for row in mixed_rows(sample_rows(220))[:160])
    assert data["train"]["tags"]["labels"]["happy"] == happy
    assert f"<td>happy</td><td>{happy}</td>" in html

    # the examples: no "most confidently wrong" list where the type has no confidence
    examples = html[html.index('id="run-1-examples"'):]
    assert examples.count("Most confidently wrong") == 1
    for e in tags["hardest"]:  # a set reads the same however its labels were ranked
        assert (e["true"] == e["predicted"]) == (set(e["true"].split(", ")) == set(e["predicted"].split(", ")))
    rating_examples = examples[examples.index("<h4>rating</h4>"):]
    assert 'class="wrong"' not in rating_examples  # a value is never exactly right: no red
