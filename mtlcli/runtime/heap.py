"""A CPU process that gives the memory it freed back to the system.

Every batch has another width, so each training step (or validation batch) frees tensors of one set
of sizes and asks for another; glibc serves them from its heap, whose free blocks stay resident, and
the process only grows (a 1-epoch run on long reviews: 2.8 GB where a step needs 1.7; its validation
then took it from 1.8 to 2.4 GB). ``malloc_trim`` gives the free pages back.
"""

from __future__ import annotations

import ctypes
import os
from typing import Callable

import torch


class HeapTrimmer:
    """Called after every optimizer step or inference batch: on a CPU with glibc, gives the heap's free
    pages back to the system (``malloc_trim``) once when it is made (what an earlier stage freed),
    then whenever the process has grown ``slack`` bytes beyond what it held at the first call after
    the last trim.

    That first call, not the trim, is the mark: right after a trim the process holds its live objects
    alone, and the next step faults in again the pages any step needs. Counted from the trim itself,
    long texts were trimmed after every step and the shared sentences after one step in seven, and
    all those pages were faulted in again (up to 250,000 page faults a step on long reviews). Counted
    from the step after, what is given back is the growth beyond what a step needs (the heap's holes:
    every batch has another width). On 1,000 long reviews an epoch's training took 14% less time for
    8% more peak memory; on the whole 22,502, with the round's other CPU changes, half the time for
    17% more (docs/performance.md). The shared sentences are no longer trimmed, at the same peak.
    """

    def __init__(self, device: torch.device, slack: int = 256 << 20):
        self.slack = slack
        self.trim = _malloc_trim() if device.type == "cpu" else None
        self.base: int | None = None
        if self.trim is not None:
            self._trim_now()  # what an earlier stage freed (training, before validation) goes back first

    def __call__(self) -> None:
        if self.trim is None:
            return
        if self.base is None:
            self.base = _resident_bytes()
        elif _resident_bytes() > self.base + self.slack:
            self._trim_now()

    def _trim_now(self) -> None:
        self.trim(0)
        self.base = None  # the next trim counts from the next call: the pages a step needs, faulted in again


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
OWN_MAPPING_FROM = 1 << 20  # bytes: a tensor this large or larger gets a mapping of its own


def free_large_blocks_at_once() -> bool:
    """On a CPU with glibc, from now on give every allocation of ``OWN_MAPPING_FROM`` bytes or more a
    mapping of its own, which goes back to the system the moment it is freed. Returns whether it could.

    glibc's default raises that limit to the size of the largest block freed so far (up to 32 MB),
    so after the first step the activations come from the heap and their freed pages stay resident
    between steps: with recomputed activations (gradient checkpointing) that kept most of what
    recomputing saves. Fixing the limit costs page faults on every step (the fresh mappings are
    faulted in again), which is why only a run that asked to trade time for memory does this.
    """
    mallopt = _glibc("mallopt")
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, OWN_MAPPING_FROM))


def _malloc_trim() -> Callable[[int], int] | None:
    return _glibc("malloc_trim")


def _glibc(name: str) -> Callable[..., int] | None:
    """One of glibc's allocator functions, or None where the C library is not glibc."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not Linux with glibc (macOS, Windows, musl): nothing to do
        return None


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
