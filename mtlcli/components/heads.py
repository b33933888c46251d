"""Heads map a sentence vector to one task's logits.

Interface: ``Head(in_features, num_labels, **options)`` is an ``nn.Module`` whose
``forward(sentence_embedding [B, in_features]) -> logits [B, num_labels]``. ``options`` come from
the ``head_options`` config key. Subclassing ``Head`` is optional: any module (or a factory
returning one) with that constructor and ``forward`` fits.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlcli.registry import heads


class Head(nn.Module):
    """Base class for heads: keeps the two sizes every head is built with."""

    def __init__(self, in_features: int, num_labels: int):
        super().__init__()
        self.in_features = in_features
        self.num_labels = num_labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@heads.register("linear")
class LinearHead(Head):
    def __init__(self, in_features: int, num_labels: int, dropout: float = 0.0):
        super().__init__(in_features, num_labels)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(in_features, num_labels)

    def forward(self, x):
        return self.out(self.dropout(x))


@heads.register("mlp")
class MLPHead(Head):
    """One hidden layer (GELU) with dropout before and after it."""

    def __init__(self, in_features: int, num_labels: int, hidden_size: int | None = None, dropout: float = 0.1):
        super().__init__(in_features, num_labels)
        hidden_size = hidden_size or in_features
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_features, hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_labels),
        )

    def forward(self, x):
        return self.net(x)
