"""CUDA graphs: a training step's forward and backward pass, or an inference batch's forward pass,
recorded once per batch shape and replayed with one call.

Why: a MiniLM training step at batch 32 is about 1 ms of arithmetic on a current GPU, but it
launches some hundreds of kernels, each prepared by Python, autograd and the CUDA driver in turn;
that preparation, not the GPU, set the pace (14-27 ms a step on the machines measured; 16 ms for
an inference batch of 256). A replay launches all of them at once.

A replay reads and writes the very tensors it was recorded with, so each graph owns input buffers
that every batch of its shape is copied into, and a training step's gradients live in buffers made
once, before the first recording, that every graph zeroes and fills. Shapes are bounded (a GPU
batch is padded to a multiple of 16 tokens), so a run records a few dozen graphs at most.

Used where a replay computes what running the ops one by one computes (``graph_blocker`` says why
not, elsewhere). Should recording fail anyway (an operation a graph cannot hold), the run warns
once and goes on op by op.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from mtlcli.errors import first_line

# op-by-op passes on a side stream before a shape is recorded, so that lazy set-up (autograd's, the
# libraries' handles and workspaces) stays out of the graph; a forward pass alone has less of it
TRAINING_WARMUP, INFERENCE_WARMUP = 2, 1
MIN_ROWS = 64  # inference pads a batch's rows up to a power of two from here: few shapes for the short batches


def graph_blocker(device: torch.device, modules: list[torch.nn.Module], *, loss_scaling: bool = False,
                  distributed: bool = False, accumulating: bool = False, checkpointing: bool = False,
                  partial_labels: bool = False) -> str | None:
    """Why the model cannot run as CUDA graphs here, or None when it can."""
    if device.type != "cuda":
        return "not on CUDA"
    if distributed:
        return "several processes (gradients are averaged between the passes)"
    if accumulating:
        # a step's parts add their gradients up, and recording a shape runs its pass a few times first
        return "gradient accumulation (--grad-accum above 1)"
    if checkpointing:
        # each checkpointed layer reads and sets the random number generators' state: not while recording
        return "gradient checkpointing (it saves and restores the random number state around each layer)"
    if loss_scaling:
        return "fp16 (loss scaling reads the GPU's result on the host every step)"
    if partial_labels:
        # a batch without a task's rows leaves that task out of the loss: another computation
        return "some training rows lack a task's label"
    plugins = sorted({type(m).__module__.split(".")[0] for top in modules for m in top.modules()
                      if not type(m).__module__.startswith(("mtlcli.", "torch.", "transformers."))})
    if plugins:
        # a plugin's module may keep Python state that a graph would freeze
        return f"components from {', '.join(plugins)}"
    return None


@dataclass
class _Recorded:
    graph: torch.cuda.CUDAGraph
    inputs: tuple  # the tensors every batch of this shape is copied into
    outputs: Any  # what the recorded pass returned: tensors, in tuples and dicts


class _Graphs:
    """Recorded passes by key, in one memory pool (replays never overlap, so they can share it)."""

    def __init__(self, warn: Callable[[str], None], what: str, warmup: int):
        self.warn = warn
        self.what = what
        self.warmup = warmup
        self.graphs: dict[tuple, _Recorded] = {}
        self.pool = None
        self.failed = False

    def reset(self) -> None:
        self.graphs.clear()
        self.pool = None

    def replay(self, key: tuple, inputs: tuple, prepare: Callable[[], tuple[Callable, tuple]]) -> _Recorded | None:
        """The graph for ``key`` with ``inputs`` copied in and replayed; None when graphs are off.
        The first time a key is seen, ``prepare()`` gives the pass to record and its input buffers."""
        if self.failed:
            return None
        recorded = self.graphs.get(key)
        if recorded is None:
            try:
                recorded = self.graphs[key] = self._record(*prepare())
            except RuntimeError as exc:  # an operation that cannot be recorded (a host sync, say)
                self.failed = True
                self.reset()
                reason = first_line(exc)
                self.warn(f"CUDA graphs are off for the rest of this run: recording {self.what} failed ({reason}); "
                          "it runs op by op")
                return None
        for buffer, value in zip(recorded.inputs, inputs):
            buffer[: len(value)].copy_(value)
        recorded.graph.replay()
        return recorded

    def _record(self, fn: Callable[..., Any], inputs: tuple) -> _Recorded:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            outputs = fn(*inputs)
        # detached: holding the recorded pass's autograd graph would keep its nodes alive
        return _Recorded(graph, inputs, _map(torch.Tensor.detach, outputs))


def _map(fn: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map(fn, v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_map(fn, v) for v in value)
    return value


class StepGraphs:
    """A training step as one graph per (rows, width, labelled rows per task).

    ``step(input_ids, attention_mask, labels, counts)`` zeroes every gradient in place, then runs
    forward and backward; it returns (loss, per-task summed losses, logits). The returned tensors
    are the graph's own: read them before the next step. ``reset`` drops the graphs (the training
    loop records anew each epoch, after the loss combiner's ``epoch_end`` may have changed it).
    """

    def __init__(self, step: Callable[..., tuple], trained: list[torch.nn.Parameter], warn: Callable[[str], None]):
        self.step = step
        self.trained = trained
        self.graphs = _Graphs(warn, "a training step", TRAINING_WARMUP)

    def reset(self) -> None:
        self.graphs.reset()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: dict, counts: dict) -> tuple:
        key = (*input_ids.shape, *sorted(counts.items()))
        inputs = (input_ids, attention_mask, *labels.values())
        recorded = self.graphs.replay(key, inputs, lambda: self._prepare(inputs, list(labels), counts))
        if recorded is None:
            return self.step(input_ids, attention_mask, labels, counts)
        return recorded.outputs

    def _prepare(self, inputs: tuple, tasks: list[str], counts: dict) -> tuple[Callable, tuple]:
        for q in self.trained:  # made outside the graphs' memory, so every graph fills the same buffers
            if q.grad is None:
                q.grad = torch.zeros_like(q)
        step = lambda ids, mask, *ys: self.step(ids, mask, dict(zip(tasks, ys)), counts)  # noqa: E731
        return step, tuple(x.clone() for x in inputs)


class ForwardGraphs:
    """Inference's ``forward(input_ids, attention_mask)`` as one graph per (rows, width).

    A batch's rows are padded up to a power of two (from MIN_ROWS, at most the batch size) with
    rows of an earlier batch, whose results are dropped: each width's short last batch then replays
    a graph instead of recording one. Rows do not interact in the model, so padding rows change no
    real row's result beyond a matrix product's last-bit rounding. Results are copies, safe to keep.
    """

    def __init__(self, forward: Callable[[torch.Tensor, torch.Tensor], Any]):
        self.forward = forward
        self.graphs = _Graphs(lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3),
                              "a batch's forward pass", INFERENCE_WARMUP)
        self.lock = threading.Lock()  # a graph's buffers serve one batch at a time

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int) -> Any:
        n, width = input_ids.shape
        rows = padded_rows(n, batch_size)
        with self.lock:
            recorded = self.graphs.replay((rows, width), (input_ids, attention_mask), lambda: (
                self.forward, tuple(_padded(x, rows) for x in (input_ids, attention_mask))))
            if recorded is not None:
                return _map(lambda t: t[:n].clone(), recorded.outputs)
        return self.forward(input_ids, attention_mask)


def padded_rows(n: int, batch_size: int) -> int:
    """The rows an inference graph for a batch of ``n`` rows has: the next power of two from
    MIN_ROWS, at most ``batch_size``, and never fewer than ``n``."""
    return max(n, min(batch_size, max(MIN_ROWS, 1 << (n - 1).bit_length())))


def _padded(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` with its first row repeated up to ``rows`` rows."""
    return torch.cat([x, x[:1].expand(rows - len(x), *x.shape[1:])]) if rows > len(x) else x.clone()
