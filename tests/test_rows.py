"""One reader for every format: CSV, TSV, JSON Lines and Parquet give the same rows, the same
checks and the same messages in train, eval and predict."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, sample_rows, write_csv
from mtlcli.data import tables as data_mod
from mtlcli.data import rows as rows_mod

HEADER = ["sentence", "class_label", "sentiment_label"]
NO_MODEL = ["--model", "/nonexistent/model", "--quiet"]
FORMATS = ("csv", "tsv", "jsonl", "parquet")


def _rows(n: int) -> list[list[str]]:
    """Sample rows with some empty label cells (partial labels), which every format must keep empty."""
    rows = [list(r) for r in sample_rows(n)]
    for i in range(3, n, 7):
        rows[i][2] = ""
    return rows


def write_as(fmt: str, path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    """``rows`` as a file of format ``fmt``; an empty cell becomes a missing key (JSONL) or a null (Parquet)."""
    path = path.with_suffix(f".{fmt}")
    if fmt in ("csv", "tsv"):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(header)
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({k: v for k, v in zip(header, r) if v}) + "\n" for r in rows),
                        encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [r[i] or None for r in rows] for i, name in enumerate(header)}
        pq.write_table(pa.table(columns), path, row_group_size=max(1, len(rows) // 3))  # several row groups
    return path


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# ---- the same rows in every format ------------------------------------------------------------


def test_every_format_gives_the_same_table(tmp_path):
    rows = _rows(40)
    tables = {fmt: data_mod.read_table(write_as(fmt, tmp_path / "data", rows), "sentence", []) for fmt in FORMATS}
    for fmt, table in tables.items():
        assert table.texts == [r[0] for r in rows], fmt
        assert {t: list(v) for t, v in table.labels.items()} == {
            "class_label": [r[1] for r in rows], "sentiment_label": [r[2] for r in rows]}, fmt
    # a text file names the line a row starts on (the header is line 1); JSON Lines has no header
    # line, and Parquet counts rows
    assert tables["csv"].lines.tolist() == tables["tsv"].lines.tolist() == list(range(2, 42))
    assert tables["jsonl"].lines.tolist() == tables["parquet"].lines.tolist() == list(range(1, 41))
    assert tables["csv"].where(0) == f"{tmp_path / 'data.csv'}:2"
    assert tables["parquet"].where(0) == f"{tmp_path / 'data.parquet'}: row 1"


def test_jsonl_values_become_cells(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"sentence": "a b", "stars": 5, "ok": true, "x": null}\n\n'
                    '{"sentence": "c d", "stars": 2.5, "ok": false, "late": "y"}\n', encoding="utf-8")
    rows = rows_mod.open_rows(path, "sentence")
    assert rows.header == ["sentence", "stars", "ok", "x", "late"]  # every key, in the order first seen
    assert list(rows) == [(1, ["a b", "5", "true", "", ""]), (3, ["c d", "2.5", "false", "", "y"])]


def test_a_semicolon_file_is_sniffed_and_delimiter_can_be_named(tmp_path):
    rows = _rows(10)
    text = "sentence;class_label;sentiment_label\n" + "".join(";".join(r) + "\n" for r in rows)
    (tmp_path / "data.txt").write_text(text, encoding="utf-8")
    (tmp_path / "data.csv").write_text(text, encoding="utf-8")  # a .csv from a semicolon locale
    sniffed = data_mod.read_table(tmp_path / "data.txt", "sentence", [])
    named = data_mod.read_table(tmp_path / "data.csv", "sentence", [], delimiter=";")
    assert sniffed.texts == named.texts == [r[0] for r in rows]
    assert list(named.labels["sentiment_label"]) == [r[2] for r in rows]
    assert rows_mod.delimiter_char("tab") == rows_mod.delimiter_char("\\t") == "\t"


def test_train_gives_the_same_labels_and_metrics_from_every_format(cli, tmp_path, tiny_model):
    rows = _rows(60)
    results = {}
    for fmt in FORMATS:
        data = write_as(fmt, tmp_path / "train", rows)
        result = cli("train", data, "--model", tiny_model, "--epochs", "1", "--batch-size", "16", "--precision", "fp32",
                     "--quiet", "--out", "runs", "--name", fmt)
        assert result.exit_code == 0, result.output
        run = tmp_path / "runs" / fmt
        metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        scores = {k: v for k, v in metrics.items() if k.endswith(("_loss", "_acc", "_f1"))}
        results[fmt] = (json.loads((run / "labels.json").read_text()), scores)
    assert results["csv"][1], results["csv"]
    for fmt in FORMATS[1:]:
        assert results[fmt] == results["csv"], fmt


# ---- eval and predict read every format -------------------------------------------------------


@pytest.fixture(scope="module")
def val_files(trained_run, tmp_path_factory):
    """The shared run's validation rows in every format."""
    folder = tmp_path_factory.mktemp("val-formats")
    with trained_run[1].open(encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return {fmt: write_as(fmt, folder / "val", rows) for fmt in FORMATS}, rows


def test_eval_scores_every_format_alike(cli, trained_run, val_files):
    files, rows = val_files
    reports = {}
    for fmt, path in files.items():
        result = cli("eval", trained_run[0], path, "--json")
        assert result.exit_code == 0, result.output
        reports[fmt] = json.loads(result.stdout)
    assert reports["csv"]["n"] == len(rows)
    for fmt in FORMATS[1:]:
        assert reports[fmt] == reports["csv"], fmt


def test_predict_reads_every_format_alike(cli, trained_run, val_files):
    files, rows = val_files
    outputs = {}
    for fmt, path in files.items():
        result = cli("predict", trained_run[0], "--input", path, "--format", "csv")
        assert result.exit_code == 0, result.output
        outputs[fmt] = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["sentence"] for r in outputs["csv"]] == [r[0] for r in rows]  # the header is no text
    for fmt in FORMATS[1:]:
        assert outputs[fmt] == outputs["csv"], fmt


