"""Task types: what the cells of a column make it, how to choose another, and the errors on bad cells.

Most cases stop before the model loads (``NO_MODEL``); one tiny run trains a mixed table of every
built-in type with partial labels, and eval reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import sample_rows, write_csv
from mtlcli.data.tables import Labels, read_table
from mtlcli.tasks import columns, metrics
from mtlcli.tasks.multilabel import MultiLabel

NO_MODEL = ["--model", "/nonexistent/model", "--quiet"]
HEADER = ["sentence", "topic", "tags", "score", "stars"]


def cells(*values: str) -> Labels:
    names = list(dict.fromkeys(values))
    return Labels(names, np.array([names.index(v) for v in values], dtype=np.int32))


def one_error(result) -> str:
    """The single `error:` line of a refused command (exit code 2, no traceback)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def mixed_rows(n: int = 90) -> list[list[str]]:
    """A class column, a tag set (some rows with none: ``[]``), a 0-1 score with decimals and star
    ratings 1-5; every type has some empty cells (partial labels)."""
    tag_sets = ["fast|cheap", "slow", "[]", "cheap", "fast", "slow|cheap"]
    out = []
    for i, (text, topic, sentiment) in enumerate(sample_rows(n)):
        score = {"negative": 0.1, "neutral": 0.5, "positive": 0.9}[sentiment] + (i % 7) / 100
        stars = {"negative": "1", "neutral": "3", "positive": "5"}[sentiment] if i % 4 else str(2 + i % 3)
        out.append([text, topic, "" if i % 9 == 4 else tag_sets[i % 6], "" if i % 11 == 5 else f"{score:.2f}",
                    "" if i % 10 == 7 else stars])
    return out


# ---- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values, expected", [
    (["a|b", "a", "c"], "multilabel"),
    (['["a", "b"]', "[]"], "multilabel"),
    (["0.25", "0.5", "1"], "regression"),
    ([str(i) for i in range(30)], "regression"),
    (["1", "2", "3", "4", "5"], "classification"),
    (["red", "green"], "classification"),
])
def test_inference_from_cells(values, expected):
    assert columns.infer(cells(*values), "|")[0] == expected


def test_a_separator_of_ones_own(tmp_path):
    assert columns.infer(cells("a;b", "a"), ";")[0] == "multilabel"
    assert columns.infer(cells("a;b", "a"), "|")[0] == "classification"


def test_the_start_line_names_each_type_and_how_to_change_it(cli, train_args, tmp_path):
    path = write_csv(tmp_path / "mixed.csv", mixed_rows(), HEADER)
    args = [a for a in train_args if a != "--quiet"]
    result = cli("train", path, *args, "--epochs", "1", "--name", "start")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  stars: classification, 5 labels (whole numbers with 5 distinct values, read as classes)" in lines
    assert any(line.startswith("  tags: multilabel, ") for line in lines)
    assert "  score: regression (every cell is a number, some with decimals)" in lines
    assert any("--task-type TASK=TYPE sets it (classification, multilabel, regression)" in line for line in lines)
    assert "stars: classification" in (tmp_path / "runs" / "start" / "config.yaml").read_text()


# ---- refused before the model loads ---------------------------------------------------------------


def test_an_id_column_says_which_column_and_what_to_do(cli, tmp_path):
    rows = [[text, f"r{i:04d}", topic] for i, (text, topic, _) in enumerate(sample_rows(40))]
    path = write_csv(tmp_path / "ids.csv", rows, ["sentence", "review_id", "topic"])
    line = one_error(cli("train", path, *NO_MODEL))
    assert "ids.csv: column 'review_id' has a different value on 40 of its 40 rows, like an identifier" in line
    assert "leave it out (name the tasks to train with --task)" in line
    numbered = [[text, str(1000 + i), topic] for i, (text, topic, _) in enumerate(sample_rows(40))]
    line = one_error(cli("train", write_csv(tmp_path / "n.csv", numbered, ["sentence", "review_id", "topic"]), *NO_MODEL))
    assert "n.csv: column 'review_id' holds a different whole number on each of its 40 rows, like an identifier" in line
    assert "--task-type review_id=regression if it is an amount to predict" in line


