"""CpuDropout: nn.Dropout's rule (drop p, scale the rest by 1 / (1 - p), identity in eval mode) with a
cheaper random mask, swapped into every training model on a CPU (runtime/dropout.py)."""

from __future__ import annotations

import torch
from torch import nn

from mtlcli.model.network import load_pretrained_backbone
from mtlcli.runtime.dropout import CpuDropout, use_cpu_dropout


def test_it_drops_p_of_the_elements_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(2_000_000, requires_grad=True)
    y = CpuDropout(0.1).train()(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - 0.1) < 0.001
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9))
    y.sum().backward()  # the gradient goes through the kept elements, scaled alike
    assert torch.equal(x.grad, y.detach())


def test_neighbouring_elements_are_dropped_independently():
    # four elements share a 64-bit draw: at p = 0.5 each pair of neighbours is dropped together a quarter
    # of the time, and each position within a draw as often as any other
    torch.manual_seed(1)
    dropped = CpuDropout(0.5).train()(torch.ones(4_000_000)) == 0
    assert abs(float((dropped[:-1] & dropped[1:]).float().mean()) - 0.25) < 0.002
    for lane in range(4):
        assert abs(float(dropped[lane::4].float().mean()) - 0.5) < 0.002, lane


def test_the_same_seed_draws_the_same_mask_in_bf16_too():
    x = torch.randn(32, 24, 384).bfloat16()
    drop = CpuDropout(0.2).train()
    torch.manual_seed(3)
    first = drop(x)
    torch.manual_seed(3)
    assert torch.equal(first, drop(x)) and first.dtype == torch.bfloat16


def test_eval_mode_and_p_0_are_the_identity_and_p_1_drops_all():
    x = torch.randn(4, 8)
    assert CpuDropout(0.5).eval()(x) is x and CpuDropout(0.0).train()(x) is x
    assert torch.equal(CpuDropout(1.0).train()(x), torch.zeros_like(x))


def test_every_dropout_of_a_backbone_is_swapped_with_its_p(tiny_model):
    backbone = load_pretrained_backbone(tiny_model, attention_dropout=0.0)
    before = [m.p for m in backbone.modules() if isinstance(m, nn.Dropout)]
    assert use_cpu_dropout(backbone) == len(before) > 0
    after = [m for m in backbone.modules() if isinstance(m, nn.Dropout)]
    assert all(type(m) is CpuDropout for m in after) and [m.p for m in after] == before
