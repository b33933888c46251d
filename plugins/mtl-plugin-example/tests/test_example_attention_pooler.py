"""Attention pooling with a learned query."""

import torch

from mtl_plugin_example.poolers import AttentionPooler
from mtlcli.plugin import Pooler


def _batch():
    torch.manual_seed(0)
    tokens = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return tokens, mask


def test_starts_as_mean_pooling_over_real_tokens():
    tokens, mask = _batch()
    pooled = AttentionPooler(8)(tokens, mask)
    m = mask.unsqueeze(-1).float()
    assert torch.allclose(pooled, (tokens * m).sum(1) / m.sum(1), atol=1e-6)
    assert isinstance(AttentionPooler(8), Pooler) and AttentionPooler(8).output_size == 8


def test_padding_gets_no_weight():
    tokens, mask = _batch()
    pooler = AttentionPooler(8)
    with torch.no_grad():
        pooler.query.copy_(torch.randn(8))
    weights = pooler.weights(tokens, mask)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert (weights[mask == 0] == 0).all()
    changed = tokens.clone()
    changed[mask == 0] = 1e4  # whatever sits under the padding
    assert torch.allclose(pooler(changed, mask), pooler(tokens, mask), atol=1e-6)


def test_a_query_along_a_tokens_direction_picks_that_token():
    tokens = torch.zeros(1, 3, 4)
    tokens[0, 0, 0] = 1.0
    tokens[0, 1, 1] = 1.0  # the token to find
    tokens[0, 2, 2] = 1.0
    pooler = AttentionPooler(4)
    with torch.no_grad():
        pooler.query.copy_(torch.tensor([0.0, 100.0, 0.0, 0.0]))
    assert torch.allclose(pooler(tokens, torch.ones(1, 3)), tokens[:, 1], atol=1e-6)


def test_the_query_is_learned():
    tokens, mask = _batch()
    pooler = AttentionPooler(8)
    pooler(tokens, mask)[:, 0].sum().backward()
    assert pooler.query.grad is not None and pooler.query.grad.abs().sum() > 0
