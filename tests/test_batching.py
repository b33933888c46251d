"""Token storage and batch shapes: compact ids, a bounded set of widths, results independent of batch neighbours."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, sample_rows, write_csv
from mtlcli.data.batching import collate, encode, sorted_batches, train_batches, width_multiple
from mtlcli.inference.loaded_run import load_run, predict_batches
from mtlcli.model.network import load_tokenizer


def test_token_ids_are_one_flat_int32_array_that_gives_back_each_row(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    texts = [r[0] for r in sample_rows(50)]
    data = encode(tokenizer, texts, {"t": list(range(50))}, 24)
    assert data.ids.dtype == np.int32 and data.ids.ndim == 1 and len(data.ids) == data.lengths.sum()
    for i in (0, 17, 49):
        assert data.row(i) == tokenizer(texts[i], truncation=True, max_length=24)["input_ids"]
    batch = collate(data, np.array([3, 0, 9]), tokenizer.pad_token_id, torch.device("cpu"))
    assert batch.input_ids.shape == (3, int(data.lengths[[3, 0, 9]].max()))
    for j, i in enumerate((3, 0, 9)):
        n = int(data.lengths[i])
        assert batch.input_ids[j, :n].tolist() == data.row(i)
        assert batch.attention_mask[j].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
        assert set(batch.input_ids[j, n:].tolist()) <= {tokenizer.pad_token_id}
    assert batch.labels["t"].tolist() == [3, 0, 9]


def test_on_a_gpu_an_epoch_uses_a_bounded_set_of_widths(tiny_model):
    """What the GPU sees, counted on the CPU: widths rounded up to the GPU's multiple, never beyond max length."""
    tokenizer = load_tokenizer(tiny_model)
    texts = [r[0] for r in sample_rows()] * 3
    data = encode(tokenizer, texts, {}, 60)
    multiple = width_multiple(torch.device("cuda"))
    assert multiple > 1 and width_multiple(torch.device("cpu")) == 1  # fp32 on a CPU keeps nothing per shape
    # bf16 and int8 on a CPU: oneDNN keeps kernels per shape, so widths come from a bounded set there too
    assert width_multiple(torch.device("cpu"), "bf16") == width_multiple(torch.device("cpu"), "int8") == 8
    widths = {collate(data, rows, 0, torch.device("cpu"), multiple, 60).input_ids.shape[1]
              for rows in train_batches(data.lengths, 32, 0, 1)}
    widths |= {collate(data, rows, 0, torch.device("cpu"), multiple, 60).input_ids.shape[1]
               for rows in sorted_batches(data.lengths, 64, multiple, 60)}
    assert widths <= {w for w in range(multiple, 61, multiple)} | {60}
    assert len(widths) <= 60 // multiple + 1
    exact = {int(data.lengths[rows].max()) for rows in train_batches(data.lengths, 32, 0, 1)}
    assert len(exact) > len(widths)  # without rounding, nearly every batch would be a new shape


def test_inference_batches_hold_one_width_each_and_cover_every_row_once():
    lengths = np.array([5, 9, 12, 3, 16, 17, 7, 33, 8, 15, 16, 2])
    batches = sorted_batches(lengths, 3, 8, 40)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    widths = []
    for rows in batches:
        width = {-(-int(n) // 8) * 8 for n in lengths[rows]}
        assert len(width) == 1 and len(rows) <= 3
        widths += width
    assert widths == sorted(widths, reverse=True)  # widest first, so later batches reuse freed memory


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-5), ("bf16", 2e-2)])
def test_a_texts_scores_do_not_depend_on_the_texts_beside_it(trained_run, precision, tolerance):
    """Padded to its own width, a text gets the same scores alone or among 200 others, up to the
    rounding of matrix products whose row count differs; and the same label wherever it is not a near tie."""
    run, _ = trained_run
    loaded = load_run(run, device="cpu", precision=precision)
    texts = [r[0] for r in sample_rows(200)]
    together = predict_batches(loaded, texts, batch_size=64)
    for i in (0, 5, 77, 199):
        alone = predict_batches(loaded, [texts[i]], batch_size=64)
        for task in loaded.label_sets:
            a, b = alone[task][0], together[task][i]
            assert np.abs(a - b).max() <= tolerance, (precision, i, task, a, b)
            top2 = np.sort(b)[-2:]
            if top2[1] - top2[0] > 2 * tolerance:
                assert a.argmax() == b.argmax()


def _eval_labels(run, csv_path) -> dict[str, list[str]]:
    """The label `mtl eval` gives each row: its own evaluation code, read row by row."""
    from mtlcli.data import tables as data_mod
    from mtlcli.data.batching import encode
    from mtlcli.scoring.evaluation import evaluate
    from mtlcli.tasks.columns import encode_targets

    loaded = load_run(run, precision="run")
    table = data_mod.read_table(csv_path, "sentence", list(loaded.label_sets))
    encoded = encode(loaded.tokenizer, table.texts, encode_targets(table, loaded.tasks), loaded.max_length)
    result = evaluate(loaded.model, loaded.combiner, encoded, loaded.tasks, loaded.device,
                      loaded.amp, loaded.pad_id, loaded.max_length, loaded.objective)
    return {t: [loaded.label_sets[t][i] for i in r["outputs"].argmax(-1)] for t, r in result["tasks"].items()}


def _predict_labels(cli, run, csv_path) -> dict[str, list[str]]:
    predicted = cli("predict", run, "--input", csv_path, "--format", "jsonl")
    assert predicted.exit_code == 0, predicted.output
    rows = [json.loads(line) for line in predicted.stdout.splitlines() if line.strip()]
    return {t: [r[t]["label"] for r in rows] for t in rows[0] if t != "text"}


def test_eval_and_predict_agree_on_every_row_with_default_options(cli, trained_run):
    run, val_csv = trained_run
    assert _eval_labels(run, val_csv) == _predict_labels(cli, run, val_csv)
    scored = cli("eval", run, val_csv, "--json")
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.stdout)
    truth = [r[1:] for r in sample_rows()[120:180]]
    for t, task in enumerate(("class_label", "sentiment_label")):
        labels = report["tasks"][task]["labels"]
        cm = np.zeros((len(labels), len(labels)), dtype=int)
        for true, label in zip(truth, _predict_labels(cli, run, val_csv)[task]):
            cm[labels.index(true[t]), labels.index(label)] += 1
        assert cm.tolist() == report["tasks"][task]["confusion_matrix"], task


@pytest.mark.slow  # trains on the real data set
@pytest.mark.skipif(not (SHARED_DATA / "sentiment_labelled_sentences.csv").is_file(), reason="../shared/data is absent")
def test_eval_and_predict_agree_on_the_real_validation_split(cli, tmp_path):
    """The bundled MiniLM, default options: every row of sentiment_labelled_sentences.csv's own
    validation split gets the same labels from mtl eval's evaluation and from mtl predict."""
    from mtlcli.tasks.columns import load_train_val

    data = SHARED_DATA / "sentiment_labelled_sentences.csv"
    result = cli("train", data, "--epochs", "1", "--name", "real", "--quiet")
    assert result.exit_code == 0, result.output
    _, val, _, _ = load_train_val(str(data), None, "sentence", [], 0.2, 42)
    val_csv = write_csv(tmp_path / "val.csv", [[t, *labels] for t, *labels in zip(val.texts, *val.labels.values())],
                        ["sentence", *val.labels])
    run = tmp_path / "runs" / "real"
    assert _eval_labels(run, val_csv) == _predict_labels(cli, run, val_csv)
