"""Device and numeric precision: what to run on, whether bf16 autocast pays off there, and a failed allocation."""

from __future__ import annotations

import contextlib
import platform
from functools import lru_cache
from typing import Iterator

import torch

from mtlcli.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on x86, the BF16 extension on ARM: where bf16 matmuls beat fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set()
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        return platform.system() == "Darwin" and platform.machine() == "arm64"
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(name: str, device: torch.device) -> str:
    """What ``--precision name`` runs in on ``device`` ("auto" resolved), or a one-line refusal."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device; on a CPU use bf16 or fp32")
    if name == "int8":
        if device.type != "cpu":
            raise UserError(f"--precision int8 runs on a CPU only (--device cpu); on {device.type} use bf16 or fp16")
        from mtlcli.runtime.int8 import engine

        engine()  # refuses here, before the model loads, where PyTorch has no int8 engine
    return name


def configure_device(device: torch.device) -> None:
    """Attention and matmul settings chosen on purpose rather than left to defaults.

    cuDNN's attention plans per sequence shape: with every batch a new shape it spent most of the
    forward pass there, so SDPA uses the flash / memory-efficient kernels instead. fp32 matmuls
    may use TF32 on GPUs that have it (bf16 autocast covers the backbone anyway).
    """
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed tensor work on one CPU thread. For copies and casts of weights: they give the
    same values on any number of threads and are bound by memory, so one thread loses little, and
    never waits for a second that other work keeps off the cores (casting MiniLM's linear layers to
    bf16 took 0.02 s on one thread, 0.1 to 0.3 s on two while the 2-core machine was busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def autocast(device: torch.device, precision: str):
    """The forward pass's autocast context; weights and optimizer state stay fp32. int8 runs without
    one: its linear layers take and give fp32 (mtlcli/runtime/int8.py)."""
    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: CUDA out of memory, the CPU allocator refusing, or Python's MemoryError."""
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()
                                              or "not enough memory" in text)
