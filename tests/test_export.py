"""mtl export: a sentence-transformers folder that sentence-transformers loads without mtl, and an
ONNX graph that ONNX Runtime runs to the same numbers; both load back into mtl without pickle."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT, sample_rows, write_csv
from mtlcli import Model

TEXTS = [row[0] for row in sample_rows(40)] + ["ok", "A much longer text " * 40]


@pytest.fixture(scope="module")
def cls_run(tiny_model, tmp_path_factory):
    """A second tiny run, with CLS pooling and L2 normalization (the trained_run fixture: mean, none)."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("cls")
    data = write_csv(folder / "train.csv", sample_rows(120))
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(folder), "--name", "cls", "--model", tiny_model,
                                      "--epochs", "1", "--pooling", "cls", "--normalize", "--precision", "fp32", "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "cls"


@pytest.fixture(scope="module")
def st_export(trained_run, tmp_path_factory):
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    out = tmp_path_factory.mktemp("exports") / "st"
    result = CliRunner().invoke(app, ["export", str(trained_run[0]), "--format", "sentence-transformers", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def encode_without_mtl(folders, texts, tmp_path) -> list[np.ndarray]:
    """SentenceTransformer(folder).encode for each folder, in one Python where `import mtlcli` fails."""
    code = ("import json, sys\n"
            "sys.modules['mtlcli'] = None  # no mtl here: importing it raises ImportError\n"
            "import numpy as np\n"
            "from sentence_transformers import SentenceTransformer\n"
            "texts = json.load(open(sys.argv[1], encoding='utf-8'))\n"
            "for i, folder in enumerate(sys.argv[2:]):\n"
            "    model = SentenceTransformer(folder, device='cpu')\n"
            "    np.save(f'v{i}.npy', model.encode(texts, batch_size=16, convert_to_numpy=True))\n"
            "assert not [name for name, module in sys.modules.items() if name.startswith('mtlcli') and module]\n")
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "texts.json"), *map(str, folders)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return [np.load(tmp_path / f"v{i}.npy") for i in range(len(folders))]


def test_sentence_transformers_folder_is_standard_and_complete(st_export, trained_run):
    names = {p.relative_to(st_export).as_posix() for p in st_export.rglob("*") if p.is_file()}
    assert {"modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "config.json", "model.safetensors",
            "heads.safetensors", "labels.json", "mtl_config.json", "README.md", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".pt", ".bin", ".pkl", ".pickle"))]  # safetensors only
    umask = os.umask(0)
    os.umask(umask)
    assert {oct((st_export / n).stat().st_mode & 0o777) for n in names} == {oct(0o666 & ~umask)}
    pooling = json.loads((st_export / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert "2_Normalize" not in {n.split("/")[0] for n in names}  # the run did not normalize
    assert json.loads((st_export / "labels.json").read_text()) == json.loads((trained_run[0] / "labels.json").read_text())
    card = (st_export / "README.md").read_text()
    summary = json.loads((trained_run[0] / "summary.json").read_text())
    acc = summary["best_metrics"]["val_class_label_acc"]
    assert "| class_label | classification | electronics, food, travel | accuracy " in card
    assert f"{acc:.4f}" in card and "`train.csv`" in card and 'SentenceTransformer("st")' in card


def test_sentence_transformers_alone_gives_mtls_embeddings(st_export, trained_run, cls_run, tmp_path, cli):
    cls_export = tmp_path / "cls-export"
    result = cli("export", cls_run, "--format", "sentence-transformers", "--out", cls_export)
    assert result.exit_code == 0, result.output
    assert (cls_export / "2_Normalize").is_dir()
    theirs = encode_without_mtl([st_export, cls_export], TEXTS, tmp_path)
    for run, vectors in zip([trained_run[0], cls_run], theirs):  # mean pooling; CLS pooling + L2 normalization
        ours = Model.load(run, device="cpu", precision="fp32").embed(TEXTS)
        assert vectors.shape == ours.shape == (len(TEXTS), 32)
        np.testing.assert_allclose(vectors, ours, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(theirs[1], axis=1), 1.0, atol=1e-5)


def test_export_loads_back_without_unpickling(st_export, trained_run, monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("an export must load without pickle")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(module, name, refuse)
    exported = Model.load(st_export, device="cpu", precision="fp32")
    monkeypatch.undo()
    run = Model.load(trained_run[0], device="cpu", precision="fp32")
    assert exported.kind == "sentence-transformers" and exported.labels == run.labels
    a, b = exported.probs(TEXTS, with_embeddings=True), run.probs(TEXTS, with_embeddings=True)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    assert exported.info()["validation"] == run.info()["validation"]


def test_mtl_predict_reads_an_export(cli, st_export, onnx_export, trained_run):
    want = cli("predict", trained_run[0], *TEXTS[:5], "--format", "jsonl", "--precision", "fp32", "--top-k", "2")
    for folder in (st_export, onnx_export):
        got = cli("predict", folder, *TEXTS[:5], "--format", "jsonl", "--top-k", "2")
        assert got.exit_code == 0, got.output
        for a, b in zip(map(json.loads, got.stdout.splitlines()), map(json.loads, want.stdout.splitlines())):
            for task in ("class_label", "sentiment_label"):
                assert a[task]["label"] == b[task]["label"]
                assert [x[0] for x in a[task]["top"]] == [x[0] for x in b[task]["top"]]
                assert a[task]["score"] == pytest.approx(b[task]["score"], abs=1e-4)


def test_onnx_graph_has_dynamic_axes_and_matches_pytorch(onnx_export, trained_run):
    import onnx

    graph = onnx.load(str(onnx_export / "model.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]}
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert outputs == {"embedding": ["batch", 32], "probs_class_label": ["batch", 3], "probs_sentiment_label": ["batch", 3]}
    exported = Model.load(onnx_export, device="cpu")
    run = Model.load(trained_run[0], device="cpu", precision="fp32")
    assert exported.kind == "onnx" and exported.precision == "fp32"
    want = run.probs(TEXTS, with_embeddings=True)
    for batch_size in (1, 7, 64):  # batches of every shape the sorted texts make
        got = exported.probs(TEXTS, batch_size=batch_size, with_embeddings=True)
        for key in want:
            assert np.abs(got[key] - want[key]).max() <= 1e-4, (key, batch_size)
    assert [r["sentiment_label"]["label"] for r in exported.predict(TEXTS)] == [
        r["sentiment_label"]["label"] for r in run.predict(TEXTS)]


def docs_onnx_block() -> str:
    """The block of docs/export.md that runs an ONNX export with ONNX Runtime and the folder's tokenizer."""
    doc = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    blocks = re.findall(r"\n\n((?:    .*\n|\n)+?)(?=\S)", doc[doc.index("## ONNX"):])
    block = next(b for b in blocks if "session.run(" in b)
    return textwrap.dedent(block)


def test_onnx_export_alone_as_the_docs_show_gives_mtls_predictions(onnx_export, trained_run, tmp_path):
    """docs/export.md's block, run as written in a Python without mtl (only the folder and texts
    replaced), on texts longer than the run's max length and past the model's position limit."""
    run = Model.load(trained_run[0], device="cpu", precision="fp32")
    texts = TEXTS + [" ".join(["The soup was cold and the waiter rude."] * 60)]  # over 256 positions
    from transformers import AutoTokenizer

    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(str(onnx_export))(texts)["input_ids"]]
    assert max(lengths) > 256 > run.max_length and sum(n > run.max_length for n in lengths) >= 2
    block = docs_onnx_block()
    assert 'tokenizer(texts, truncation=True, padding=True, return_tensors="np")' in block
    assert "session.run(None, dict(encoded))" in block
    code = ("import json, sys\n"
            "sys.modules['mtlcli'] = None  # no mtl here: importing it raises ImportError\n"
            + re.sub(r"(?m)^folder = .*$", "folder = sys.argv[1]",
                     re.sub(r"(?m)^texts = .*$", "texts = json.load(open(sys.argv[2], encoding='utf-8'))", block))
            + "import numpy as np\n"
            "np.savez('out.npz', **out)\n"
            "untruncated = tokenizer(texts, padding=True, return_tensors='np')\n"
            "np.savez('untruncated.npz', **dict(zip(out, session.run(None, dict(untruncated)))))\n")
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", code, str(onnx_export), str(tmp_path / "texts.json")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    want = run.probs(texts, with_embeddings=True)
    for name in ("out", "untruncated"):
        got = dict(np.load(tmp_path / f"{name}.npz"))
        assert set(got) == {"embedding", "probs_class_label", "probs_sentiment_label"}
        np.testing.assert_allclose(got["embedding"], want["_embeddings"], atol=1e-4, rtol=0, err_msg=name)
        for task in ("class_label", "sentiment_label"):
            np.testing.assert_allclose(got[f"probs_{task}"], want[task], atol=1e-4, rtol=0, err_msg=name)
    config = json.loads((onnx_export / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == run.max_length
    assert config["model_input_names"] == ["input_ids", "attention_mask"]


def test_export_errors_are_one_line(cli, trained_run, st_export, onnx_export, tmp_path, monkeypatch):
    result = cli("export", trained_run[0], "--format", "sentence-transformers", "--out", st_export)
    assert result.exit_code == 2 and "exists and is not an empty folder" in result.output
    result = cli("export", trained_run[0], "--format", "tflite", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "--format tflite: must be one of sentence-transformers, onnx" in result.output
    result = cli("export", tmp_path / "nope", "--format", "onnx", "--out", tmp_path / "y")
    assert result.exit_code == 2 and "no such run folder" in result.output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    result = cli("export", trained_run[0], "--format", "onnx", "--out", tmp_path / "z")
    assert result.exit_code == 2 and 'pip install "mtlcli[onnx]"' in result.output and "Traceback" not in result.output
    assert not (tmp_path / "z").exists() and not list(tmp_path.glob(".z.tmp-*"))
    result = cli("predict", onnx_export, "Some text.")
    assert result.exit_code == 2 and 'pip install "mtlcli[onnx]"' in result.output


def test_plugin_pooler_cannot_go_to_sentence_transformers():
    from mtlcli.config import TrainConfig
    from mtlcli.errors import UserError
    from mtlcli.export.sentence_transformers import check_exportable

    with pytest.raises(UserError, match="pools with 'attention'.*--format onnx"):
        check_exportable(TrainConfig(pooling="attention"))


def test_saved_settings_are_read_leniently():
    from mtlcli.config import SAVED_MAX_LENGTH, TrainConfig

    # a run from another version of mtl: a key this one does not know, none for max_length, text_column, pooling
    old = TrainConfig.from_saved({"head": "mlp", "retired_key": 1})
    assert old == TrainConfig(head="mlp", max_length=SAVED_MAX_LENGTH)
    assert TrainConfig.from_saved({"max_length": "auto"}).max_length == SAVED_MAX_LENGTH
    assert TrainConfig.from_saved({"max_length": 12, "text_column": "review"}).text_column == "review"


def test_a_runs_max_length_and_text_column_hold_in_every_format(tiny_model, tmp_path_factory):
    """Read back once (TrainConfig.from_saved), a run's settings are the same from its checkpoint,
    a sentence-transformers export and an ONNX export: texts cut where the run cut them, tables read
    from the run's text column."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("review")
    data = write_csv(folder / "train.csv", sample_rows(120), header=["review", "class_label", "sentiment_label"])
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(data), "--out", str(folder), "--name", "run", "--model", tiny_model,
                                 "--epochs", "1", "--text-column", "review", "--max-length", "12", "--precision", "fp32",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    paths = {"run": folder / "run"}
    for kind in ("sentence-transformers", "onnx"):
        paths[kind] = folder / kind
        result = runner.invoke(app, ["export", str(folder / "run"), "--format", kind, "--out", str(paths[kind])])
        assert result.exit_code == 0, result.output
    assert json.loads((paths["sentence-transformers"] / "sentence_bert_config.json").read_text())["max_seq_length"] == 12
    for kind in ("sentence-transformers", "onnx"):  # a plain tokenizer(texts, truncation=True) cuts where the run did
        assert json.loads((paths[kind] / "tokenizer_config.json").read_text())["model_max_length"] == 12, kind
    assert "| max length | 12 tokens |" in (paths["onnx"] / "README.md").read_text()
    texts = [TEXTS[0], "ok"]
    cut = ["one two three four five six seven eight nine ten eleven twelve", "ok"]  # beyond 12 tokens: same ids
    longer = [cut[0] + " and many more words that a run cut at 12 tokens never reads", "ok"]
    table = write_csv(folder / "in.csv", [[t] for t in texts], header=["review"])
    want = Model.load(paths["run"], device="cpu", precision="fp32").probs(texts)
    for kind, path in paths.items():
        model = Model.load(path, device="cpu", precision="fp32")
        assert (model.max_length, model.text_column) == (12, "review"), kind
        assert model.saved.settings.max_length == 12 and model.config["text_column"] == "review"
        assert {model.info()[k] for k in ("max_length", "text_column")} == {12, "review"}
        a, b = model.probs(cut, with_embeddings=True), model.probs(longer, with_embeddings=True)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=kind)
        result = runner.invoke(app, ["predict", str(path), "--input", str(table), "--format", "jsonl"])
        assert result.exit_code == 0, result.output
        got = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["text"] for r in got] == texts
        for task, probs in want.items():
            assert [r[task]["score"] for r in got] == pytest.approx(probs.max(axis=1), abs=1e-4), kind
