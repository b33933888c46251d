"""Start-up: `mtl predict` loads only what it runs. A BERT run predicts without importing transformers
(mtlcli.model.bert, the tokenizer read from tokenizer.json) and gives transformers' results to the
bit; an ONNX export predicts without importing torch. How long start-up takes is measured by
benchmarks/startup.py, not here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import sample_rows, write_csv

TEXTS = ["The laptop is excellent.", "The soup was a huge disappointment. Never again.", "ok"]

# runs `mtl ARGS...` in a fresh interpreter, then prints which heavy packages it imported
SCRIPT = """\
import json, sys
from mtlcli.cli.app import app
try:
    app(sys.argv[1:])
except SystemExit as stop:
    assert not stop.code, f"exit code {stop.code}"
print(json.dumps(sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'transformers', 'onnxruntime'})))
"""


def predict_in_new_process(folder: Path) -> tuple[list[dict], list[str]]:
    """`mtl predict FOLDER TEXTS` in its own process: the predictions, and the heavy packages it imported."""
    argv = [sys.executable, "-c", SCRIPT, "predict", str(folder), *TEXTS, "--format", "jsonl"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    *records, imported = done.stdout.splitlines()
    return [json.loads(r) for r in records], json.loads(imported)


@pytest.mark.slow
def test_predict_on_a_bert_run_does_not_import_transformers(trained_run):
    records, imported = predict_in_new_process(trained_run[0])
    assert imported == ["torch"]
    labels = json.loads((Path(trained_run[0]) / "labels.json").read_text())
    assert [r["text"] for r in records] == TEXTS
    assert all(r[task]["label"] in labels[task] for r in records for task in labels)


@pytest.mark.slow
def test_training_a_bert_does_not_import_transformers(tiny_model, tmp_path):
    data = write_csv(tmp_path / "few.csv", sample_rows(40))
    argv = [sys.executable, "-c", SCRIPT, "train", str(data), "--model", tiny_model, "--epochs", "1",
            "--out", str(tmp_path / "runs"), "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["torch"]
    assert (tmp_path / "runs" / "latest" / "backbone" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_predict_on_an_onnx_export_imports_neither_torch_nor_transformers(trained_run, onnx_export):
    records, imported = predict_in_new_process(onnx_export)
    assert imported == ["onnxruntime"]
    from_run, _ = predict_in_new_process(trained_run[0])
    for onnx_record, run_record in zip(records, from_run):
        for task in json.loads((onnx_export / "labels.json").read_text()):
            assert onnx_record[task]["label"] == run_record[task]["label"]
            assert onnx_record[task]["score"] == pytest.approx(run_record[task]["score"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_native_bert_gives_transformers_outputs_to_the_bit(trained_run, precision):
    from mtlcli.inference.loaded_run import load_run

    texts = [r[0] for r in sample_rows(80)] + ["", "word " * 400]  # an empty text, and one cut at max length
    native = load_run(trained_run[0], "cpu", precision)
    reference = load_run(trained_run[0], "cpu", precision, native=False)
    assert type(native.model.backbone).__module__ == "mtlcli.model.bert"
    assert type(reference.model.backbone).__module__.startswith("transformers.")
    a = native.probs(texts, batch_size=16, with_embeddings=True)
    b = reference.probs(texts, batch_size=16, with_embeddings=True)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_tokenizer_file_gives_the_transformers_tokenizers_ids(tiny_model):
    from transformers import AutoTokenizer

    from mtlcli.data.batching import tokenize
    from mtlcli.data.tokenizer_file import open_tokenizer_file

    texts = [r[0] for r in sample_rows(200)] + ["", "  ", "[CLS] [PAD] tokens as text", "héllo wörld 中文 😀",
                                                 "word " * 400]
    ours, theirs = open_tokenizer_file(Path(tiny_model)), AutoTokenizer.from_pretrained(tiny_model)
    assert ours.pad_token_id == theirs.pad_token_id is not None
    for max_length in (4, 16, 128):
        ids, lengths = tokenize(ours, texts, max_length)
        want_ids, want_lengths = tokenize(theirs, texts, max_length)
        np.testing.assert_array_equal(lengths, want_lengths)
        np.testing.assert_array_equal(ids, want_ids)
        assert lengths.max() == max_length


def test_tokenizers_of_other_classes_are_left_to_transformers(tiny_model, tmp_path):
    from mtlcli.data.tokenizer_file import open_tokenizer_file

    shutil.copy(Path(tiny_model) / "tokenizer.json", tmp_path)
    config = json.loads((Path(tiny_model) / "tokenizer_config.json").read_text())
    for change in ({"tokenizer_class": "RobertaTokenizer"}, {"split_special_tokens": True}):
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, **change}))
        assert open_tokenizer_file(tmp_path) is None, change
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert open_tokenizer_file(tmp_path) is not None


def test_other_architectures_are_left_to_transformers(tiny_model, tmp_path):
    from mtlcli.model.bert import native_config

    config = json.loads((Path(tiny_model) / "config.json").read_text())
    assert native_config(Path(tiny_model)).hidden_size == config["hidden_size"]
    for change in ({"model_type": "roberta"}, {"hidden_act": "gelu_new"}, {"position_embedding_type": "relative_key"},
                   {"is_decoder": True}, {"chunk_size_feed_forward": 8}):
        (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
        assert native_config(tmp_path) is None, change
    assert native_config(tmp_path / "missing") is None
