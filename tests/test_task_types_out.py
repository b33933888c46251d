"""Task types on the way out: one run on a table with a class column, a multi-label column and a
regression column, read back by `mtl predict` (CSV, JSON Lines), ``mtlcli.Model``, `mtl serve`, both
exports, and `mtl train --resume`."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

from conftest import sample_rows, write_csv
from mtlcli import Model

HEADER = ["sentence", "topic", "tags", "rating"]
TYPES = {"topic": "classification", "tags": "multilabel", "rating": "regression"}
RATING = {"positive": 4.5, "neutral": 3.0, "negative": 1.5}
TEXTS = ["Great hotel, loved the view.", "The battery died after a day.", "ok",
         "The soup was cold and the waiter rude; never again. " * 6]


def mixed_rows() -> list[list[str]]:
    """The sample rows as a mixed table: the topic as classes, tags from sentiment and topic (a
    neutral travel or food row has none: ``[]``), and a rating from the sentiment with decimals."""
    rows = []
    for i, (text, topic, sentiment) in enumerate(sample_rows()):
        tags = [tag for tag, on in (("good", sentiment == "positive"), ("bad", sentiment == "negative"),
                                    ("gadget", topic == "electronics")) if on]
        rows.append([text, topic, "|".join(tags) or "[]", f"{RATING[sentiment] + (i % 5) * 0.1:.1f}"])
    return rows


def train_flags(tiny_model) -> list[str]:
    return ["--model", tiny_model, "--epochs", "2", "--batch-size", "16", "--lr-backbone", "1e-3", "--lr-heads", "3e-3",
            "--precision", "fp32", "--task-type", "tags=multilabel", "--task-type", "rating=regression"]


@pytest.fixture(scope="module")
def mixed(tiny_model, tmp_path_factory):
    """(run folder, its validation CSV): 160 training rows, 80 validation rows, 2 epochs."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("mixed")
    rows = mixed_rows()
    train_csv = write_csv(folder / "train.csv", rows[:160], HEADER)
    val_csv = write_csv(folder / "val.csv", rows[160:240], HEADER)
    result = CliRunner().invoke(app, ["train", str(train_csv), "--val", str(val_csv), "--out", str(folder / "runs"),
                                      "--name", "mixed", *train_flags(tiny_model), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "mixed", val_csv


@pytest.fixture(scope="module")
def run_model(mixed):
    return Model.load(mixed[0], device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def exports(mixed, tmp_path_factory):
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    out = tmp_path_factory.mktemp("mixed-exports")
    for kind in ("onnx", "sentence-transformers"):
        result = CliRunner().invoke(app, ["export", str(mixed[0]), "--format", kind, "--out", str(out / kind)])
        assert result.exit_code == 0, result.output
    return {"onnx": out / "onnx", "sentence-transformers": out / "sentence-transformers"}


def check_record(record: dict, model: Model, outputs: dict, i: int, top_k: int) -> None:
    """One prediction object of each type, against the model's outputs for that text."""
    tasks = model.tasks
    topic, tags, rating = record["topic"], record["tags"], record["rating"]
    assert set(topic) == {"label", "score", "top"} and len(topic["top"]) == min(top_k, 3)
    assert topic["label"] == tasks["topic"].labels[int(outputs["topic"][i].argmax())]
    assert topic["score"] == pytest.approx(float(outputs["topic"][i].max()), abs=1e-5)
    assert set(tags) == {"labels", "scores", "top"} and len(tags["top"]) == min(top_k, 3)
    thresholds = tasks["tags"].params["thresholds"]
    above = [label for label, p, t in zip(tasks["tags"].labels, outputs["tags"][i], thresholds) if p >= t]
    assert sorted(tags["labels"]) == sorted(above) and len(tags["scores"]) == len(tags["labels"])
    assert tags["scores"] == sorted(tags["scores"], reverse=True)
    assert [s for _, s in tags["top"]] == sorted((s for _, s in tags["top"]), reverse=True)
    assert set(rating) == {"value"} and isinstance(rating["value"], float)
    assert rating["value"] == pytest.approx(float(outputs["rating"][i]), abs=1e-5)


# ---- reading an export's task types back: plain JSON, no model needed ---------------------------


def export_meta(tmp_path, labels: dict, task_types: dict | None):
    meta = {"format": "mtl-export", "format_version": 1, "kind": "onnx", "config": {}}
    if task_types is not None:
        meta["task_types"] = task_types
    (tmp_path / "mtl_config.json").write_text(json.dumps(meta), encoding="utf-8")
    (tmp_path / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    return tmp_path


def test_an_export_reads_back_each_tasks_type(tmp_path):
    from mtlcli.errors import UserError
    from mtlcli.export import folder

    types = {"topic": {"type": "classification"},
             "tags": {"type": "multilabel", "params": {"separator": "|", "thresholds": [0.3, 0.6]}},
             "rating": {"type": "regression", "params": {"mean": 3.1, "std": 1.2, "loss": "mse"}}}
    labels = {"topic": ["food", "travel"], "tags": ["bad", "good"], "rating": []}
    _, saved = folder.read(export_meta(tmp_path, labels, types))
    assert {t: task.type for t, task in saved.tasks.items()} == TYPES
    assert saved.tasks["rating"].labels == [] and saved.tasks["rating"].params["std"] == 1.2
    assert saved.tasks["tags"].params["thresholds"] == [0.3, 0.6]
    # written before task types: classification, and then an empty list of labels is broken
    _, old = folder.read(export_meta(tmp_path, {"topic": ["food", "travel"]}, None))
    assert old.tasks["topic"].type == "classification" and old.task_types == {}
    with pytest.raises(UserError, match="labels.json: the classification task 'rating' has no labels"):
        folder.read(export_meta(tmp_path, labels, {t: v for t, v in types.items() if t != "rating"}))
    with pytest.raises(UserError, match=r"task 'rating': unknown task type 'no-such-type' \(available: .*regression"):
        folder.read(export_meta(tmp_path, labels, {**types, "rating": {"type": "no-such-type"}}))
    with pytest.raises(UserError, match="task_types names the task 'stars', which labels.json does not have"):
        folder.read(export_meta(tmp_path, labels, {**types, "stars": {"type": "regression"}}))
    with pytest.raises(UserError, match="'task_types' must map each task to an object"):
        folder.read(export_meta(tmp_path, labels, {**types, "rating": "regression"}))


def test_csv_cells_of_each_type():
    """A multi-label row where no label reaches its threshold says ``[]`` (as a training cell where
    none applies); a regression value keeps its digits, however large."""
    from mtlcli.inference import predict_io
    from mtlcli.tasks.base import Task

    tasks = {"tags": Task("tags", "multilabel", ["bad", "good"], {"separator": ";", "thresholds": [0.5, 0.9]}),
             "price": Task("price", "regression", [], {"mean": 1e6, "std": 1e5, "loss": "mse"})}
    probs = {"tags": np.array([[0.6, 0.95], [0.1, 0.8]], dtype=np.float32),
             "price": np.array([1234567.875, -0.5], dtype=np.float32)}
    out = io.StringIO()
    predict_io.CsvWriter(out, ["text", "price"], tasks, 2).write(predict_io.Chunk(["a", "b"], [["a", "1"], ["b", "2"]],
                                                                                   probs, None))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == ["text", "price", "tags", "tags_score", "tags_top", "price_predicted"]
    assert (rows[0]["tags"], rows[0]["tags_score"]) == ("good;bad", "0.9500;0.6000")
    assert (rows[1]["tags"], rows[1]["tags_score"]) == ("[]", "")
    assert json.loads(rows[1]["tags_top"]) == [["good", 0.8], ["bad", 0.1]]
    assert [r["price_predicted"] for r in rows] == ["1234567.875", "-0.5"]


# ---- the run: mtl predict, the Python API, mtl serve ------------------------------------------


@pytest.mark.slow
def test_mtl_predict_writes_each_type_in_jsonl_and_csv(cli, mixed, run_model):
    run, val_csv = mixed
    texts = [row[0] for row in mixed_rows()[160:240]]
    outputs = run_model.probs(texts)
    assert outputs["topic"].shape == (80, 3) and outputs["tags"].shape == (80, 3) and outputs["rating"].shape == (80,)
    got = cli("predict", run, "--input", val_csv, "--format", "jsonl", "--top-k", "2", "--precision", "fp32")
    assert got.exit_code == 0, got.output
    records = [json.loads(line) for line in got.stdout.splitlines()]
    assert [r["text"] for r in records] == texts
    for i, record in enumerate(records):
        check_record(record, run_model, outputs, i, top_k=2)

    # CSV: the input's columns, then the predictions beside the labelled ones
    got = cli("predict", run, "--input", val_csv, "--format", "csv", "--top-k", "9", "--precision", "fp32")
    assert got.exit_code == 0, got.output
    table = list(csv.reader(io.StringIO(got.stdout)))
    assert table[0] == HEADER + ["topic_predicted", "topic_predicted_score", "topic_predicted_top", "tags_predicted",
                                 "tags_predicted_score", "tags_predicted_top", "rating_predicted"]
    tags = run_model.tasks["tags"]
    for i, (row, record) in enumerate(zip(table[1:], records)):
        cells = dict(zip(table[0], row))
        assert cells["topic_predicted"] == record["topic"]["label"]
        assert len(json.loads(cells["topic_predicted_top"])) == 3  # --top-k 9: every label, no more
        assert cells["tags_predicted"] == ("|".join(record["tags"]["labels"]) or "[]")
        scores = [float(s) for s in cells["tags_predicted_score"].split("|") if s]
        assert scores == pytest.approx(record["tags"]["scores"], abs=1e-4)
        assert [label for label, _ in json.loads(cells["tags_predicted_top"])] == [
            label for label, _ in sorted(zip(tags.labels, outputs["tags"][i]), key=lambda x: -x[1])]
        assert float(cells["rating_predicted"]) == pytest.approx(record["rating"]["value"], abs=1e-6)

    # the table: a line per label, the value of the regression task
    got = cli("predict", run, *TEXTS, "--format", "table", "--top-k", "3")
    assert got.exit_code == 0, got.output
    assert "rating" in got.stdout and f"{run_model.probs(TEXTS[:1])['rating'][0]:.4f}" in got.stdout


@pytest.mark.slow
def test_the_python_api_gives_each_types_prediction_and_info(mixed, run_model):
    assert {t: task.type for t, task in run_model.tasks.items()} == TYPES
    assert run_model.labels["rating"] == [] and run_model.labels["tags"] == ["bad", "gadget", "good"]
    outputs = run_model.probs(TEXTS)
    for top_k in (1, 5):
        for i, record in enumerate(run_model.predict(TEXTS, top_k=top_k)):
            assert record["text"] == TEXTS[i]
            check_record(record, run_model, outputs, i, top_k)
    info = run_model.info()
    assert info["tasks"] == json.loads((mixed[0] / "labels.json").read_text())
    assert {t: v["type"] for t, v in info["task_types"].items()} == TYPES
    assert set(info["task_types"]["rating"]["params"]) == {"mean", "std", "loss"}
    assert len(info["task_types"]["tags"]["params"]["thresholds"]) == 3
    assert {"val_rating_rmse", "val_tags_f1", "val_topic_acc"} <= set(info["validation"])
    assert "tasks=['topic', 'tags', 'rating']" in repr(run_model)
    empty = run_model.probs([], with_embeddings=True)
    assert {k: v.shape for k, v in empty.items()} == {"topic": (0, 3), "tags": (0, 3), "rating": (0,), "_embeddings": (0, 0)}


@pytest.mark.slow
def test_mtl_serve_answers_each_type(mixed, run_model, tmp_path):
    from test_serve import Server

    server = Server(mixed[0], tmp_path / "server.log")
    try:
        status, body = server.predict(TEXTS, top_k=2)
        assert status == 200
        want = run_model.predict(TEXTS, top_k=2)
        for got, expected in zip(body["predictions"], want):
            assert got["topic"]["label"] == expected["topic"]["label"]
            assert got["tags"]["labels"] == expected["tags"]["labels"]
            assert got["tags"]["scores"] == pytest.approx(expected["tags"]["scores"], abs=1e-5)
            assert got["rating"]["value"] == pytest.approx(expected["rating"]["value"], abs=1e-5)
        status, info = server.request("GET", "/info")
        assert status == 200 and info["task_types"] == json.loads(json.dumps(run_model.info()["task_types"]))
        assert info["tasks"]["rating"] == []
    finally:
        assert server.stop() == 0


# ---- the exports ------------------------------------------------------------------------------


def same_predictions(got: list[dict], want: list[dict]) -> None:
    for a, b in zip(got, want):
        assert a["topic"]["label"] == b["topic"]["label"]
        assert a["topic"]["score"] == pytest.approx(b["topic"]["score"], abs=1e-4)
        assert a["tags"]["labels"] == b["tags"]["labels"]
        assert a["tags"]["scores"] == pytest.approx(b["tags"]["scores"], abs=1e-4)
        assert a["rating"]["value"] == pytest.approx(b["rating"]["value"], abs=1e-4)


@pytest.mark.slow
def test_onnx_outputs_follow_each_type_and_match_pytorch(exports, mixed, run_model):
    import onnx
    import onnxruntime as ort
    from transformers import AutoTokenizer

    folder = exports["onnx"]
    graph = onnx.load(str(folder / "model.onnx")).graph
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert outputs == {"embedding": ["batch", 32], "probs_topic": ["batch", 3], "probs_tags": ["batch", 3],
                       "value_rating": ["batch"]}
    meta = json.loads((folder / "mtl_config.json").read_text())
    assert meta["task_types"] == json.loads(json.dumps(run_model.info()["task_types"]))
    assert json.loads((folder / "labels.json").read_text())["rating"] == []

    # ONNX Runtime alone, as docs/export.md shows it
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    enc = tokenizer(TEXTS, truncation=True, max_length=run_model.max_length, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = ["probs_topic", "probs_tags", "value_rating", "embedding"]
    got = dict(zip(names, session.run(names, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})))
    want = run_model.probs(TEXTS, with_embeddings=True)
    for name, key in zip(names, ["topic", "tags", "rating", "_embeddings"]):
        assert got[name].shape == want[key].shape, name
        assert np.abs(got[name] - want[key]).max() <= 1e-4, name
    np.testing.assert_allclose(got["probs_topic"].sum(1), 1.0, atol=1e-5)  # softmax
    assert not np.allclose(got["probs_tags"].sum(1), 1.0, atol=1e-3)  # a sigmoid per label

    # through mtl: the same outputs as the run's, batch by batch, and the same predictions
    exported = Model.load(folder, device="cpu")
    assert {t: task.type for t, task in exported.tasks.items()} == TYPES
    assert exported.tasks["rating"].params == run_model.tasks["rating"].params
    for batch_size in (1, 3, 64):
        ours = exported.probs(TEXTS, batch_size=batch_size, with_embeddings=True)
        assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {k: (v.shape, v.dtype) for k, v in want.items()}
        for key in want:
            assert np.abs(ours[key] - want[key]).max() <= 1e-4, (key, batch_size)
    empty, empty_run = exported.probs([], with_embeddings=True), run_model.probs([], with_embeddings=True)
    assert {k: v.shape for k, v in empty.items()} == {k: v.shape for k, v in empty_run.items()}
    same_predictions(exported.predict(TEXTS, top_k=2), run_model.predict(TEXTS, top_k=2))
    assert exported.info()["task_types"] == run_model.info()["task_types"]


@pytest.mark.slow
def test_sentence_transformers_export_describes_and_keeps_each_type(exports, mixed, run_model, cli):
    from safetensors import safe_open

    folder = exports["sentence-transformers"]
    with safe_open(str(folder / "heads.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["task_types"]) == TYPES
    card = (folder / "README.md").read_text()
    val = run_model.info()["validation"]
    rating = run_model.tasks["rating"].params
    assert "| topic | classification | electronics, food, travel | accuracy " in card
    assert f"| rating | regression | a number in the column's units (training mean {rating['mean']:.4g}, " \
           f"std {rating['std']:.4g}) | RMSE {val['val_rating_rmse']:.4f}, MAE " in card
    thresholds = run_model.tasks["tags"].params["thresholds"]
    assert f"| tags | multilabel | bad (threshold {thresholds[0]:.2f}), gadget " in card
    assert f"macro-F1 {val['val_tags_f1']:.4f}, micro-F1 {val['val_tags_microf1']:.4f}" in card
    assert "A multi-task text model" in card and "times `std` plus `mean`" in card

    exported = Model.load(folder, device="cpu", precision="fp32")
    assert exported.info()["task_types"] == run_model.info()["task_types"]
    a, b = exported.probs(TEXTS, with_embeddings=True), run_model.probs(TEXTS, with_embeddings=True)
    for key in b:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    same_predictions(exported.predict(TEXTS, top_k=2), run_model.predict(TEXTS, top_k=2))
    for path in (folder, exports["onnx"]):  # mtl predict on either export: what it gives on the run
        got = cli("predict", path, *TEXTS, "--format", "jsonl", "--top-k", "2")
        assert got.exit_code == 0, got.output
        same_predictions([json.loads(line) for line in got.stdout.splitlines()], run_model.predict(TEXTS, top_k=2))


# ---- resume --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_mixed_run_stopped_and_resumed_logs_what_the_unstopped_run_logged(cli, mixed, tiny_model, tmp_path):
    from test_resume import SignalAt, metrics

    from mtlcli import config as config_mod
    from mtlcli.training.interrupt import TrainingInterrupted
    from mtlcli.training.run import train

    whole, val_csv = mixed
    values = {"data": str(val_csv.with_name("train.csv")), "val": str(val_csv), "model": tiny_model, "epochs": 2,
              "batch_size": 16, "lr_backbone": 1e-3, "lr_heads": 3e-3, "precision": "fp32",
              "task_types": {"tags": "multilabel", "rating": "regression"}, "out": str(tmp_path / "runs"),
              "name": "stopped"}  # as train_flags: the fixture's `mtl train`
    with pytest.raises(TrainingInterrupted):
        train(config_mod.resolve(None, values), SignalAt(2, 3))
    run = tmp_path / "runs" / "stopped"
    assert len(metrics(run)) == 1
    result = cli("train", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert metrics(run) == metrics(whole)
    resumed, original = Model.load(run, device="cpu", precision="fp32"), Model.load(whole, device="cpu", precision="fp32")
    assert resumed.info()["task_types"] == original.info()["task_types"]
    same_predictions(resumed.predict(TEXTS), original.predict(TEXTS))
