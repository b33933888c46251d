"""Running under torchrun: one process per device, DistributedDataParallel, rank 0 writes.

Nothing here starts processes of its own: `torchrun` (or `mtl train --nproc N`, which calls
torch.distributed.run) sets RANK, WORLD_SIZE and LOCAL_RANK, and this module reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch

from mtlcli import errors

# A peer that died leaves the others waiting in a collective; this bounds the wait.
COLLECTIVE_TIMEOUT = timedelta(minutes=int(os.environ.get("MTL_DIST_TIMEOUT_MIN", "10")))


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # what code outside training/ may ask of the process group it is handed (evaluation does)
    def sum_in_place(self, tensors: list[torch.Tensor]) -> None:
        sum_in_place(tensors, self)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun prepared; each process takes its own GPU (LOCAL_RANK)."""
    if not launched_by_torchrun():
        return Dist(), device
    import torch.distributed as dist

    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    else:
        set_cpu_threads()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return d, device


def set_cpu_threads() -> None:
    """Share this machine's cores among its processes: N processes each using every core oversubscribe."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    torch.set_num_threads(max(1, cores // max(local, 1)))


def is_main_process() -> bool:
    """Rank 0, or no torchrun at all: the process that writes files and shows the display."""
    return int(os.environ.get("RANK", "0")) == 0


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wait_for_all() -> None:
    """Every process waits here until all have finished writing: one that went on to close its
    connections and exit while the main process still saved would make torchrun end the others
    mid-save. A peer that has died by now only ends the wait: everything is written already."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.barrier()
    except (RuntimeError, OSError) as exc:  # the backend's own error types derive from RuntimeError
        if not is_peer_failure(exc):
            raise


def usable_batches(batches: list[np.ndarray], d: Dist) -> list[np.ndarray]:
    """The global batches every process steps through: a final batch smaller than the world is
    dropped, so every process has at least one row in every step and all take the same number."""
    if not d.enabled:
        return batches
    return [b for b in batches if len(b) >= d.world_size]


def shard(rows: np.ndarray, d: Dist) -> np.ndarray:
    """This process's part of a global batch: rows r, r+W, r+2W, ...

    The global batches are the single-process ones (length-sorted), so N processes step through the
    same rows per optimizer step as one process would, and each part holds similar lengths.
    """
    return rows[d.rank :: d.world_size] if d.enabled else rows


def all_reduce_sum(tensor: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def sum_in_place(tensors: list[torch.Tensor], d: Dist) -> None:
    """Sum same-device tensors over all processes with one collective instead of one each."""
    if not d.enabled or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
    all_reduce_sum(flat, d)
    at = 0
    for t in tensors:
        t.copy_(flat[at : at + t.numel()].view_as(t).to(t.dtype))
        at += t.numel()


def average_grads(params, d: Dist) -> None:
    """Average gradients DDP does not see (the loss combiner's own parameters, e.g. uncertainty's)."""
    if not d.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    sum_in_place(grads, d)
    for g in grads:
        g.div_(d.world_size)


def all_gather_object(obj: Any, d: Dist) -> list[Any]:
    """Every process's value, in rank order, on every process."""
    if not d.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's value, on every process."""
    if not d.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # Frozen parts and heads of tasks absent from a step leave some parameters without gradients.
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


_PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out", "gloo", "nccl")


def is_peer_failure(exc: BaseException) -> bool:
    """A collective failed because another process died or stopped answering."""
    if type(exc).__name__ in ("DistError", "DistBackendError", "DistNetworkError", "DistStoreError"):
        return True
    text = str(exc).lower()
    return any(s in text for s in _PEER_GONE)


def first_line(exc: BaseException) -> str:
    """The gist of a backend error: its first sentence, without the C++ source location in front."""
    import re

    line = errors.first_line(exc)
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)
    return line.split(". ")[0][:160]
