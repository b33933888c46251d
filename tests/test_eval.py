"""mtl eval through the CLI: agreement with training's validation, a hand-computed case, errors."""

from __future__ import annotations

import json
import math
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from conftest import sample_rows, write_csv
from mtlcli.model.checkpoint import save_checkpoint

PNG = b"\x89PNG\r\n\x1a\n"


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_eval_agrees_with_the_validation_metrics_training_logged(cli, trained_run):
    run, val_csv = trained_run
    result = cli("eval", run, val_csv, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    summary = json.loads((run / "summary.json").read_text())
    best = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["epoch"] == summary["best_epoch"])
    assert report["n"] == 60
    assert set(report["tasks"]) == {"class_label", "sentiment_label"}
    assert report["loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    for task, r in report["tasks"].items():
        assert r["loss"] == pytest.approx(best[f"val_{task}_loss"], rel=1e-6)
        assert r["accuracy"] == best[f"val_{task}_acc"]
        assert r["macro_f1"] == best[f"val_{task}_f1"]
        assert sum(map(sum, r["confusion_matrix"])) == r["n"] == 60
        assert set(r["per_class"]) == set(r["labels"])


@pytest.fixture
def constant_run(trained_run, tmp_path) -> Path:
    """A copy of the run whose heads ignore the text: logits are the bias, so every number is known.

    class_label bias [ln 2, 0, 0] -> p = [1/2, 1/4, 1/4], always 'electronics';
    sentiment_label bias [0, 0, ln 3] -> p = [1/5, 1/5, 3/5], always 'positive'.
    """
    run = Path(shutil.copytree(trained_run[0], tmp_path / "constant"))
    path = run / json.loads((run / "summary.json").read_text())["best_checkpoint"]
    ckpt = torch.load(path, weights_only=True)
    for task, bias in (("class_label", [math.log(2), 0, 0]), ("sentiment_label", [0, 0, math.log(3)])):
        ckpt["model"][f"heads.{task}.out.weight"].zero_()
        ckpt["model"][f"heads.{task}.out.bias"] = torch.tensor(bias, dtype=torch.float32)
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    return run


def test_eval_matches_a_hand_computation(cli, constant_run, tmp_path):
    data = write_csv(tmp_path / "small.csv", [
        ["The laptop works.", "electronics", "positive"],
        ["The phone broke.", "electronics", "negative"],
        ["The soup was fine.", "food", "positive"],
        ["A nice hotel.", "travel", ""],  # no sentiment label: left out of that task only
    ])
    result = cli("eval", constant_run, data, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 4

    c = report["tasks"]["class_label"]
    assert c["labels"] == ["electronics", "food", "travel"]
    assert c["confusion_matrix"] == [[2, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert c["n"] == 4 and c["accuracy"] == 0.5
    assert c["per_class"]["electronics"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 2})
    assert c["per_class"]["food"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert c["macro_f1"] == pytest.approx(2 / 9)
    assert c["loss"] == pytest.approx(1.5 * math.log(2), rel=1e-6)  # (ln 2 + ln 2 + ln 4 + ln 4) / 4

    s = report["tasks"]["sentiment_label"]
    assert s["confusion_matrix"] == [[0, 0, 1], [0, 0, 0], [0, 0, 2]]
    assert s["n"] == 3 and s["accuracy"] == pytest.approx(2 / 3)
    assert s["per_class"]["positive"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert s["per_class"]["neutral"]["support"] == 0
    assert s["macro_f1"] == pytest.approx(0.4)  # neutral neither occurs nor is predicted: not averaged
    assert s["loss"] == pytest.approx((2 * math.log(5 / 3) + math.log(5)) / 3, rel=1e-6)
    assert report["loss"] == pytest.approx(c["loss"] + s["loss"], rel=1e-6)  # weighted sum, weights 1

    tables = cli("eval", constant_run, data)
    assert tables.exit_code == 0, tables.output
    assert "class_label: accuracy 0.5000, macro-F1 0.2222" in tables.stdout
    assert "sentiment_label: accuracy 0.6667, macro-F1 0.4000" in tables.stdout
    assert "true \\ predicted" in tables.stdout and "electronics" in tables.stdout


def test_out_writes_the_json_and_a_confusion_png_per_task(cli, trained_run, tmp_path):
    run, val_csv = trained_run
    result = cli("eval", run, val_csv, "--json", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report" / "eval.json").read_text()) == json.loads(result.stdout)
    for task in ("class_label", "sentiment_label"):
        assert (tmp_path / "report" / f"confusion_{task}.png").read_bytes()[:8] == PNG


def test_only_tasks_with_a_column_are_scored(cli, trained_run, tmp_path):
    data = write_csv(tmp_path / "s.csv", [["Great phone.", "positive"], ["Awful food.", "negative"]],
                     header=["sentence", "sentiment_label"])
    report = json.loads(cli("eval", trained_run[0], data, "--json").stdout)
    assert list(report["tasks"]) == ["sentiment_label"] and report["tasks"]["sentiment_label"]["n"] == 2


def test_an_unknown_label_names_label_task_and_line(cli, trained_run, tmp_path):
    data = write_csv(tmp_path / "u.csv", [["Great phone.", "electronics", "positive"],
                                          ["A fine match.", "sports", "positive"],
                                          ["Awful food.", "food", "negative"]])
    line = one_error_line(cli("eval", trained_run[0], data))
    assert "u.csv:3" in line and "'sports'" in line and "'class_label'" in line

    result = cli("eval", trained_run[0], data, "--json", "--ignore-unknown")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tasks"]["class_label"]["n"] == 2  # the row is left out of class_label only
    assert report["tasks"]["sentiment_label"]["n"] == 3
    assert report["ignored"] == {"class_label": {"sports": 1}}
    assert "ignored 1 row(s) of task 'class_label'" in result.stderr


def test_whole_number_labels_written_as_floats_are_the_learned_labels(cli, tiny_model, tmp_path):
    """A column of whole numbers with a gap, as pandas writes it (5.0, empty), scores as the learned 5."""
    rows = [[row[0], str(i % 3 + 3)] for i, row in enumerate(sample_rows(120))]
    data = write_csv(tmp_path / "stars.csv", rows, header=["sentence", "stars"])
    result = cli("train", data, "--model", tiny_model, "--epochs", "1", "--precision", "fp32", "--quiet", "--name", "stars")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "stars"
    assert json.loads((run / "labels.json").read_text()) == {"stars": ["3", "4", "5"]}
    held_out = [[row[0], str(i % 3 + 3)] for i, row in enumerate(sample_rows(160)[120:])]
    as_ints = write_csv(tmp_path / "ints.csv", held_out, header=["sentence", "stars"])
    as_floats = write_csv(tmp_path / "floats.csv", [[text, f"{float(stars):.1f}"] for text, stars in held_out]
                          + [["A row without stars.", ""]], header=["sentence", "stars"])
    want = cli("eval", run, as_ints, "--json")
    got = cli("eval", run, as_floats, "--json")
    assert want.exit_code == 0 and got.exit_code == 0, got.output
    want, got = json.loads(want.stdout)["tasks"]["stars"], json.loads(got.stdout)["tasks"]["stars"]
    assert got["n"] == want["n"] == 40
    assert got["confusion_matrix"] == want["confusion_matrix"] and got["accuracy"] == want["accuracy"]
    # a float that is not a whole number is still a label the run never saw
    odd = write_csv(tmp_path / "odd.csv", [["Some text.", "4.5"]], header=["sentence", "stars"])
    assert "label '4.5' of task 'stars' is not one the model knows" in one_error_line(cli("eval", run, odd))


def test_a_whole_number_as_a_float_is_read_as_the_learned_label_only_where_unambiguous():
    from mtlcli.tasks.classification import as_known

    assert as_known("5.0", {"5", "6"}) == as_known("5.00", {"5"}) == as_known("5", {"5"}) == "5"
    assert as_known("-2.0", {"-2"}) == "-2" and as_known("0.0", {"0"}) == "0"
    assert as_known("5.0", {"5", "5.0"}) == "5.0"  # the run learned 5.0 as a label of its own
    assert as_known("5.5", {"5"}) == "5.5" and as_known("5.0", {"6"}) == "5.0" and as_known("1e1", {"10"}) == "1e1"
    assert as_known("x.0", {"x"}) == "x.0"


def test_no_task_column_is_an_error(cli, trained_run, tmp_path):
    data = write_csv(tmp_path / "t.csv", [["Great phone."]], header=["sentence"])
    assert "no column for any task" in one_error_line(cli("eval", trained_run[0], data))


def _broken(run: Path) -> None:
    """A checkpoint cut short, as a full disk leaves it."""
    whole = next(run.glob("checkpoints/best_epoch_*.pt")).read_bytes()
    (run / "checkpoints" / "best.pt").write_bytes(whole[: len(whole) // 2])


def _foreign(run: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, run / "checkpoints" / "best.pt")


def _pickled_code(run: Path) -> None:
    torch.save({"format": "mtl-checkpoint", "config": Fraction(1, 3)}, run / "checkpoints" / "best.pt")


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("damage, expected", [
    (_broken, "not a readable checkpoint"),
    (_foreign, "not an mtl checkpoint"),
    (_pickled_code, "refused to load"),
])
def test_bad_checkpoints_are_one_line(cli, trained_run, tmp_path, command, damage, expected):
    run = Path(shutil.copytree(trained_run[0], tmp_path / "r"))
    damage(run)
    for good in run.glob("checkpoints/best_epoch_*.pt"):
        good.unlink()
    (run / "summary.json").write_text(json.dumps({"best_checkpoint": "checkpoints/best.pt"}))
    args = [trained_run[1]] if command == "eval" else ["Some text."]
    assert expected in one_error_line(cli(command, run, *args))


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_missing_run_and_run_without_checkpoint(cli, trained_run, tmp_path, command):
    args = [trained_run[1]] if command == "eval" else ["Some text."]
    assert "no such run folder" in one_error_line(cli(command, tmp_path / "nope", *args))
    run = Path(shutil.copytree(trained_run[0], tmp_path / "young"))
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()
    assert "no checkpoint yet" in one_error_line(cli(command, run, *args))


def test_confusion_png_names_cannot_leave_the_out_folder(tmp_path):
    from mtlcli.reports.eval_files import write_report

    cm = [[1, 0], [0, 1]]
    report = {"tasks": {"../../escape": {"confusion_matrix": cm, "labels": ["a", "b"], "n": 2}}}
    written = write_report(report, tmp_path / "out")
    assert all(p.parent == tmp_path / "out" for p in written)
    assert [p.name for p in (tmp_path / "out").glob("confusion_*.png")] == ["confusion__.._escape.png"]


def test_a_misspelled_run_folder_names_the_closest_run(cli, trained_run):
    runs = trained_run[0].parent
    for command in (["eval", runs / "tinny", trained_run[1]], ["predict", runs / "tinny", "Some text."]):
        line = one_error_line(cli(*command))
        assert f"{runs / 'tinny'}: no such run folder" in line
        assert f"; did you mean {runs / 'tiny'}? (runs in {runs}: latest, tiny)" in line


REASONS = ["Can't Tell", "Cancelled Flight", "Customer Service Issue", "Late Flight", "Lost Luggage",
           "Flight Booking Problems"]


def test_confusion_matrix_at_80_columns_keeps_similar_labels_apart(cli, tiny_model, tmp_path, monkeypatch):
    from rich.console import Console

    from mtlcli.cli import eval_cmd

    rows = [[row[0], REASONS[i % len(REASONS)]] for i, row in enumerate(sample_rows(120))]
    data = write_csv(tmp_path / "reasons.csv", rows, header=["sentence", "reason"])
    trained = cli("train", data, "--model", tiny_model, "--epochs", "1", "--batch-size", "16", "--precision", "fp32",
                  "--quiet", "--name", "reasons")
    assert trained.exit_code == 0, trained.output
    monkeypatch.setattr(eval_cmd, "console", Console(width=80))
    result = cli("eval", tmp_path / "runs" / "reasons", data)
    assert result.exit_code == 0, result.output
    matrix = result.stdout[result.stdout.index("confusion matrix"):]
    assert "…" not in matrix and max(len(line) for line in matrix.splitlines()) <= 80
    for n, label in enumerate(sorted(REASONS), 1):  # columns by number, each row's label in full after it
        assert f"{n} {label}" in matrix
