"""Which gradient buffers the training loop keeps from step to step (zeroed in place) and which it
drops before each backward pass (training/loop.py gradient_buffers, clear_grads)."""

from __future__ import annotations

import torch
from torch import nn

from mtlcli.training.loop import OWN_MAPPING, clear_grads, gradient_buffers


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        rows = OWN_MAPPING // (64 * 4) + 1  # fp32: one row more than fits under OWN_MAPPING
        self.backbone = nn.ModuleDict({"words": nn.Embedding(rows, 64), "layer": nn.Linear(64, 64)})
        self.head = nn.Linear(64, 2)

    def forward(self, ids):
        return self.head(self.backbone["layer"](self.backbone["words"](ids))).sum()


def test_the_backbones_largest_tensor_is_dropped_and_its_gradient_is_each_steps_own():
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    kept, dropped = gradient_buffers(model, optimizer, [])
    words, layer = model.backbone["words"].weight, model.backbone["layer"]
    assert [id(q) for q in kept] == [id(layer.weight), id(layer.bias)]
    assert {id(q) for q in dropped} == {id(words), id(model.head.weight), id(model.head.bias)}

    ids = torch.tensor([[1, 5, 9]])
    clear_grads(kept, dropped)
    model(ids).backward()
    first = {name: q.grad.clone() for name, q in model.named_parameters()}
    clear_grads(kept, dropped)  # the second step's gradients are its own, not added to the first's
    model(ids).backward()
    for name, q in model.named_parameters():
        assert torch.equal(q.grad, first[name]), name
    assert float(words.grad[[1, 5, 9]].abs().sum()) > 0 and float(words.grad[2].abs().sum()) == 0
