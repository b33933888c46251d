"""Attention pooling: a learned query decides how much each token counts."""

from __future__ import annotations

import math

import torch
from torch import nn

from mtlcli.plugin import Pooler


class AttentionPooler(Pooler):
    """out = sum_t a_t h_t with a = softmax(q . h_t / sqrt(H)) over the real tokens.

    The query q starts at zero, so every real token gets the same weight and training starts
    from mean pooling; it then learns which tokens matter for the tasks. Padding gets no weight.
    """

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size)
        self.query = nn.Parameter(torch.zeros(hidden_size))

    def weights(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Attention weights [B, T]: each row sums to 1 over its real tokens."""
        scores = (token_embeddings @ self.query.to(token_embeddings.dtype)).float() / math.sqrt(self.hidden_size)
        # the float32 minimum rather than -inf: exp() of it is exactly 0, and never NaN
        scores = scores.masked_fill(attention_mask == 0, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1)

    def forward(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = self.weights(token_embeddings, attention_mask).to(token_embeddings.dtype)
        return torch.einsum("bt,bth->bh", weights, token_embeddings)
