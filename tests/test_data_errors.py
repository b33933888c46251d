"""Bad input: one clear line naming file, line and problem; exit code 2; before the model loads.

Every case passes --model pointing at a folder that does not exist: if the data were not checked
first, the message would be about the model instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import sample_rows, write_csv

NO_MODEL = ["--model", "/nonexistent/model", "--quiet"]


def _train(cli, path, *extra):
    result = cli("train", path, *NO_MODEL, *extra)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_missing_file(cli, tmp_path):
    assert "nope.csv: file not found" in _train(cli, tmp_path / "nope.csv")


def test_empty_file(cli, tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    assert "empty.csv: the file is empty" in _train(cli, p)


def test_not_utf8(cli, tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes("sentence,class_label\nok,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    assert "latin1.csv:3: not UTF-8" in _train(cli, p)


def test_binary_file(cli, tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"\x00\x01\x02PK\x03\x04" * 10)
    assert "model.bin:1: not a text file" in _train(cli, p)


def test_no_header_or_missing_text_column(cli, tmp_path):
    p = write_csv(tmp_path / "noheader.csv", sample_rows(10)[1:], header=sample_rows(1)[0])
    msg = _train(cli, p)
    assert "noheader.csv:1: no text column 'sentence'" in msg and "--text-column" in msg


def test_no_task_columns(cli, tmp_path):
    p = tmp_path / "only_text.csv"
    p.write_text("sentence\nhello there\ngood bye\n")
    assert "only_text.csv:1: no task columns" in _train(cli, p)


def test_ragged_row(cli, tmp_path):
    rows = sample_rows(20)
    rows[6] = rows[6][:2]
    p = write_csv(tmp_path / "ragged.csv", rows)
    assert "ragged.csv:8: expected 3 fields as in the header, found 2" in _train(cli, p)


def test_empty_sentence(cli, tmp_path):
    rows = sample_rows(20)
    rows[3][0] = "   "
    p = write_csv(tmp_path / "blank.csv", rows)
    assert "blank.csv:5: empty 'sentence'" in _train(cli, p)


def test_task_with_a_single_label(cli, tmp_path):
    rows = [[r[0], r[1], "positive"] for r in sample_rows(40)]
    p = write_csv(tmp_path / "one.csv", rows)
    assert "task 'sentiment_label' has only 'positive'" in _train(cli, p)


def test_split_leaves_no_validation_rows(cli, tmp_path):
    rows = [["a b c", "x", "p"], ["d e f", "y", "q"]]
    p = write_csv(tmp_path / "tiny.csv", rows)
    assert "leaves no validation rows" in _train(cli, p)


def test_unknown_task_column(cli, small_csv):
    assert "no column 'topic' for task 'topic'" in _train(cli, small_csv, "--task", "topic")


def test_validation_label_unseen_in_training(cli, tmp_path, small_csv):
    val = write_csv(tmp_path / "val.csv", [["brand new words", "furniture", "positive"]])
    msg = _train(cli, small_csv, "--val", val)
    assert "val.csv:2: label 'furniture' of task 'class_label'" in msg


@pytest.mark.parametrize("flag, value, needle", [
    ("--pooling", "fancy", "unknown pooler 'fancy' (available: cls, max, mean"),
    ("--head", "deep", "unknown head 'deep' (available: linear, mlp"),
    ("--loss-combiner", "magic", "unknown loss combiner 'magic' (available: dwa, uncertainty, weighted"),
    ("--scheduler", "wavy", "unknown scheduler 'wavy' (available: constant, cosine, linear"),
    ("--freeze", "feet", "--freeze feet: not one of"),
    ("--task-weight", "nope=2", "no task 'nope'"),
    ("--val-split", "1.5", "--val-split 1.5: must be 0 (no validation) or between 0 and 1"),
    ("--epochs", "0", "--epochs 0: must be at least 1"),
    ("--device", "gpu", "--device gpu: must be one of auto, cpu, cuda"),
])
def test_bad_settings_name_the_setting(cli, small_csv, flag, value, needle):
    assert needle in _train(cli, small_csv, flag, value)


@pytest.mark.parametrize("text, needle", [
    ("epochs: 2\nlearning_rate: 0.1\n", "bad.yaml: unknown key 'learning_rate'"),
    ("epoch: 2\n", "bad.yaml: unknown key 'epoch' (did you mean 'epochs'?)"),
    ("val_split: 1.5\n", "bad.yaml: key 'val_split' must be 0 (no validation) or between 0 and 1, got 1.5"),
    ("epochs: two\n", "bad.yaml: key 'epochs' must be an integer, got 'two'"),
    ("- epochs\n- 2\n", "bad.yaml: a config file must be a mapping"),
])
def test_config_file_errors_name_the_file_and_key(cli, small_csv, tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert needle in _train(cli, small_csv, "--config", path)


def test_freezing_everything_is_refused(cli, small_csv, tiny_model):
    result = cli("train", small_csv, "--model", tiny_model, "--quiet", "--freeze", "backbone",
                 "--freeze", "class_label", "--freeze", "sentiment_label", "--out", "frozen")
    assert result.exit_code == 2
    assert "freezes the whole model" in result.output
    assert not list(Path("frozen").glob("*/checkpoints/*.pt"))
