"""The Python API: Model.load once, then predict (the objects of `mtl predict --format jsonl`) and embed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mtlcli import Model
from mtlcli.errors import UserError
from test_predict import TEXTS, model_outputs


def test_predict_returns_what_mtl_predict_writes(cli, trained_run):
    run = trained_run[0]
    model = Model.load(run, device="cpu", precision="fp32")
    got = model.predict(TEXTS, top_k=2, batch_size=2)
    result = cli("predict", run, *TEXTS, "--format", "jsonl", "--top-k", "2", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert got == [json.loads(line) for line in result.stdout.splitlines()]
    label_sets, probs, _ = model_outputs(run, TEXTS)  # each text alone, straight through the modules
    for i, record in enumerate(got):
        for task, labels in label_sets.items():
            assert record[task]["label"] == labels[int(probs[task][i].argmax())]
            assert record[task]["score"] == pytest.approx(float(probs[task][i].max()), abs=1e-5)
            assert len(record[task]["top"]) == 2 and record[task]["top"][0][1] >= record[task]["top"][1][1]


def test_embed_and_probs_match_the_modules(trained_run):
    run = trained_run[0]
    model = Model.load(run, device="cpu", precision="fp32")
    _, probs, vectors = model_outputs(run, TEXTS)
    got = model.embed(TEXTS, batch_size=2)
    assert got.shape == (3, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, vectors, atol=1e-5)
    out = model.probs(TEXTS, device="cpu")
    for task in model.tasks:
        np.testing.assert_allclose(out[task], probs[task], atol=1e-5)
    assert model.device == "cpu" and model.precision == "fp32" and model.kind == "run"


def test_info_names_tasks_labels_and_validation(trained_run):
    model = Model.load(trained_run[0], device="cpu")
    info = model.info()
    assert info["tasks"] == model.labels == json.loads((trained_run[0] / "labels.json").read_text())
    assert set(info["tasks"]) == {"class_label", "sentiment_label"}
    assert {"val_loss", "val_class_label_acc", "val_sentiment_label_f1"} <= set(info["validation"])
    summary = json.loads((trained_run[0] / "summary.json").read_text())
    assert info["validation"]["val_loss"] == pytest.approx(summary["best_val_loss"])


def test_bad_paths_and_arguments(trained_run, tmp_path):
    with pytest.raises(UserError, match="no such run folder or export"):
        Model.load(tmp_path / "nope")
    with pytest.raises(UserError, match="not an mtl run folder .* nor an export"):
        Model.load(tmp_path)
    model = Model.load(trained_run[0], device="cpu")
    with pytest.raises(TypeError, match="not one string"):
        model.predict("one text")
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        model.predict(["fine", 3])
    with pytest.raises(ValueError, match=r"^texts\[1\] is empty \(only whitespace\); every text needs words$"):
        model.predict(["fine", " \t"])  # as mtl predict and mtl serve refuse it
    with pytest.raises(ValueError, match=r"^texts\[0\] is empty; every text needs words$"):
        model.embed([""])
    with pytest.raises(ValueError, match="top_k"):
        model.predict(["fine"], top_k=0)
    assert model.predict([]) == []


def test_importing_the_package_does_not_load_torch():
    code = "import sys, mtlcli; print(mtlcli.Model.__name__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["Model", "False"]  # torch comes with Model.load, not with the import
