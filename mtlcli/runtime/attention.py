"""Which attention kernel a training step takes on a CPU.

PyTorch's fused ("flash") attention kernel for CPUs works on blocks of up to 512 keys, and its
backward pass is made for long texts. On the short batches most tables have, that backward pass
was a quarter of a whole 2-epoch run on the shared sentences (widths 8 to 48). The plain kernel
(scores, softmax, product: "math") made a training step 35% faster at 24 tokens and 22% at 96;
at 160 tokens the two were even, and at 256 the fused one was 35% faster. The plain kernel also
keeps each layer's batch x heads x width x width scores for the backward pass, so it is taken up
to 128 tokens only. Inference keeps the fused kernel at every width: without a backward pass it
is the faster one (24 tokens: 69 against 80 ms a batch of 64; 128 tokens: 360 against 870 ms).
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

MATH_UP_TO = 128  # tokens: the widest batch whose training step takes the plain kernel on a CPU


def takes_plain_kernel(device: torch.device, width: int) -> bool:
    """Whether a training step on ``device`` of batches ``width`` tokens wide takes the plain kernel."""
    return device.type == "cpu" and width <= MATH_UP_TO


def training_attention(device: torch.device, width: int) -> contextlib.AbstractContextManager:
    """The context a training forward pass of ``width`` tokens runs in: the plain attention kernel
    on a CPU up to MATH_UP_TO tokens, otherwise PyTorch's own choice."""
    return sdpa_kernel(SDPBackend.MATH) if takes_plain_kernel(device, width) else contextlib.nullcontext()
