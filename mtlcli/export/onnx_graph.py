"""The ONNX export: one graph from token ids and attention mask to the sentence embedding and each
task's outputs, with dynamic batch and sequence axes, checked against PyTorch with ONNX Runtime.

Each task's output is what its type's ``outputs`` gives (``output_name``): ``probs_<task>``
[batch, labels] for a task with labels (softmax of a class task, sigmoid per label of a multi-label
task), ``value_<task>`` [batch] for a task of one value (a regression's number in the column's
units: the mean and std are in the graph).

It uses torch's TorchScript-based exporter (``dynamo=False``): it runs offline, exports a BERT-sized
model in seconds (the dynamo exporter took over 30 s for a tiny one) and its graph gives the same
numbers (checked on every export).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtlcli.errors import RunFailed
from mtlcli.export.folder import save_tokenizer
from mtlcli.export.onnx_names import INPUTS, MODEL, output_names
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind

OPSET = 17
TOLERANCE = 1e-4  # max difference from PyTorch (fp32): probabilities and embedding; values on their scale (``_scale``)
# The same for an int8 graph, where the embedding is compared by direction (1 - cosine similarity):
# its values moved by up to 0.2 on a fine-tuned MiniLM, in PyTorch's int8 as in ONNX Runtime's, and
# probabilities by up to 0.05 on these check texts (up to 0.2 on the least sure of the shared data
# sets' test rows: docs/performance.md, "int8 on CPUs"); twice that on these texts is a broken
# graph, not rounding.
INT8_TOLERANCE = 0.1
# Checked on every export: short and long, batched (padded) and alone, one truncated at max length.
CHECK_TEXTS = [
    "Great.",
    "The battery died after a day.",
    "Great movie, loved the acting, and the soundtrack was even better than the trailer promised.",
    "The soup was cold and the waiter rude; we waited forty minutes for a table that was already free.",
    "ok",
    "Not bad at all, I would buy it again!",
    " ".join(["A long review that goes on and on about the product, the delivery and the price."] * 30),
]


class _Graph(nn.Module):
    """What the graph computes: the embedding (after normalization, as the heads see it) and each
    task's outputs, as its type gives them to predictions.

    Texts longer than the run's max length are cut to it in the graph, as the tokenizer's truncation
    cuts them (keeping the closing special token, where the tokenizer adds one), so a text tokenized
    without truncation gives the same answer instead of a shape error past the position limit."""

    def __init__(self, model, tasks: dict[str, Task], max_length: int, keeps_end: bool):
        super().__init__()
        self.model, self.tasks, self.max_length, self.keeps_end = model, tasks, max_length, keeps_end

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        input_ids, attention_mask = self._cut(input_ids, attention_mask)
        pooled = self.model.embed(input_ids, attention_mask)
        return (pooled, *(kind(task).outputs(task, self.model.heads[t](pooled)) for t, task in self.tasks.items()))

    def _cut(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded rows cut to ``max_length`` tokens; a row that was longer ends with its own last
        token (the tokenizer's [SEP] or </s>) where the tokenizer would have put it."""
        ids, mask = input_ids[:, : self.max_length], attention_mask[:, : self.max_length]
        if not self.keeps_end:
            return ids, mask
        lengths = attention_mask.sum(dim=1, keepdim=True)
        last = input_ids.gather(1, (lengths - 1).clamp(min=0))
        end = torch.where(lengths > self.max_length, last, ids[:, -1:])
        return torch.cat([ids[:, :-1], end], dim=1), mask


def graph(loaded) -> _Graph:
    """The module exported (and compared with the graph) for ``loaded``, in eval mode."""
    ids = loaded.tokenizer("a")["input_ids"]
    keeps_end = bool(ids) and ids[-1] in set(loaded.tokenizer.all_special_ids)
    return _Graph(loaded.model, loaded.tasks, loaded.max_length, keeps_end).eval()


