"""CUDA graphs for the training step and for prediction: where they are used, how inference pads
its batches, and that recorded passes compute what op-by-op passes do (the last test needs a CUDA
device and is skipped without one)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mtlcli.components.combiners import DynamicWeightAverage
from mtlcli.runtime.cuda_graphs import ForwardGraphs, graph_blocker, padded_rows

CUDA = torch.device("cuda")  # a device object needs no GPU; only running on it does


class PluginHead(nn.Linear):
    __module__ = "mtl_plugin_example.heads"


def test_graphs_are_used_on_one_cuda_process_with_every_row_labelled_and_built_in_parts():
    assert graph_blocker(CUDA, [nn.Linear(4, 2), DynamicWeightAverage(["a", "b"])]) is None


@pytest.mark.parametrize("change, reason", [
    ({"device": torch.device("cpu")}, "not on CUDA"),
    ({"loss_scaling": True}, "fp16 (loss scaling reads"),
    ({"distributed": True}, "several processes"),
    ({"partial_labels": True}, "some training rows lack a task's label"),
    ({"accumulating": True}, "gradient accumulation (--grad-accum above 1)"),
    ({"checkpointing": True}, "gradient checkpointing"),
    ({"modules": [nn.Sequential(PluginHead(4, 2))]}, "components from mtl_plugin_example"),
])
def test_what_keeps_the_model_op_by_op(change, reason):
    args = {"device": CUDA, "modules": [nn.Linear(4, 2)], **change}
    assert graph_blocker(**args).startswith(reason)


@pytest.mark.parametrize("n, batch_size, rows", [
    (1, 256, 64), (64, 256, 64), (65, 256, 128), (100, 256, 128), (129, 256, 256), (256, 256, 256),
    (300, 1000, 512), (513, 1000, 1000), (1000, 1000, 1000), (5, 32, 32), (32, 32, 32)])
def test_inference_batches_are_padded_to_a_few_row_counts(n, batch_size, rows):
    assert padded_rows(n, batch_size) == rows


def test_inference_runs_op_by_op_once_recording_failed():
    graphs = ForwardGraphs(lambda ids, mask: (ids * mask, {"t": ids.float()}))
    graphs.graphs.failed = True
    pooled, logits = graphs(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 1], [1, 0]]), 256)
    assert pooled.tolist() == [[1, 2], [3, 0]] and logits["t"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_no_cuda_graphs_is_a_flag_and_a_config_key(cli, small_csv, train_args, tmp_path):
    result = cli("train", small_csv, *train_args, "--epochs", "1", "--no-cuda-graphs", "--name", "eager")
    assert result.exit_code == 0, result.output
    config = (tmp_path / "runs" / "eager" / "config.yaml").read_text()
    assert "cuda_graphs: false" in config


def _no_dropout_copy(tiny_model: str, tmp_path: Path) -> str:
    """The tiny model without dropout, so that both ways of running a step compute the same numbers."""
    folder = tmp_path / "no-dropout"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_recorded_steps_train_as_op_by_op_steps_do(cli, small_csv, tiny_model, tmp_path):
    model = _no_dropout_copy(tiny_model, tmp_path)
    common = ["--model", model, "--epochs", "3", "--batch-size", "16", "--lr-backbone", "1e-3", "--lr-heads", "3e-3",
              "--precision", "fp32", "--device", "cuda", "--loss-combiner", "dwa", "--quiet"]
    logs = {}
    for name, flag in (("graphs", "--cuda-graphs"), ("eager", "--no-cuda-graphs")):
        result = cli("train", small_csv, *common, flag, "--name", name)
        assert result.exit_code == 0, result.output
        assert "CUDA graphs are off" not in result.output
        logs[name] = [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    assert len(logs["graphs"]) == len(logs["eager"]) == 3
    for graphed, eager in zip(logs["graphs"], logs["eager"]):  # epoch 3 runs on DWA's new weights
        for key in ("train_loss", "val_loss", "train_class_label_acc", "val_sentiment_label_acc"):
            assert graphed[key] == pytest.approx(eager[key], rel=2e-3, abs=1e-4), key

    # predictions: recorded forward passes (rows padded up to a power of two) give what op by op gives
    from mtlcli.inference.loaded_run import load_run

    texts = [row[0] for row in csv.reader(small_csv.open(encoding="utf-8"))][1:]
    graphed, plain = load_run(tmp_path / "runs" / "graphs", device="cuda"), load_run(tmp_path / "runs" / "graphs",
                                                                                      device="cuda")
    plain._graphs = False
    a, b = graphed.probs(texts, batch_size=32, with_embeddings=True), plain.probs(texts, batch_size=32,
                                                                                   with_embeddings=True)
    assert isinstance(graphed._graphs, ForwardGraphs) and graphed._graphs.graphs.graphs
    assert not graphed._graphs.graphs.failed
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=2e-3)
    shapes = len(graphed._graphs.graphs.graphs)
    c = graphed.probs(texts, batch_size=100, with_embeddings=True)  # rows padded up to 100, not beyond
    assert {rows for rows, _ in graphed._graphs.graphs.graphs} - {32} <= {64, 100}
    assert len(graphed._graphs.graphs.graphs) > shapes
    for key in a:
        np.testing.assert_allclose(c[key], b[key], atol=2e-3)
