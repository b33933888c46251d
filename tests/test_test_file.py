"""--test FILE: scored with the best checkpoint when training ends, into summary.json, the final
table and the report; read and checked as --val is."""

from __future__ import annotations

import json

import pytest

from conftest import sample_rows, write_csv


@pytest.fixture(scope="module")
def tested(tiny_model, tmp_path_factory):
    """A run trained on 120 rows, validated on 40 and tested on 50 others; (run, test file, output)."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("tested")
    rows = sample_rows()
    train = write_csv(folder / "train.csv", rows[:120])
    val = write_csv(folder / "val.csv", rows[120:160])
    test = write_csv(folder / "test.csv", rows[160:210])
    result = CliRunner().invoke(app, [
        "train", str(train), "--val", str(val), "--test", str(test), "--out", str(folder / "runs"), "--name", "t",
        "--model", tiny_model, "--epochs", "3", "--patience", "1", "--batch-size", "16", "--lr-backbone", "1e-3",
        "--lr-heads", "3e-3", "--precision", "fp32", "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "t", test, result.output


def test_summary_holds_the_test_scores_of_the_best_checkpoint_as_eval_gives_them(cli, tested, tmp_path):
    run, test, _ = tested
    summary = json.loads((run / "summary.json").read_text())
    scores = summary["test"]
    assert scores["data"] == str(test.resolve()) and scores["n"] == 50
    assert scores["checkpoint"] == summary["best_checkpoint"] == f"checkpoints/best_epoch_{summary['best_epoch']}.pt"
    assert set(scores["tasks"]) == {"class_label", "sentiment_label"}

    result = cli("eval", run, test, "--json", "--out", tmp_path / "eval")  # the same file, scored afterwards
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert scores["loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
    for task, found in scores["tasks"].items():
        assert set(found) == {"type", "n", "loss", "accuracy", "macro_f1"}
        assert found["n"] == 50
        for metric in ("loss", "accuracy", "macro_f1"):
            assert found[metric] == pytest.approx(evaluated["tasks"][task][metric], rel=1e-5), (task, metric)


def test_the_final_table_shows_the_test_scores(tested):
    run, test, output = tested
    summary = json.loads((run / "summary.json").read_text())
    assert f"Test scores of that checkpoint on 50 rows of {test.resolve()}:" in output
    accuracy = summary["test"]["tasks"]["sentiment_label"]["accuracy"]
    line = next(x for x in output.splitlines() if "sentiment_label" in x and "Test" not in x and x.count("│") > 2
                and output.index(x) > output.index("Test scores"))
    assert f"{accuracy:.4f}" in line


def test_the_report_has_a_test_card(cli, tested, tmp_path):
    run, test, _ = tested
    result = cli("report", run, "-o", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    card = html[html.index('id="run-1-test"'):]
    card = card[:card.index("</div>")]
    summary = json.loads((run / "summary.json").read_text())
    assert "Test set" in card and "50 rows" in card and str(test.resolve()) in card
    assert f"{summary['test']['tasks']['class_label']['macro_f1']:.4f}" in card


def test_without_test_the_summary_has_none(trained_run):
    run, _ = trained_run
    assert "test" not in json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize("rows, needle", [
    ([["A fine hotel.", "travel", "joyful"]], "test.csv:2: label 'joyful' of task 'sentiment_label' is not"),
    (None, "test.csv: file not found"),
])
def test_a_bad_test_file_is_one_line_before_training(cli, small_csv, train_args, tmp_path, rows, needle):
    test = write_csv(tmp_path / "test.csv", rows) if rows else tmp_path / "test.csv"
    result = cli("train", small_csv, *train_args, "--test", test, "--name", "bad")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "runs" / "bad").exists()  # refused before a run folder was made