def test_an_unknown_type_lists_the_types_and_a_non_task_is_refused(cli, tmp_path):
    path = write_csv(tmp_path / "mixed.csv", mixed_rows(), HEADER)
    line = one_error(cli("train", path, *NO_MODEL, "--task-type", "stars=unknown"))
    assert "--task-type stars=unknown: unknown task type 'unknown' (available: classification, multilabel, " \
           "regression" in line
    line = one_error(cli("train", path, *NO_MODEL, "--task-type", "sentence=regression"))
    assert "--task-type sentence=...: no task 'sentence' (tasks: topic, tags, score, stars)" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("column, cell, needle", [
    (3, "high", "mixed.csv:8: 'high' in regression column 'score' is not a number"),
    (2, "fast||cheap", "mixed.csv:8: 'fast||cheap' in multi-label column 'tags' has an empty label"),
])
def test_a_cell_the_type_cannot_read_names_its_line(cli, tmp_path, column, cell, needle):
    rows = mixed_rows()
    rows[6][column] = cell
    path = write_csv(tmp_path / "mixed.csv", rows, HEADER)
    assert needle in one_error(cli("train", path, *NO_MODEL, "--task-type", "score=regression"))
    assert not (tmp_path / "runs").exists()


def test_class_weights_are_refused_for_a_regression_task(cli, train_args, tmp_path):
    path = write_csv(tmp_path / "mixed.csv", mixed_rows(), HEADER)
    line = one_error(cli("train", path, *train_args, "--class-weight", "score=balanced"))
    assert "--class-weight score=balanced: the regression task 'score' has no classes to weigh" in line
    assert not list(tmp_path.glob("runs/*"))  # refused before a run folder is made


# ---- a mixed table trains; eval reads it back ----------------------------------------------------


