"""What a model ready to predict offers: the contract `mtl predict`, `mtl serve` and ``mtlcli.Model``
rely on, kept by a run's checkpoint (``LoadedRun``) and an ONNX export (``OnnxPredictor``) alike.

Tokenizing and predicting are separate steps so that `mtl predict` tokenizes the next chunk of
input while the model runs on this one (mtlcli/inference/predict_io.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from mtlcli.data.batching import Encoded
    from mtlcli.model.checkpoint import SavedRun
    from mtlcli.tasks.base import Task

OnBatch = Callable[[int, int], None]  # (texts done, texts in all), after each batch: for progress displays


class Predictor(Protocol):
    saved: SavedRun  # what the run saved of itself: its settings, labels, epoch and validation metrics
    precision: str  # what the model runs in: fp32, bf16, fp16 or int8
    device: Any  # where it runs: a torch.device, or the ONNX Runtime provider's name; str() names it

    tokenizer: Any  # the run's tokenizer (Hugging Face)

    # What the run saved says, the same for every kind of predictor: a subclass inherits these.
    @property
    def label_sets(self) -> dict[str, list[str]]:
        """Task -> its labels, in the order of the outputs; the tasks in the run's order."""
        return self.saved.labels

    @property
    def tasks(self) -> dict[str, Task]:
        """Task -> its type and what it learned (a regression's units, a multi-label task's thresholds)."""
        return self.saved.tasks

    @property
    def max_length(self) -> int:
        """Tokens a text is cut to, as in training."""
        return self.saved.settings.max_length

    @property
    def text_column(self) -> str:
        """The column of a table that holds the text, as in training."""
        return self.saved.settings.text_column

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Token ids of ``texts``, cut as the run was trained."""
        from mtlcli.data.batching import encode

        return encode(self.tokenizer, texts, {}, self.max_length)

    def probs_encoded(self, data: Encoded, batch_size: int | None = None, with_embeddings: bool = False,
                      on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
        """Task -> its outputs for texts from ``encode``, in input order (its type's: probabilities
        [n, labels] of a class or multi-label task, values [n] of a regression task), and
        ``"_embeddings"`` [n, dim] if asked. Texts run sorted by length, in batches of at most
        ``batch_size`` (by default as eval and validation batch)."""
        ...

    def probs(self, texts: Sequence[str], batch_size: int | None = None, with_embeddings: bool = False,
              on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
        """``probs_encoded`` of ``encode(texts)``; memory grows with ``len(texts)`` only, so callers
        stream a large input through this in chunks."""
        return self.probs_encoded(self.encode(texts), batch_size, with_embeddings, on_batch)
