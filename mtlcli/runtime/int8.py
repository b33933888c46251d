"""int8 prediction on a CPU: the backbone's linear layers replaced by dynamically quantized ones.

Each linear layer keeps its weights as int8, one scale per output channel; its input is quantized
on every call (one scale per tensor, from that batch's range) and the product runs as an int8
matrix multiply (VNNI / AMX where the CPU has them), with the result back in fp32. Everything else
(embeddings, layer norms, attention's softmax, pooler and heads) stays fp32: the heads are a
fraction of a percent of the work, and they are where a run's scores are decided.

PyTorch's dynamic linear layer quantizes its input to 7 bits by default (``reduce_range``, a
guard against overflow in 16-bit sums on CPUs without VNNI). On MiniLM that doubled the error of
the pooled embedding (relative error 0.27 against 0.14), so ``_FullRange`` asks for all 8 bits:
oneDNN's kernels gave the same error with 8 bits when held to AVX2 as with VNNI and AMX
(docs/performance.md, "int8 on CPUs"). fbgemm (behind the x86 engine) was not checked that way,
so where oneDNN is missing the layers keep PyTorch's 7 bits.
"""

from __future__ import annotations

import warnings
from functools import cache

import torch

from mtlcli.errors import UserError

# the quantized engines that run int8 linear layers on a CPU, in the order tried (onednn: the
# fastest on Intel CPUs with VNNI or AMX, measured; x86 and fbgemm: PyTorch's own)
ENGINES = ("onednn", "x86", "fbgemm")


def engine() -> str:
    """The quantized engine this PyTorch has for int8 linear layers, or a one-line refusal."""
    have = torch.backends.quantized.supported_engines
    for name in ENGINES:
        if name in have:
            return name
    raise UserError(f"--precision int8: this PyTorch has no quantized engine for a CPU like this one "
                    f"(it has {', '.join(e for e in have if e != 'none') or 'none'}); use --precision fp32 or bf16")


def quantize_linears(module: torch.nn.Module) -> None:
    """Replace every ``nn.Linear`` inside ``module`` (in place, on the CPU) by its int8 counterpart.
    The engine is PyTorch's process-wide setting; every int8 model of the process uses the same one."""
    torch.backends.quantized.engine = name = engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notes: it is what torch 2.13 has
        from torch.ao.nn.quantized.dynamic import Linear
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        layer = _full_range() if name == "onednn" else Linear
        quantize_dynamic(module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                         mapping={torch.nn.Linear: layer}, inplace=True)


@cache
def _full_range() -> type:
    """PyTorch's dynamic int8 linear layer with 8-bit rather than 7-bit inputs (see the module's note)."""
    from torch.ao.nn.quantized.dynamic import Linear

    class _FullRange(Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, False)

        def _get_name(self) -> str:
            return "Int8Linear"

    return _FullRange