@pytest.fixture(scope="module")
def mixed_run(tiny_model, tmp_path_factory):
    """A run on the mixed table, multi-label weighed; (run folder, the folder of its files)."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("mixed")
    rows = mixed_rows(120)
    train = write_csv(folder / "train.csv", rows[:90], HEADER)
    val = write_csv(folder / "val.csv", rows[90:], HEADER)
    result = CliRunner().invoke(app, [
        "train", str(train), "--val", str(val), "--out", str(folder / "runs"), "--name", "mixed",
        "--model", tiny_model, "--epochs", "2", "--batch-size", "16", "--lr-backbone", "1e-3", "--lr-heads", "3e-3",
        "--precision", "fp32", "--quiet", "--class-weight", "tags=balanced"])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "mixed", folder


def test_every_type_trains_with_partial_labels_and_none_applies(mixed_run):
    run, _ = mixed_run
    config = (run / "config.yaml").read_text()
    for task, kind in (("topic", "classification"), ("tags", "multilabel"), ("score", "regression"),
                       ("stars", "classification")):
        assert f"{task}: {kind}" in config
    summary = json.loads((run / "summary.json").read_text())
    weights = summary["class_weights"]["tags"]  # negatives / positives per label: every one positive
    assert len(weights) == 3 and all(w > 0 for w in weights)
    best = summary["best_metrics"]
    for key in ("val_topic_f1", "val_tags_microf1", "val_tags_subsetacc", "val_score_rmse", "val_stars_acc"):
        assert np.isfinite(best[key]), key
    assert json.loads((run / "labels.json").read_text())["tags"] == ["cheap", "fast", "slow"]  # "[]" is no label


def test_eval_shows_each_types_metrics(cli, mixed_run):
    run, folder = mixed_run
    result = cli("eval", run, folder / "val.csv", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if ": " in line}
    assert "macro-F1" in lines["tags"] and "subset accuracy" in lines["tags"]
    assert "RMSE" in lines["score"] and "Spearman" in lines["score"]
    assert "threshold" in result.stdout  # the multi-label task's per-label table


@pytest.mark.parametrize("column, cell, needle", [
    (2, "fast|loud", "label 'loud' of task 'tags' is not one the model knows"),
    (4, "7", "label '7' of task 'stars' is not one the model knows"),
])
def test_an_unknown_label_in_eval_names_its_line(cli, mixed_run, column, cell, needle):
    run, folder = mixed_run
    rows = mixed_rows(120)[90:]
    rows[3][column] = cell
    path = write_csv(folder / f"unknown{column}.csv", rows, HEADER)
    line = one_error(cli("eval", run, path, "--device", "cpu"))
    assert f"unknown{column}.csv:5: {needle}" in line and "--ignore-unknown" in line
    assert cli("eval", run, path, "--device", "cpu", "--ignore-unknown", "--json").exit_code == 0


# ---- metrics agree with scikit-learn ---------------------------------------------------------------


def test_multilabel_and_class_metrics_agree_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth, predicted = rng.random((200, 6)) < 0.3, rng.random((200, 6)) < 0.35
    truth[:, 5] = predicted[:, 5] = False  # a label nobody has or predicts scores 0, as in scikit-learn
    ours = metrics.multilabel_scores(truth, predicted)
    for average in ("macro", "micro", "samples"):
        want = sk.f1_score(truth, predicted, average=average, zero_division=0)
        assert ours[f"{average}_f1"] == pytest.approx(want), average
    assert ours["subset_accuracy"] == pytest.approx(sk.accuracy_score(truth, predicted))
    p, r, f, n = metrics.per_label(truth, predicted)
    want = sk.precision_recall_fscore_support(truth, predicted, zero_division=0)
    for a, b in zip((p, r, f, n), want):
        assert a == pytest.approx(b)

    y, guess = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    cm = metrics.confusion(y, guess, 4)
    assert (cm == sk.confusion_matrix(y, guess, labels=range(4))).all()
    assert metrics.accuracy(cm) == pytest.approx(sk.accuracy_score(y, guess))
    assert metrics.macro_f1(cm) == pytest.approx(sk.f1_score(y, guess, average="macro"))


def test_regression_metrics_agree_with_scikit_learn_and_scipy():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    truth = np.round(rng.normal(3, 1, 150), 1)  # rounded: ties, which Spearman ranks by their mean
    predicted = np.round(truth + rng.normal(0, 0.7, 150), 1)
    ours = metrics.regression_scores(truth, predicted)
    assert ours["mae"] == pytest.approx(sk.mean_absolute_error(truth, predicted))
    assert ours["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(truth, predicted)))
    assert ours["r2"] == pytest.approx(sk.r2_score(truth, predicted))
    stats = pytest.importorskip("scipy.stats")
    assert ours["spearman"] == pytest.approx(stats.spearmanr(truth, predicted).statistic)


def test_best_thresholds_maximise_each_labels_f1():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    truth = rng.random((120, 4)) < [0.5, 0.2, 0.1, 0.02]
    scores = np.clip(truth * 0.3 + rng.random((120, 4)) * 0.7, 0, 1)
    thresholds = metrics.best_thresholds(truth, scores, min_positives=5)
    for j in range(4):
        if truth[:, j].sum() < 5:
            assert thresholds[j] == 0.5  # too few positives to tune on
            continue
        f1 = sk.f1_score(truth[:, j], scores[:, j] >= thresholds[j])
        best = max(sk.f1_score(truth[:, j], scores[:, j] >= t) for t in np.unique(scores[:, j]))
        assert f1 == pytest.approx(best), j


# ---- list cells in JSON Lines and Parquet ----------------------------------------------------------


def _jsonl(path: Path, tags: list) -> Path:
    texts = [row[0] for row in sample_rows(len(tags))]
    path.write_text("".join(json.dumps({"sentence": t, "tags": v}) + "\n" for t, v in zip(texts, tags)))
    return path


def test_json_lines_list_cells_are_label_sets(tmp_path):
    table = read_table(_jsonl(tmp_path / "tags.jsonl", [["a", "b"], ["a"], [], None, ["b", "c"]]), "sentence", None)
    tags = table.labels["tags"]
    assert columns.infer(tags, "|")[0] == "multilabel"
    task = MultiLabel().fit("tags", tags, table.where, {})
    assert task.labels == ["a", "b", "c"]
    y = MultiLabel().targets(task, tags, table.where)
    assert y[:3].tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 0]] and np.isnan(y[3]).all()


def test_a_list_of_numbers_is_still_an_error(cli, tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [["a"], [1, 2], ["b"]])
    line = one_error(cli("train", path, *NO_MODEL))
    assert "bad.jsonl:2: column 'tags' holds a list; a cell must be text, a number, true/false, null or a list " \
           "of labels (strings)" in line


def test_parquet_list_cells_are_label_sets(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [row[0] for row in sample_rows(3)]
    path = tmp_path / "tags.parquet"
    pq.write_table(pa.table({"sentence": texts, "tags": [["x", "y"], [], ["y"]]}), path)
    tags = read_table(path, "sentence", None).labels["tags"]
    assert columns.infer(tags, "|")[0] == "multilabel"
    task = MultiLabel().fit("tags", tags, lambda i: f"row {i}", {})
    assert task.labels == ["x", "y"]
