"""Heads map a sentence vector to one task's logits.

Interface: ``Head(in_features, num_labels, **options)`` is an ``nn.Module`` whose
``forward(sentence_embedding [B, in_features]) -> logits [B, num_labels]``. ``options`` come from
the ``head_options`` config key.
"""

from __future__ import annotations

from torch import nn

from mtlcli.registry import heads


@heads.register("linear")
class LinearHead(nn.Module):
    def __init__(self, in_features: int, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(in_features, num_labels)

    def forward(self, x):
        return self.out(self.dropout(x))


@heads.register("mlp")
class MLPHead(nn.Module):
    """One hidden layer (GELU) with dropout before and after it."""

    def __init__(self, in_features: int, num_labels: int, hidden_size: int | None = None, dropout: float = 0.1):
        super().__init__()
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
