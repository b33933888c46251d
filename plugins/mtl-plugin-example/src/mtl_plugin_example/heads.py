"""A prototype head: cosine similarity to one learned vector per label, with a learned temperature."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mtlcli.plugin import Head, UserError


class PrototypeHead(Head):
    """logits_k = s * cos(x, p_k): one learned prototype p_k per label and a learned scale s.

    Cosines lie in [-1, 1], too flat for a softmax; s = 1 / temperature sharpens them. s is learned
    in log space (so it stays positive) and capped at ``max_scale`` so the logits cannot run away.
    Only the direction of the sentence vector matters, which suits sentence-transformer embeddings
    trained with a cosine objective.

    Options (``head_options``): ``init_scale`` (default 10), ``max_scale`` (default 100).
    """

    def __init__(self, in_features: int, num_labels: int, init_scale: float = 10.0, max_scale: float = 100.0):
        super().__init__(in_features, num_labels)
        if not 0 < init_scale <= max_scale:
            raise UserError(f"head_options: prototype needs 0 < init_scale <= max_scale (got {init_scale}, {max_scale})")
        self.prototypes = nn.Parameter(torch.randn(num_labels, in_features) / math.sqrt(in_features))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.max_log_scale = math.log(max_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(x, dim=-1) @ F.normalize(self.prototypes, dim=-1).T
        return self.scale * cosine
