"""The Python API: load a trained model once, then label texts and embed them.

    from mtlcli import Model

    model = Model.load("runs/latest")                   # a run folder, or an exported folder
    model.predict(["The battery died after a day."], top_k=2)
    model.embed(["The battery died after a day."])      # numpy array [n, dim]

``predict`` returns the objects ``mtl predict --format jsonl`` writes, one per text. `mtl predict`
and `mtl serve` run through this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np


if TYPE_CHECKING:  # torch comes with Model.load, not with `import mtlcli`
    from mtlcli.inference.predictor import OnBatch, Predictor
    from mtlcli.model.checkpoint import SavedRun
    from mtlcli.tasks.base import Task


class Model:
    """A trained model, ready to predict. Build it with ``Model.load``.

    It keeps the ``mtlcli.inference.predictor.Predictor`` contract of what it loaded (a run, or an
    export), and adds checked arguments, a device to move to, and ready-made records.
    """

    def __init__(self, predictor: Predictor, path: Path, kind: str, precision_request: str = "auto"):
        self._predictor = predictor  # a LoadedRun (PyTorch) or an OnnxPredictor
        self.path = path
        self.kind = kind  # "run", "sentence-transformers" or "onnx"
        self._precision_request = precision_request

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", precision: str = "run") -> "Model":
        """A run folder (its best checkpoint) or a folder written by ``mtl export``.

        ``device``: auto (CUDA when present), cpu or cuda. ``precision``: run (as the run trained, so
        results match its validation and `mtl eval`), auto (bf16 where the hardware runs it natively),
        fp32, bf16, fp16 (CUDA), or int8 (a CPU: the backbone's linear layers quantized, the heads fp32).
        An ONNX export runs as it was exported: fp32, or int8 with ``mtl export --quantize int8``.
        Bad paths and broken folders raise ``mtlcli.errors.UserError`` with a one-line message.
        """
        return cls(*_open(Path(path), device, precision), precision)

    # ---- what the model is -------------------------------------------------------------------

    @property
    def labels(self) -> dict[str, list[str]]:
        """Task -> its labels, in the order of the head's outputs ([] for a regression task)."""
        return {t: list(v) for t, v in self._predictor.label_sets.items()}

    label_sets = labels  # the name the Predictor contract gives them

    @property
    def tasks(self) -> dict[str, "Task"]:
        """Task name -> its ``Task``, in the run's order: its ``type`` and what it learned
        (``params``: a regression's mean and std, a multi-label task's thresholds)."""
        return self._predictor.tasks

    @property
    def saved(self) -> SavedRun:
        """What the run saved of itself: ``settings`` (its training config as a ``TrainConfig``),
        labels, the epoch of the weights and that epoch's validation metrics."""
        return self._predictor.saved

    @property
    def config(self) -> dict[str, Any]:
        """The run's training config (text column, max length, pooling, ...), as it was saved."""
        return self.saved.config

    @property
    def max_length(self) -> int:
        """Tokens a text is cut to, as in training."""
        return self._predictor.max_length

    @property
    def text_column(self) -> str:
        """The column of a table that holds the text, as in training."""
        return self._predictor.text_column

    @property
    def device(self) -> str:
        return str(self._predictor.device)

    @property
    def batch_size(self) -> int:
        """Texts per forward pass when none is given: 64 on a CPU, 256 on a GPU, as eval and validation."""
        from mtlcli.data.batching import inference_batch_size
        import torch

        return inference_batch_size(torch.device("cuda" if self.device.startswith("cuda") else "cpu"))

    @property
    def precision(self) -> str:
        return self._predictor.precision

    def info(self) -> dict[str, Any]:
        """Tasks and their labels, each task's type (``task_types``, as mtl_config.json keeps them),
        base model, validation metrics of the checkpoint, and how it runs."""
        from mtlcli.config import BUNDLED_MODEL

        saved = self.saved
        return {"path": str(self.path), "kind": self.kind, "tasks": self.labels,
                "task_types": {name: task.to_dict() for name, task in self.tasks.items()},
                "model": saved.settings.model or f"{BUNDLED_MODEL} (bundled)",
                "text_column": self.text_column, "max_length": self.max_length, "epoch": saved.epoch,
                "validation": dict(saved.validation), "device": self.device, "precision": self.precision}

    # ---- using it ----------------------------------------------------------------------------

    def predict(self, texts: Sequence[str], top_k: int = 1, batch_size: int | None = None,
                device: str | None = None, min_score: float | None = None) -> list[dict[str, Any]]:
        """One dict per text, as ``mtl predict --format jsonl`` writes: ``{"text": ..., task: its
        prediction, ...}``, by the task's type: a class task ``{"label", "score", "top": [[label, p],
        ...]}``, a multi-label task ``{"labels", "scores", "top"}`` (the labels at or above their
        thresholds), a regression task ``{"value"}`` (in the column's units).

        ``top`` holds the ``top_k`` most probable labels, most probable first (a regression task has
        none). ``device`` moves the model there (reloading it from its folder) for this and later calls.
        ``min_score`` (0 to 1): a class task's ``label`` is None where its probability is below it
        (``mtl predict --min-score``); its score and ``top`` stay.
        """
        from mtlcli.inference import predict_io

        texts = _checked(texts)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        if min_score is not None and not 0 <= min_score <= 1:
            raise ValueError(f"min_score must be between 0 and 1, not {min_score}")
        probs = self.probs(texts, batch_size, device=device)
        chunk = predict_io.Chunk(texts, None, probs, None)
        return list(predict_io.records(chunk, self._predictor.tasks, top_k, min_score))

    def embed(self, texts: Sequence[str], batch_size: int | None = None, device: str | None = None) -> np.ndarray:
        """The sentence vectors the heads see (after the L2 normalization if the run uses it): float32 [n, dim]."""
        texts = _checked(texts)
        return self.probs(texts, batch_size, with_embeddings=True, device=device)["_embeddings"]

    def probs(self, texts: Sequence[str], batch_size: int | None = None, with_embeddings: bool = False,
              on_batch: OnBatch | None = None, device: str | None = None) -> dict[str, np.ndarray]:
        """Task -> its outputs: probabilities [n, labels] in the order of ``labels[task]`` for a class
        (softmax) or multi-label (sigmoid) task, values [n] in the column's units for a regression
        task; and ``"_embeddings"`` if asked. ``on_batch(done, total)`` is called after each batch.
        ``batch_size``: by default 64 on a CPU and 256 on a GPU, as `mtl eval` and validation batch."""
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if device is not None:
            self._move(device)
        return self._predictor.probs(texts, batch_size, with_embeddings, on_batch)

    def encode(self, texts: Sequence[str]) -> Any:
        """Token ids for ``texts`` as the model cuts them, for ``probs_encoded`` (`mtl predict`
        tokenizes the next chunk while the model runs on this one)."""
        return self._predictor.encode(texts)

    def probs_encoded(self, data: Any, batch_size: int | None = None, with_embeddings: bool = False,
                      on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
        return self._predictor.probs_encoded(data, batch_size, with_embeddings, on_batch)

    def _move(self, device: str) -> None:
        from mtlcli.runtime.hardware import resolve_device

        if self.kind != "onnx" and resolve_device(device) == self._predictor.device:
            return
        if self.kind == "onnx" and device in ("auto", self.device):
            return
        self._predictor = _open(self.path, device, self._precision_request)[0]

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, kind={self.kind!r}, tasks={list(self.tasks)}, device={self.device!r})"


def _checked(texts: Sequence[str]) -> list[str]:
    from mtlcli.inference import predict_io

    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string; wrap it: [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a string")
        if problem := predict_io.empty_text(i, t):
            raise ValueError(problem)
    return texts


def _open(path: Path, device: str, precision: str) -> tuple[Predictor, Path, str]:
    from mtlcli import export
    from mtlcli.errors import UserError
    from mtlcli.export import folder

    if not path.exists():
        from mtlcli.runs import runs_beside

        raise UserError(f"{path}: no such run folder or export{runs_beside(path)}")
    if path.is_dir() and (path / "config.yaml").is_file():
        from mtlcli.inference.loaded_run import load_run

        loaded = load_run(path, device, precision)
        return loaded, loaded.run, "run"
    if path.is_dir() and folder.is_export(path):
        predictor = export.load(path.resolve(), device, precision)
        return predictor, path.resolve(), folder.read(path)[0]
    raise UserError(f"{path}: not an mtl run folder (no config.yaml) nor an export (no {folder.CONFIG})")
