"""The prototype head: cosine logits times a learned scale."""

import math

import pytest
import torch
from torch.nn import functional as F

from mtl_plugin_example.heads import PrototypeHead
from mtlcli.plugin import UserError


def test_logits_are_the_scaled_cosine_to_each_prototype():
    torch.manual_seed(0)
    head = PrototypeHead(4, 3, init_scale=5.0)
    with torch.no_grad():
        head.prototypes.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [-1.0, -1.0, 0, 0]]))
    x = torch.tensor([[3.0, 0, 0, 0], [1.0, 1.0, 0, 0]])
    expected = 5.0 * torch.tensor([[1.0, 0.0, -1 / math.sqrt(2)], [1 / math.sqrt(2), 1 / math.sqrt(2), -1.0]])
    assert torch.allclose(head(x), expected, atol=1e-6)
    # only the direction of the sentence vector counts
    assert torch.allclose(head(10 * x), head(x), atol=1e-5)


def test_the_temperature_is_learned_and_capped():
    head = PrototypeHead(8, 2, init_scale=10.0, max_scale=20.0)
    x = torch.randn(16, 8)
    F.cross_entropy(head(x), torch.randint(0, 2, (16,))).backward()
    assert head.log_scale.grad is not None and head.log_scale.grad.abs() > 0
    with torch.no_grad():
        head.log_scale.fill_(math.log(1000.0))
    assert float(head.scale.detach()) == pytest.approx(20.0)
    assert head(x).abs().max() <= 20.0 + 1e-4


def test_fits_a_separable_problem():
    """Two clusters in different directions: a few steps of Adam classify them all correctly."""
    torch.manual_seed(0)
    centres = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    y = torch.arange(2).repeat(32)
    x = centres[y] + 0.2 * torch.randn(64, 3)
    head = PrototypeHead(3, 2)
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    first = None
    for _ in range(50):
        loss = F.cross_entropy(head(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 4
    assert (head(x).argmax(-1) == y).all()


def test_state_dict_round_trip():
    head = PrototypeHead(6, 4, init_scale=3.0)
    again = PrototypeHead(6, 4)
    again.load_state_dict(head.state_dict())
    x = torch.randn(5, 6)
    assert torch.equal(again(x), head(x))
    assert set(head.state_dict()) == {"prototypes", "log_scale"}


def test_bad_options_are_a_clear_error():
    with pytest.raises(UserError, match="0 < init_scale <= max_scale"):
        PrototypeHead(4, 2, init_scale=200.0)
