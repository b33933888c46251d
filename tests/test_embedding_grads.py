"""The word embeddings' gradient made from the rows a step read (training/embedding_grads.py): the
dense gradient the optimizer takes is the one the dense backward pass makes, to the bit, and a
training run is the same run."""

from __future__ import annotations

import torch
from torch import nn

from conftest import assert_same_run
from mtlcli.training import embedding_grads
from mtlcli.training.embedding_grads import RowGradients

PAD = 0
# each step reads other rows (a row left from the step before would stay in the gradient), with repeats and padding
STEPS = [torch.tensor([[3, 7, 7, 2, PAD], [9, 3, PAD, PAD, PAD]]),
         torch.tensor([[11, 12, 5, 5, 5], [4, 1, 13, PAD, PAD]]),
         torch.tensor([[3, 14, 14, 6, 2], [PAD, PAD, PAD, PAD, PAD]])]


class Words(nn.Module):
    def __init__(self, rows_as_read: bool):
        super().__init__()
        torch.manual_seed(0)
        self.words = nn.Embedding(16, 8, padding_idx=PAD)
        self.layer = nn.Linear(8, 3)
        self.rows = RowGradients(self.words if rows_as_read else None)

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.tanh(self.words(ids))).pow(2).sum()


def test_the_gradient_made_from_rows_is_the_dense_one_to_the_bit_step_after_step():
    dense, rows = Words(rows_as_read=False), Words(rows_as_read=True)
    buffers = set()
    for ids in STEPS:
        for model in (dense, rows):
            model.words.weight.grad = None  # as the loop drops it before each backward pass
            model.loss(ids).backward()
        assert rows.words.weight.grad.is_sparse and not dense.words.weight.grad.is_sparse
        rows.rows.densify()
        assert torch.equal(rows.words.weight.grad, dense.words.weight.grad)
        buffers.add(rows.words.weight.grad.data_ptr())
    assert len(buffers) == 1  # one buffer for the whole run


def test_parts_of_a_step_add_up_to_the_dense_gradient():
    dense, rows = Words(rows_as_read=False), Words(rows_as_read=True)
    for model in (dense, rows):
        for ids in STEPS:  # three parts of one step (gradient accumulation)
            model.loss(ids).backward()
    rows.rows.densify()
    assert torch.allclose(rows.words.weight.grad, dense.words.weight.grad, rtol=1e-6, atol=1e-7)


def test_only_a_trained_table_of_a_one_process_cpu_run_takes_rows():
    model = nn.Module()
    model.backbone = nn.Module()
    words = nn.Embedding(16, 8)
    model.backbone.get_input_embeddings = lambda: words
    assert RowGradients.of(model, torch.device("cpu"), distributed=False).weights == [words.weight]
    assert RowGradients.of(model, torch.device("cpu"), distributed=True).weights == []
    assert RowGradients.of(model, torch.device("cuda"), distributed=False).weights == []
    words.weight.requires_grad_(False)  # --freeze embeddings
    assert RowGradients.of(model, torch.device("cpu"), distributed=False).weights == []


def test_a_run_with_rows_is_the_dense_run_to_the_bit(cli, small_csv, train_args, tmp_path, monkeypatch):
    densified = []
    densify = RowGradients.densify

    def counted(self):
        densified.append(self.weight is not None and self.weight.grad is not None and self.weight.grad.is_sparse)
        densify(self)

    monkeypatch.setattr(RowGradients, "densify", counted)
    args = [small_csv, *train_args, "--epochs", "1", "--seed", "3"]
    assert cli("train", *args, "--name", "rows").exit_code == 0
    assert densified and all(densified)  # every step's gradient came as rows
    monkeypatch.setattr(embedding_grads.RowGradients, "of", classmethod(lambda cls, *a: cls(None)))
    assert cli("train", *args, "--name", "dense").exit_code == 0
    assert_same_run(tmp_path / "runs" / "rows", tmp_path / "runs" / "dense")