def write(loaded, out: Path) -> float:
    """Export ``loaded`` (fp32, on the CPU) to ``out/model.onnx`` and check it; returns the largest difference."""
    module = graph(loaded)
    # traced on a padded batch: a batch without padding may let the backbone leave the mask out of the graph
    ids, mask = _encode(loaded, CHECK_TEXTS[:2])
    names = output_names(loaded.tasks)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    axes.update({name: {0: "batch"} for name in names})
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(module, (torch.from_numpy(ids), torch.from_numpy(mask)), str(out / MODEL), dynamo=False,
                          input_names=INPUTS, output_names=names, dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True)
    # the tokenizer returns exactly the graph's inputs, cut at the run's max length: its output feeds
    # session.run as it is
    save_tokenizer(loaded.tokenizer, out, loaded.max_length, INPUTS)
    return verify(out / MODEL, loaded)


def _encode(loaded, texts: list[str], truncation: bool = True) -> tuple[np.ndarray, np.ndarray]:
    enc = loaded.tokenizer(texts, truncation=truncation, max_length=loaded.max_length if truncation else None,
                           padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def quantize(loaded, out: Path) -> float:
    """Replace ``out/model.onnx`` by its int8 version (ONNX Runtime's dynamic quantization: int8
    weights per output channel, each MatMul's input quantized per batch) and check it against
    PyTorch's fp32 within ``INT8_TOLERANCE``; returns the largest difference."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path, tmp = out / MODEL, out / f"int8-{MODEL}"
    logging.disable(logging.WARNING)  # its advice to pre-process the graph, on the root logger; it gains nothing here
    try:
        # only the MatMuls with a weight (the backbone's linear layers, as PyTorch's int8 path): the
        # defaults also quantize the embedding tables and attention's own products, which doubled the error
        quantize_dynamic(str(path), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    finally:
        logging.disable(logging.NOTSET)
    tmp.replace(path)
    return verify(path, loaded, INT8_TOLERANCE, by_direction=True)


def verify(path: Path, loaded, tolerance: float = TOLERANCE, by_direction: bool = False) -> float:
    """Run the graph with ONNX Runtime and PyTorch on the check texts, batched and one by one: every
    output of every task, by name. The texts also go in untruncated (the graph cuts them), and must
    give what the truncated ones give. ``by_direction``: the embedding counts as 1 - its cosine
    similarity to PyTorch's (an int8 graph's values move, its direction hardly)."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names, scales = output_names(loaded.tasks), [1.0] + [_scale(task) for task in loaded.tasks.values()]
    module = graph(loaded)
    worst = 0.0
    for texts in [CHECK_TEXTS] + [[t] for t in CHECK_TEXTS]:
        ids, mask = _encode(loaded, texts)
        with torch.inference_mode():
            want = module(torch.from_numpy(ids), torch.from_numpy(mask))
        for truncation in (True, False):
            ids, mask = _encode(loaded, texts, truncation)
            got = session.run(names, {"input_ids": ids, "attention_mask": mask})
            for i, (g, w, scale) in enumerate(zip(got, want, scales)):
                g, w = g.astype(np.float64), w.float().numpy().astype(np.float64)
                if i == 0 and by_direction:
                    cos = (g * w).sum(1) / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1), 1e-12)
                    worst = max(worst, float((1 - cos).max()))
                else:
                    worst = max(worst, float(np.abs(g - w).max()) / scale)
    if not worst <= tolerance:
        raise RunFailed(f"{path}: the ONNX graph differs from the PyTorch model by up to {worst:.2e} "
                        f"(more than {tolerance:g}); the export was not written")
    return worst


def _scale(task: Task) -> float:
    """What a task's output differences are measured in: 1 for probabilities; for a value in the
    column's units, its standard deviation (the head's own scale), or a hundredth of the mean where
    that is larger (fp32 keeps about 7 digits of a large value)."""
    std, mean = task.params.get("std"), task.params.get("mean")
    if task.labels or not isinstance(std, (int, float)):
        return 1.0
    return max(float(std), abs(float(mean or 0.0)) / 100)
