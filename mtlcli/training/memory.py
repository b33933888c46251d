"""Will a training batch fit in memory? An estimate before training, and one clear line when an
allocation fails anyway.

The estimate (per process) is the backbone's activations kept for backward, for the batch with the
longest sequence, plus the gradients and AdamW's two moments of the trainable weights (the weights
themselves are already loaded when it is made). Activations per transformer layer follow Korthikanti
et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"): about
s * b * (34 h + 5 a s) bytes in 16-bit, twice that in fp32, for sequence length s, batch b, hidden
size h and a attention heads; the 5 a s term (attention scores, softmax, dropout mask) is not kept
where attention runs as a fused kernel. It is an estimate: what it refuses cannot fit, and what it lets
through may still fail, which the out-of-memory message then covers.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np
import torch

from mtlcli.errors import RunFailed, UserError
from mtlcli.model.network import ATTENTION_DROPOUT_KEYS
from mtlcli.runtime.attention import takes_plain_kernel

GB = 1e9


def activation_bytes(config, batch: int, seq: int, precision: str, fused_attention: bool = False) -> int:
    """Bytes of activations a transformer backbone keeps for backward, for one batch."""
    h = int(getattr(config, "hidden_size", 0) or 0)
    a = int(getattr(config, "num_attention_heads", 1) or 1)
    layers = int(getattr(config, "num_hidden_layers", 1) or 1)
    per_layer_16bit = seq * batch * (34 * h + (0 if fused_attention else 5 * a * seq))
    return per_layer_16bit * layers * (1 if precision in ("bf16", "fp16") else 2)


def fused_attention(backbone: torch.nn.Module, device: torch.device, width: int) -> bool:
    """Whether training attention on batches ``width`` tokens wide keeps no length x length weights:
    PyTorch's SDPA kernels do not, on CUDA always; on a CPU only where training takes the fused
    kernel (over runtime.attention's MATH_UP_TO tokens) and without attention dropout (the fused
    CPU kernel takes none)."""
    config = backbone.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if device.type == "cuda":
        return True
    return not takes_plain_kernel(device, width) and not any(getattr(config, key, 0) for key in ATTENTION_DROPOUT_KEYS)


def optimizer_bytes(model: torch.nn.Module) -> int:
    """Gradients and AdamW's two moments: three fp32-sized copies of each trainable weight."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process to use: the GPU's free memory, or the system's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None  # not Linux: no check


def check_batch_fits(backbone: torch.nn.Module, lengths: np.ndarray, batch_size: int, max_length: int, precision: str,
                     device: torch.device, processes: int = 1, processes_here: int = 1,
                     warn: Callable[[str], None] | None = None) -> int:
    """Refuse (UserError) a batch that cannot fit; warn about one larger than the training set.
    Returns the estimated bytes per process. Called with the backbone loaded on the CPU (the heads
    are small beside it), before anything is written."""
    rows = len(lengths)
    if rows and batch_size > rows and warn is not None:
        warn(f"--batch-size {batch_size} is larger than the training set ({rows} rows): every epoch is one "
             f"batch of {rows}, one optimizer step")
    if not rows:
        return 0
    per_process = math.ceil(min(batch_size, rows) / max(processes, 1))
    longest = int(lengths.max())
    need = (activation_bytes(backbone.config, per_process, longest, precision, fused_attention(backbone, device, longest))
            + optimizer_bytes(backbone))
    if device.type == "cuda":  # the weights are still on the CPU: the GPU has to hold them too
        need += sum(p.numel() * p.element_size() for p in backbone.parameters())
    free = available_bytes(device)
    # CPU processes of one machine share its memory; each GPU has its own
    total = need * (processes_here if device.type == "cpu" else 1)
    if free is not None and total > free:
        where = f"free on {device}" if device.type == "cuda" else "available on this machine"
        shared = f" ({processes_here} processes)" if device.type == "cpu" and processes_here > 1 else ""
        raise UserError(f"a training batch needs about {total / GB:.1f} GB{shared} ({min(batch_size, rows)} texts of up "
                        f"to {longest} tokens), but only {free / GB:.1f} GB is {where}; lower --batch-size "
                        f"(now {batch_size}) or --max-length (now {max_length})")
    return need


def out_of_memory(what: str, batch_size: int, max_length: int, kept: str = "") -> RunFailed:
    """The one line for a failed allocation: what ran, and the two settings that set its size."""
    return RunFailed(f"out of memory during {what}: lower --batch-size (now {batch_size}) or --max-length "
                     f"(now {max_length}){kept}")


def local_processes() -> int:
    """Processes of this run on this machine (torchrun sets LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
