"""Rebuild a trained model from a run folder alone, and run it on texts in bounded-size batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mtlcli import runs
from mtlcli.model import builder
from mtlcli.data.tokenizer_file import open_tokenizer_file
from mtlcli.data.batching import Encoded, inference_batch_size, iterate, sorted_batches, width_multiple
from mtlcli.inference.predictor import OnBatch, Predictor
from mtlcli.model.checkpoint import Checkpoint, SavedRun
from mtlcli.runtime.cuda_graphs import ForwardGraphs, graph_blocker
from mtlcli.runtime.packed_linear import pack_linears
from mtlcli.errors import UserError
from mtlcli.model.losses import Objective
from mtlcli.tasks.columns import kind
from mtlcli.model.network import MultiTaskModel, backbone_from_config, load_tokenizer
from mtlcli.runtime.hardware import (autocast, configure_device, cpu_has_native_bf16, one_thread, resolve_device,
                                     resolve_precision)


@dataclass
class LoadedRun(Predictor):
    """A run's checkpoint, or a sentence-transformers export, rebuilt in PyTorch."""

    run: Path
    checkpoint: Path
    model: MultiTaskModel
    combiner: torch.nn.Module  # the run's loss combiner, trained: eval's combined loss is training's objective
    tokenizer: Any
    saved: SavedRun
    device: torch.device
    precision: str
    _graphs: ForwardGraphs | bool | None = field(default=None, init=False, repr=False)  # False: not here

    def amp(self):
        return autocast(self.device, self.precision)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                batch_size: int) -> tuple[torch.Tensor, dict]:
        """One batch (of at most ``batch_size`` rows) through the model: the pooled vectors and each
        head's logits. On CUDA each batch shape runs as a recorded graph (mtlcli/runtime/cuda_graphs.py),
        made on first use."""
        if self._graphs is None:
            self._graphs = graph_blocker(self.device, [self.model]) is None and ForwardGraphs(self._forward)
        if not self._graphs:
            return self._forward(input_ids, attention_mask)
        return self._graphs(input_ids, attention_mask, batch_size)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        with self.amp():
            pooled = self.model.embed(input_ids, attention_mask)
            return pooled, {t: head(pooled) for t, head in self.model.heads.items()}

    @property
    def config(self) -> dict[str, Any]:
        return self.saved.config

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    @property
    def objective(self) -> Objective:
        return Objective.from_dict(self.saved.objective)

    @torch.inference_mode()
    def probs_encoded(self, data: Encoded, batch_size: int | None = None, with_embeddings: bool = False,
                      on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
        n = len(data)
        multiple = width_multiple(self.device, self.precision)
        tasks = self.tasks
        out: dict[str, np.ndarray | None] = {t: None for t in tasks}  # each sized on the first batch
        if with_embeddings:
            out["_embeddings"] = None
        done = 0
        batch_size = batch_size or inference_batch_size(self.device)
        batches = sorted_batches(data.lengths, batch_size, multiple, self.max_length)
        found: dict[str, list[torch.Tensor]] = {t: [] for t in out}  # on the device until the end: no sync per batch
        for batch in iterate(data, batches, self.pad_id, self.device, multiple, self.max_length):
            pooled, logits = self.forward(batch.input_ids, batch.attention_mask, batch_size)
            for t, task in tasks.items():
                found[t].append(kind(task).outputs(task, logits[t]))
            if with_embeddings:
                found["_embeddings"].append(pooled.float())
            done += len(batch)
            if on_batch is not None:
                on_batch(done, n)
        rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        for t, parts in found.items():
            if parts:
                values = torch.cat(parts).cpu().numpy()
                out[t] = np.zeros((n,) + values.shape[1:], dtype=np.float32)
                out[t][rows] = values
            elif t in tasks:  # no texts: an empty array of the task's shape
                out[t] = np.zeros((n, len(tasks[t].labels)) if tasks[t].labels else (n,), dtype=np.float32)
            else:  # no texts, and their vectors asked for
                out[t] = np.zeros((0, 0), dtype=np.float32)
        return out


def load_run(run_dir: str | Path, device: str = "auto", precision: str = "auto",
             checkpoint: str | Path | None = None, native: bool = True) -> LoadedRun:
    """The run's best checkpoint (or the one given), rebuilt on ``device``: one loader for every command.

    ``native``: a BERT backbone built by mtlcli.model.bert and the tokenizer read from its
    tokenizer.json, which start in a fraction of the time and give the same outputs; False gives
    transformers' own classes (an export saves them with their ``save_pretrained``)."""
    run = runs.resolve_run(run_dir)
    path = Path(checkpoint) if checkpoint else runs.best_checkpoint(run)
    dev = resolve_device(device)
    configure_device(dev)
    ckpt = Checkpoint.load(path)
    if not (run / "backbone").is_dir():
        raise UserError(f"{run}: the run has no backbone/ folder (tokenizer and architecture)")
    tokenizer = (native and open_tokenizer_file(run / "backbone")) or load_tokenizer(str(run / "backbone"))
    saved = ckpt.saved_run()
    backbone = backbone_from_config(run / "backbone", native)
    model, combiner = builder.from_checkpoint(ckpt, saved, backbone, path)
    precision = ready(model, dev, precision, saved.precision)
    return LoadedRun(run=run, checkpoint=path, model=model, combiner=combiner.to(dev), tokenizer=tokenizer,
                     saved=saved, device=dev, precision=precision)


def ready(model: MultiTaskModel, dev: torch.device, requested: str, trained: str | None) -> str:
    """Put a freshly built model on ``dev`` for inference; returns the precision it will run in."""
    model.to(dev).eval()
    precision = _precision(requested, trained, dev)
    with one_thread():
        _cast_backbone_linears(model, precision, dev)
    return precision


def _cast_backbone_linears(model: MultiTaskModel, precision: str, dev: torch.device) -> None:
    """Give the backbone's linear layers the autocast dtype once, for inference.

    Under bf16/fp16 autocast every linear layer casts its fp32 weights again on every call (the
    cast cache does not apply under inference mode), so every batch paid for copying the whole
    backbone. Autocast would cast them to exactly these values, so the results do not change.
    Only the backbone (Hugging Face layers, all F.linear); plugin heads and poolers stay as they are.
    bf16 on a CPU: the layers' weights are also laid out once for oneDNN (mtlcli/runtime/packed_linear.py).
    int8: the same layers become int8 ones (mtlcli/runtime/int8.py); the rest stays fp32.
    """
    if precision == "int8":
        from mtlcli.runtime.int8 import quantize_linears

        quantize_linears(model.backbone)
    elif precision in ("bf16", "fp16"):
        if precision == "bf16" and dev.type == "cpu" and pack_linears(model.backbone):
            return
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        for module in model.backbone.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(dtype)


def _precision(requested: str, trained: str | None, dev: torch.device) -> str:
    """``"run"``: the precision the run trained with (so scores match its validation), where it works here."""
    if requested != "run":
        return resolve_precision(requested, dev)
    if trained == "fp32" or (trained == "fp16" and dev.type == "cuda") or (
            trained == "bf16" and (dev.type == "cuda" or cpu_has_native_bf16())):
        return trained
    return resolve_precision("auto", dev)


def predict_batches(loaded: LoadedRun, texts: Sequence[str], batch_size: int | None = None,
                    with_embeddings: bool = False, on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
    """``loaded.probs``: the streaming core of `mtl predict` under the name benchmarks and tests use."""
    return loaded.probs(texts, batch_size, with_embeddings, on_batch)
