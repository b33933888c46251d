"""The word embeddings' gradient on a CPU, made from the rows a step read.

A batch reads a few hundred of the 30,522 rows of MiniLM's word embeddings, yet the embedding's
backward pass makes a dense gradient of the whole table every step: 47 MB allocated (a block that
large is a mapping of its own, so its 11,500 pages are faulted in again each time) and filled with
zeros before the rows are added: 7% of a CPU training epoch of the bundled model. Here the
embedding's backward pass gives a sparse gradient instead (the rows read and their gradients),
and before the optimizer step it is added into one dense buffer kept for the whole run, whose
rows of the step before are zeroed first. The buffer then holds what the dense backward pass
makes, the same sums in the same order, so clipping and AdamW see the same numbers.

CPU runs in one process only: a GPU's caching allocator keeps its blocks, and DDP averages dense
gradients as the backward pass makes them.
"""

from __future__ import annotations

import torch
from torch import nn


class RowGradients:
    """The trained word-embedding table of a model whose gradient comes as rows (none where it does
    not apply); ``densify()`` before clipping turns it into the dense gradient the optimizer takes."""

    def __init__(self, embedding: nn.Embedding | None):
        self.weight = embedding.weight if embedding is not None else None
        self.buffer: torch.Tensor | None = None  # the dense gradient, kept from step to step
        self.rows: torch.Tensor | None = None  # the rows the buffer holds non-zero values in (set with it)
        if embedding is not None:
            embedding.sparse = True  # nn.Embedding's own switch: its backward pass gives the rows read

    @classmethod
    def of(cls, model: nn.Module, device: torch.device, distributed: bool) -> RowGradients:
        backbone = getattr(model, "module", model).backbone
        embedding = backbone.get_input_embeddings() if hasattr(backbone, "get_input_embeddings") else None
        usable = (device.type == "cpu" and not distributed and type(embedding) is nn.Embedding
                  and embedding.weight.requires_grad and not embedding.max_norm and not embedding.scale_grad_by_freq)
        return cls(embedding if usable else None)

    @property
    def weights(self) -> list[torch.Tensor]:
        return [] if self.weight is None else [self.weight]

    def densify(self) -> None:
        """After the step's backward passes: the rows' gradients added into the zeroed buffer."""
        grad = None if self.weight is None else self.weight.grad
        if grad is None or not grad.is_sparse:  # no rows read, or the table was also used elsewhere
            return
        if self.buffer is None:
            self.buffer = torch.zeros_like(self.weight)
        else:
            self.buffer.index_fill_(0, self.rows, 0.0)  # the rows of the step before; the rest are zeros
        # uncoalesced: one entry per token read (several parts of a step add theirs one after another),
        # added in order, as the dense backward pass adds them
        self.rows = grad._indices()[0]
        self.buffer.index_add_(0, self.rows, grad._values())
        self.weight.grad = self.buffer
