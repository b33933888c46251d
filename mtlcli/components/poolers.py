"""Poolers turn token embeddings into one sentence vector.

Interface: ``Pooler(hidden_size)`` is an ``nn.Module`` whose ``forward(token_embeddings [B, T, H],
attention_mask [B, T]) -> [B, output_size]``; ``output_size`` defaults to ``hidden_size``.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlcli.registry import poolers


class Pooler(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def forward(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@poolers.register("cls")
class ClsPooler(Pooler):
    """The first token's embedding ([CLS] for BERT-style tokenizers)."""

    def forward(self, token_embeddings, attention_mask):
        return token_embeddings[:, 0]


@poolers.register("mean")
class MeanPooler(Pooler):
    """The mean over real tokens: padded positions carry no weight."""

    def forward(self, token_embeddings, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
        summed = (token_embeddings * mask).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1.0)


@poolers.register("max")
class MaxPooler(Pooler):
    """The element-wise maximum over real tokens."""

    def forward(self, token_embeddings, attention_mask):
        padded = attention_mask.unsqueeze(-1) == 0
        return token_embeddings.masked_fill(padded, torch.finfo(token_embeddings.dtype).min).max(dim=1).values
