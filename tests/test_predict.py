"""mtl predict through the CLI: labels are the model's argmax, inputs, formats, streaming, embeddings."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from conftest import sample_rows, write_csv
from mtlcli.inference import predict_io
from mtlcli.tasks.base import Task
from mtlcli.inference.loaded_run import load_run
from mtlcli.tasks.base import Task

TEXTS = ["The laptop is excellent.", "The soup was a huge disappointment. Never again.", "An average hotel."]


def model_outputs(run, texts):
    """Each text run through the model on its own: probabilities per task, and the pooled vector.
    transformers' own BertModel and tokenizer (native=False), so the CLI's path (mtlcli.model.bert and
    tokenizer.json read directly) is checked against them."""
    loaded = load_run(run, device="cpu", precision="fp32", native=False)
    probs = {t: [] for t in loaded.label_sets}
    vectors = []
    with torch.inference_mode():
        for text in texts:
            enc = loaded.tokenizer(text, truncation=True, max_length=loaded.config["max_length"], return_tensors="pt")
            pooled = loaded.model.embed(enc["input_ids"], enc["attention_mask"])
            vectors.append(pooled[0].numpy())
            for t, head in loaded.model.heads.items():
                probs[t].append(torch.softmax(head(pooled)[0], -1).numpy())
    return loaded.label_sets, {t: np.stack(p) for t, p in probs.items()}, np.stack(vectors)


def test_labels_are_the_models_argmax(cli, trained_run):
    run = trained_run[0]
    result = cli("predict", run, *TEXTS, "--format", "jsonl", "--top-k", "3", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    label_sets, probs, _ = model_outputs(run, TEXTS)
    assert [r["text"] for r in lines] == TEXTS
    for i, record in enumerate(lines):
        for task, labels in label_sets.items():
            p = probs[task][i]
            assert record[task]["label"] == labels[int(p.argmax())]
            assert record[task]["score"] == pytest.approx(float(p.max()), abs=1e-5)
            top = record[task]["top"]
            assert [label for label, _ in top] == [labels[j] for j in np.argsort(-p)[:3]]
            assert top[0] == [record[task]["label"], record[task]["score"]]


def test_csv_input_keeps_its_columns_and_csv_output_appends_predictions(cli, trained_run, tmp_path):
    data = tmp_path / "in.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "sentence", "class_label"])
        writer.writerows([[str(i), text, "food"] for i, text in enumerate(TEXTS)])
    result = cli("predict", trained_run[0], "--input", data, "--output", tmp_path / "out.csv", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader((tmp_path / "out.csv").open(encoding="utf-8")))
    # the input's class_label stays; the prediction for that task gets its own name
    assert rows[0] == ["id", "sentence", "class_label", "class_label_predicted", "class_label_predicted_score",
                       "sentiment_label", "sentiment_label_score"]
    assert [r[:3] for r in rows[1:]] == [[str(i), t, "food"] for i, t in enumerate(TEXTS)]
    label_sets, probs, _ = model_outputs(trained_run[0], TEXTS)
    for i, row in enumerate(rows[1:]):
        assert row[3] == label_sets["class_label"][int(probs["class_label"][i].argmax())]
        assert float(row[4]) == pytest.approx(float(probs["class_label"][i].max()), abs=1e-4)
        assert row[5] == label_sets["sentiment_label"][int(probs["sentiment_label"][i].argmax())]


def test_plain_text_from_standard_input_one_line_per_text(cli, trained_run):
    text = "\n".join(TEXTS[:2]) + "\n\n" + TEXTS[2] + "\n"  # a blank line carries nothing
    result = cli_input(cli, trained_run[0], text, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == TEXTS


def cli_input(cli, run, stdin: str, *args):
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    return CliRunner().invoke(app, ["predict", str(run), "--input", "-", *args], input=stdin)


def test_streams_in_chunks_in_order_with_embeddings(cli, trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_io, "CHUNK", 7)  # 40 texts: six chunks, the last one short
    texts = [row[0] for row in sample_rows(40)]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = cli("predict", trained_run[0], "-i", tmp_path / "texts.txt", "-o", tmp_path / "out.jsonl",
                 "--embeddings", tmp_path / "vectors.npy", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in lines] == texts
    vectors = np.load(tmp_path / "vectors.npy")
    label_sets, probs, expected = model_outputs(trained_run[0], texts)
    assert vectors.shape == (40, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert [r["sentiment_label"]["label"] for r in lines] == [
        label_sets["sentiment_label"][j] for j in probs["sentiment_label"].argmax(1)]
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    assert "labelling" not in result.output  # the progress bar is for terminals only


def test_reading_is_lazy_so_memory_stays_bounded(trained_run):
    pulled = []

    def endless():
        n = 0
        while True:
            pulled.append(n)
            yield None, f"text number {n}"
            n += 1

    loaded = load_run(trained_run[0], device="cpu", precision="fp32")
    source = predict_io.Source("endless", None, endless())
    chunks = predict_io.predict_chunks(loaded, source, chunk_size=5)
    first, second = next(chunks), next(chunks)
    assert first.texts[0] == "text number 0" and second.texts[0] == "text number 5"
    # the chunks asked for, and at most one more: the next chunk is read ahead while this one runs
    assert 10 <= len(pulled) <= 15
    assert next(chunks).texts[0] == "text number 10" and len(pulled) <= 20
    chunks.close()


def test_table_format_and_top_k(cli, trained_run):
    result = cli("predict", trained_run[0], TEXTS[0], "--format", "table", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert "The laptop is excellent." in result.stdout
    assert "class_label" in result.stdout and "sentiment_label" in result.stdout
    # two labels per task cell: six label names appear for 2 tasks x 3 labels at most
    labels = ["electronics", "food", "travel", "negative", "neutral", "positive"]
    assert sum(result.stdout.count(label) for label in labels) == 4


def test_csv_output_from_arguments_and_top_column(cli, trained_run):
    result = cli("predict", trained_run[0], *TEXTS[:2], "--format", "csv", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["text"] for r in rows] == TEXTS[:2]
    for r in rows:
        top = json.loads(r["class_label_top"])
        assert top[0][0] == r["class_label"] and len(top) == 2 and top[0][1] >= top[1][1]


def test_csv_top_k_cells_keep_labels_with_spaces_and_colons_apart():
    tasks = {"reason": Task("reason", "classification", ["Can't Tell", "late: 2h", "other label"])}
    chunk = predict_io.Chunk(texts=["a"], rows=None, probs={"reason": np.array([[0.2, 0.5, 0.3]])}, embeddings=None)
    out = io.StringIO()
    predict_io.CsvWriter(out, None, tasks, 3).write(chunk)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert json.loads(row["reason_top"]) == [["late: 2h", 0.5], ["other label", 0.3], ["Can't Tell", 0.2]]


def _split_by_score(run, texts) -> tuple[float, dict[str, np.ndarray]]:
    """A --min-score between the texts' top probabilities (some fall below it, some not), and each
    task's top probability per text."""
    _, probs, _ = model_outputs(run, texts)
    top = {t: p.max(axis=1) for t, p in probs.items()}
    every = np.sort(np.concatenate(list(top.values())))
    middle = len(every) // 2
    return float(every[middle - 1] + every[middle]) / 2, top


