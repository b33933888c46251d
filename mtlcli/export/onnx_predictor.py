"""Predict with an ONNX export on ONNX Runtime: the same batching and outputs as the PyTorch path
(each task's type's outputs, computed in the graph: mtlcli/export/onnx_graph.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.errors import UserError, first_line
from mtlcli.export.onnx_names import MODEL, output_name, output_names
from mtlcli.inference.predictor import OnBatch, Predictor
from mtlcli.model.checkpoint import SavedRun


class OnnxPredictor(Predictor):
    def __init__(self, path: Path, saved: SavedRun, device: str = "auto", precision: str = "fp32"):
        from mtlcli.data.tokenizer_file import open_tokenizer_file
        from mtlcli.extras import require

        ort = require("onnxruntime", "onnx", "running an ONNX export")
        available = ort.get_available_providers()
        if device in ("auto", "cpu"):
            providers = ["CPUExecutionProvider"]
            if device == "auto" and "CUDAExecutionProvider" in available:
                providers.insert(0, "CUDAExecutionProvider")
        elif device.startswith("cuda") and "CUDAExecutionProvider" in available:
            providers = ["CUDAExecutionProvider"]
        else:
            raise UserError(f"--device {device}: this ONNX Runtime cannot run on it (it has {', '.join(available)}); "
                            "use --device cpu or auto")
        if not (path / MODEL).is_file():
            raise UserError(f"{path}: no {MODEL}; the export is incomplete")
        try:
            self.session = ort.InferenceSession(str(path / MODEL), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise UserError(f"{path / MODEL}: cannot load it ({first_line(exc, 200)})") from None
        self.outputs = output_names(saved.tasks)
        have = {o.name for o in self.session.get_outputs()}
        if not set(self.outputs) <= have:
            raise UserError(f"{path / MODEL}: its outputs ({', '.join(sorted(have))}) do not match the tasks of "
                            f"labels.json and mtl_config.json ({', '.join(self.outputs[1:])})")
        self.run, self.saved = path, saved
        self.tokenizer = open_tokenizer_file(path) or _transformers_tokenizer(path)
        self.device = self.session.get_providers()[0].replace("ExecutionProvider", "").lower()
        self.precision = precision  # what the graph computes in (mtl_config.json): fp32, or int8

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def probs_encoded(self, data, batch_size: int | None = None, with_embeddings: bool = False,
                      on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
        from mtlcli.data.batching import host_batch, sorted_batches

        n, max_length, tasks = len(data), self.max_length, self.tasks
        names = {t: output_name(task) for t, task in tasks.items()}
        if with_embeddings:
            names["_embeddings"] = "embedding"
        out: dict[str, Any] = dict.fromkeys(names)  # each sized on the first batch, as LoadedRun's
        done = 0
        batches = sorted_batches(data.lengths, batch_size or 64, 1, max_length)
        for idx in batches:
            input_ids, attention_mask = host_batch(data, idx, self.pad_id)
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
            results = dict(zip(names, self.session.run(list(names.values()), feeds)))
            for key, values in results.items():
                if out[key] is None:
                    out[key] = np.zeros((n,) + values.shape[1:], dtype=np.float32)
                out[key][idx] = values
            done += len(idx)
            if on_batch is not None:
                on_batch(done, n)
        for t, task in tasks.items():  # no texts: an empty array of the task's shape
            if out[t] is None:
                out[t] = np.zeros((n, len(task.labels)) if task.labels else (n,), dtype=np.float32)
        if with_embeddings and out["_embeddings"] is None:
            out["_embeddings"] = np.zeros((0, 0), dtype=np.float32)
        return out


def _transformers_tokenizer(path: Path):
    """A folder without a readable tokenizer.json: transformers loads the tokenizer, or says why it cannot."""
    from mtlcli.model.network import load_tokenizer

    return load_tokenizer(str(path))