def test_predict_on_a_tsv_takes_the_text_column_and_not_the_header(cli, trained_run, tmp_path):
    tsv = write_as("tsv", tmp_path / "new", [["Great phone.", "electronics", "positive"], ["Cold soup.", "food", "negative"]])
    result = cli("predict", trained_run[0], "--input", tsv, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["Great phone.", "Cold soup."]


def test_predict_reads_a_txt_with_a_header_naming_the_text_column_as_a_table(cli, trained_run, tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("id|sentence\n1|Great phone.\n2|Cold soup.\n", encoding="utf-8")
    result = cli("predict", trained_run[0], "--input", path, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert [(r["id"], r["sentence"]) for r in csv.DictReader(result.stdout.splitlines())] == [
        ("1", "Great phone."), ("2", "Cold soup.")]


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_plain_text_whose_first_line_looks_like_a_header_warns(runner, trained_run, tmp_path, source):
    from mtlcli.cli.app import app

    text = "review\tstars\nGreat phone.\t5\n"
    path = tmp_path / "new.txt"
    path.write_text(text, encoding="utf-8")
    args = ["predict", str(trained_run[0]), "--input", str(path) if source == "file" else "-", "--format", "jsonl"]
    result = runner.invoke(app, args, input=text if source == "stdin" else None)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "read as plain text" in warnings[0] and "--text-column" in warnings[0], result.stderr
    assert "--delimiter" in warnings[0]
    assert len(result.stdout.splitlines()) == 2  # read as told: one text per line


def test_plain_prose_does_not_warn(cli, trained_run, tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("Well, the phone is fine.\nCold soup.\n", encoding="utf-8")
    result = cli("predict", trained_run[0], "--input", path, "--format", "jsonl")
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert len(result.stdout.splitlines()) == 2


def test_predict_with_a_delimiter_reads_standard_input_as_a_table(runner, trained_run):
    from mtlcli.cli.app import app

    result = runner.invoke(app, ["predict", str(trained_run[0]), "--input", "-", "--delimiter", "tab", "--format", "jsonl"],
                           input="sentence\tnote\nGreat phone.\tx\n")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["Great phone."]


# ---- bad rows: one line naming the file, the line (or row) and the problem ----------------------


BAD_ROWS = [
    ("csv", lambda good: good + b"too,many,fields,here\n", "bad.csv:5: expected 3 fields as in the header, found 4"),
    ("tsv", lambda good: good + b"only\ttwo\n", "bad.tsv:5: expected 3 fields as in the header, found 2"),
    ("jsonl", lambda good: good + b'{"sentence": "x", \n', "bad.jsonl:4: not valid JSON"),
    ("jsonl", lambda good: good + b'{"sentence": "x\n', "bad.jsonl:4: not valid JSON (Unterminated string starting "
                                                      "at column 14)"),
    ("jsonl", lambda good: good + b'["a list"]\n', "bad.jsonl:4: not a JSON object (found a list)"),
    ("jsonl", lambda good: good + b'{"sentence": "x", "class_label": {"a": 1}}\n',
     "bad.jsonl:4: column 'class_label' holds an object"),
]


def _good(fmt: str, tmp_path: Path) -> bytes:
    return write_as(fmt, tmp_path / "good", _rows(3)).read_bytes()


@pytest.mark.parametrize("fmt, damage, needle", BAD_ROWS)
def test_a_bad_row_is_named_by_train(cli, tmp_path, fmt, damage, needle):
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(damage(_good(fmt, tmp_path)))
    assert needle in _one_error_line(cli("train", path, *NO_MODEL))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize("damage, problem", [
    (lambda text: text.replace("Good", "Go\x00od", 1), "not a text file (contains NUL bytes)"),
    (lambda text: text.replace("Good", "Go\udce9od", 1), "not UTF-8 text (byte 0xe9)"),
])
def test_nul_bytes_and_bad_utf8_name_the_line(cli, tmp_path, fmt, damage, problem):
    rows = _rows(4)
    rows[2][0] = "Good text here."
    text = write_as(fmt, tmp_path / "good", rows).read_text(encoding="utf-8")
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(damage(text).encode("utf-8", "surrogateescape"))
    line = 3 if fmt == "jsonl" else 4
    assert f"bad.{fmt}:{line}: {problem}" in _one_error_line(cli("train", path, *NO_MODEL))


@pytest.mark.parametrize("fmt, where", [("csv", "bad.csv:4"), ("tsv", "bad.tsv:4"), ("jsonl", "bad.jsonl:3"),
                                        ("parquet", "bad.parquet: row 3")])
def test_an_empty_text_is_named_in_every_format_and_command(cli, trained_run, tmp_path, fmt, where):
    rows = _rows(5)
    rows[2][0] = ""
    path = write_as(fmt, tmp_path / "bad", rows)
    needle = f"{where}: empty 'sentence'"
    assert needle in _one_error_line(cli("train", path, *NO_MODEL))
    assert needle in _one_error_line(cli("eval", trained_run[0], path))
    assert needle in _one_error_line(cli("predict", trained_run[0], "--input", path, "--format", "jsonl"))


def test_parquet_cell_that_is_not_utf8_names_the_row(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bytes.parquet"
    pq.write_table(pa.table({"sentence": pa.array([b"fine", b"caf\xe9"], pa.binary()), "t": ["a", "b"]}), path)
    assert "bytes.parquet: row 2: column 'sentence' is not UTF-8 text (byte 0xe9)" in _one_error_line(
        cli("train", path, *NO_MODEL))


def test_no_text_column_names_the_columns_found_in_every_format(cli, trained_run, tmp_path):
    for fmt in FORMATS:
        path = write_as(fmt, tmp_path / "other", [["Fine text.", "x"]], header=["review", "stars"])
        message = _one_error_line(cli("predict", trained_run[0], "--input", path))
        assert "no text column 'sentence' (columns: review, stars); name it with --text-column" in message, fmt
        assert path.name in message


@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_a_spreadsheet_gets_the_export_hint(cli, trained_run, tmp_path, command):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    args = {"train": ["train", path, *NO_MODEL], "eval": ["eval", trained_run[0], path],
            "predict": ["predict", trained_run[0], "--input", path]}[command]
    assert "data.xlsx: a spreadsheet (.xlsx) cannot be read; export it as CSV (UTF-8)" in _one_error_line(cli(*args))


@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_a_delimiter_of_more_than_one_character_is_refused(cli, trained_run, small_csv, command):
    args = {"train": ["train", small_csv, *NO_MODEL], "eval": ["eval", trained_run[0], small_csv],
            "predict": ["predict", trained_run[0], "--input", small_csv]}[command]
    assert "delimiter ';;': use one character" in _one_error_line(cli(*args, "--delimiter", ";;"))


def test_without_pyarrow_a_parquet_file_says_what_to_install(tmp_path):
    path = write_as("parquet", tmp_path / "data", _rows(5))
    program = ("import sys; sys.modules['pyarrow'] = None; from mtlcli.cli.app import main; "
               f"sys.argv = ['mtl', 'train', {str(path)!r}, '--model', '/nonexistent/model', '--quiet']; main()")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert "data.parquet: reading Parquet needs the Python package 'pyarrow'" in done.stderr
    assert "pip install \"mtlcli[parquet]\"" in done.stderr and "Traceback" not in done.stderr


# ---- messages that say the fix ----------------------------------------------------------------


def test_a_task_with_one_label_names_the_tasks_to_train_instead(cli, tmp_path):
    rows = [[r[0], r[1], "positive"] for r in sample_rows(40)]
    message = _one_error_line(cli("train", write_csv(tmp_path / "one.csv", rows), *NO_MODEL))
    assert "task 'sentiment_label' has only 'positive' in the training rows" in message
    assert "leave it out by naming the tasks to train: --task class_label" in message


def test_an_unknown_label_in_eval_points_to_ignore_unknown(cli, trained_run, tmp_path):
    data = write_csv(tmp_path / "new.csv", [["Great phone.", "furniture", "positive"]])
    message = _one_error_line(cli("eval", trained_run[0], data))
    assert "new.csv:2: label 'furniture' of task 'class_label'" in message
    assert "--ignore-unknown leaves such rows out of that task" in message