def test_min_score_leaves_a_doubtful_label_out_of_csv_and_jsonl(cli, trained_run, tmp_path):
    run = trained_run[0]
    texts = [row[0] for row in sample_rows(40)]
    min_score, top = _split_by_score(run, texts)
    data = write_csv(tmp_path / "in.csv", [[t] for t in texts], header=["sentence"])
    for fmt in ("csv", "jsonl"):
        result = cli("predict", run, "--input", data, "--format", fmt, "--min-score", min_score, "--precision", "fp32",
                     "--output", tmp_path / f"out.{fmt}")
        assert result.exit_code == 0, result.output
        written = (tmp_path / f"out.{fmt}").read_text()
        rows = (list(csv.DictReader(io.StringIO(written))) if fmt == "csv"
                else [json.loads(x) for x in written.splitlines()])
        below = 0
        for i, row in enumerate(rows):
            for task, scores in top.items():
                label = row[task] if fmt == "csv" else row[task]["label"]
                score = float(row[f"{task}_score"]) if fmt == "csv" else row[task]["score"]
                assert score == pytest.approx(scores[i], abs=1e-4)  # the score stays, whatever the label
                if scores[i] < min_score:
                    assert label == ("" if fmt == "csv" else None), (fmt, task, i)
                    below += 1
                else:
                    assert label in ("electronics", "food", "travel", "negative", "neutral", "positive")
        assert 0 < below < 2 * len(texts)


def test_min_score_in_the_api_and_its_range(cli, trained_run):
    from mtlcli import Model

    run = trained_run[0]
    model = Model.load(run, "cpu", "fp32")
    plain = model.predict(TEXTS)
    assert all(p[t]["label"] is None for p in model.predict(TEXTS, min_score=1.0) for t in model.tasks)
    assert model.predict(TEXTS, min_score=0.0) == plain
    with pytest.raises(ValueError, match="min_score must be between 0 and 1"):
        model.predict(TEXTS, min_score=1.5)
    result = cli("predict", run, "Some text.", "--min-score", "1.5")
    assert result.exit_code == 2 and "--min-score 1.5: must be at most 1" in result.output


@pytest.mark.parametrize("args, message", [
    (["Some text.", "--input", "x.txt"], "not both"),
    ([], "no texts"),
    (["--input", "missing.txt"], "missing.txt: file not found"),
    (["Some text.", "--format", "xml"], "--format xml: must be one of table, csv, jsonl"),
    (["Some text.", "--embeddings", "vectors.txt"], "must end in .npy"),
    (["Some text.", ""], "TEXT 2 is empty; every text needs words"),
    ([" \t "], "TEXT 1 is empty (only whitespace); every text needs words"),
])
def test_bad_arguments_are_one_line(cli, trained_run, args, message):
    result = cli("predict", trained_run[0], *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bad_csv_input_names_the_line(cli, trained_run, tmp_path):
    data = write_csv(tmp_path / "bad.csv", [["Fine text.", "food", "positive"], ["Too", "many", "fields", "here"]])
    result = cli("predict", trained_run[0], "--input", data, "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "bad.csv:3: expected 3 fields" in result.output
    assert not (tmp_path / "out.jsonl").exists()  # no half-written output
    other = write_csv(tmp_path / "other.csv", [["Fine text."]], header=["review"])
    result = cli("predict", trained_run[0], "--input", other)
    assert result.exit_code == 2 and "no text column 'sentence'" in result.output
