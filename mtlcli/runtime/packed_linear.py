"""bf16 linear layers for CPU inference whose weights oneDNN lays out once.

On a CPU a bf16 ``F.linear`` is an ``addmm``: the bias is first copied into every row of the output,
and oneDNN's matrix product takes the weight as a plain matrix. oneDNN's own linear operation takes
a weight already laid out in the blocks its kernel reads (``mkldnn._reorder_linear_weight``, once)
and adds the bias inside the kernel (``mkldnn._linear_pointwise``): the pair torch.compile's CPU
inference uses. For MiniLM's layer shapes a product of 1,536 rows took 10 to 30% less time, and
`mtl predict` on the shared sentences about 10% less, with the same outputs to the bit.

Both compute in fp32 from the same bf16 values and round once, but oneDNN may split a sum
differently for a small product: from 48 to 304 rows, some outputs of MiniLM's layer that sums
1,536 values came out one bf16 step apart (measured on an AMX CPU; from 312 rows to 8,192 none
did). So a product under ``PACKED_FROM`` rows keeps ``F.linear``, and the weight is laid out on the
first larger one: a single text costs no layout (27 ms for MiniLM) and gives what it gave before.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PACKED_FROM = 512  # rows (texts x tokens) of a product from which it takes the laid-out weight: 64 x 8


class PackedLinear(nn.Module):
    """``linear`` in bf16 for inference on a CPU; takes any float input and gives bf16, as a linear
    layer under bf16 autocast does."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias, persistent=False)
        self.packed: torch.Tensor | None | bool = None  # None: not laid out yet; False: oneDNN cannot here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16)
        if x.numel() >= PACKED_FROM * self.in_features:
            if self.packed is None:
                self.packed = _laid_out(self.weight, self.bias)
            if self.packed is not False:
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _laid_out(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | bool:
    """The weight in oneDNN's layout, or False where this PyTorch or CPU cannot run it (tried on a row)."""
    try:
        with torch.inference_mode(False):  # a plain tensor, usable outside inference mode too
            packed = torch.ops.mkldnn._reorder_linear_weight(weight)
            torch.ops.mkldnn._linear_pointwise(weight.new_zeros(1, weight.shape[1]), packed, bias, "none", [], "")
            return packed
    except (AttributeError, RuntimeError):  # no mkldnn ops in this build, or no bf16 kernel for this CPU
        return False


def pack_linears(module: nn.Module) -> int:
    """Swap every ``nn.Linear`` in ``module`` for a PackedLinear; returns how many (0 where this
    PyTorch has no oneDNN linear operation: the layers stay as they were)."""
    if not (hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return 0
    linears = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
               if type(child) is nn.Linear]
    for parent, name, child in linears:
        setattr(parent, name, PackedLinear(child))
    return len(linears)
