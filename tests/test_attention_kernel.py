"""The attention kernel of a CPU training step: the plain one for short batches, PyTorch's fused one
for long batches, with the same gradients (runtime/attention.py)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mtlcli.model.network import load_pretrained_backbone
from mtlcli.runtime.attention import MATH_UP_TO, training_attention

FUSED = "aten::_scaled_dot_product_flash_attention_for_cpu"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def backbone(tiny_model):
    return load_pretrained_backbone(tiny_model, attention_dropout=0.0)  # mtl's default: no attention dropout


def step(backbone, width: int, kernel=training_attention) -> tuple[set[str], list[torch.Tensor]]:
    """One forward and backward pass of 4 rows ``width`` tokens wide, the last two half padding, in
    ``kernel``'s context (a training step's by default); returns the operators that ran and the gradients."""
    torch.manual_seed(0)
    ids = torch.randint(5, 50, (4, width))
    mask = torch.ones(4, width, dtype=torch.long)
    mask[2:, width // 2:] = 0
    backbone.zero_grad()
    with profile(activities=[ProfilerActivity.CPU]) as prof, kernel(CPU, width):
        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        (hidden * mask[..., None]).square().sum().backward()
    return {e.key for e in prof.key_averages()}, [q.grad.clone() for q in backbone.parameters() if q.grad is not None]


def test_short_batches_train_with_the_plain_kernel_and_long_ones_with_the_fused_one(backbone):
    backbone.eval()  # no dropout: the two passes below must see the same numbers
    short_ops, _ = step(backbone, 24)
    assert FUSED not in short_ops and "aten::bmm" in short_ops
    long_ops, _ = step(backbone, MATH_UP_TO + 8)
    assert FUSED in long_ops


def test_the_plain_kernel_gives_the_fused_kernels_gradients(backbone):
    backbone.eval()
    _, plain = step(backbone, 24)
    ops, fused = step(backbone, 24, kernel=lambda device, width: contextlib.nullcontext())  # PyTorch's own choice
    assert FUSED in ops and len(plain) == len(fused)
    # fp32: the same sums in another order (the keys' bias has no gradient but rounding: it is
    # compared as part of the whole, not on its own)
    plain, fused = torch.cat([g.flatten() for g in plain]), torch.cat([g.flatten() for g in fused])
    assert float((plain - fused).norm()) <= 1e-5 * float(fused.norm())


def test_a_gpu_keeps_pytorchs_own_choice():
    with training_attention(torch.device("cuda"), 24):
        assert torch.backends.cuda.flash_sdp_enabled()  # the context changed nothing
