"""A BERT encoder for inference that imports nothing of transformers.

Importing a model class of transformers imports its whole framework (torch's compiler and
distributed tensors among it): about 3 s of the 7 s a one-text `mtl predict` took on a 2-core CPU, for
code that prediction never runs. This module is the inference path of transformers' ``BertModel``
(the bundled all-MiniLM-L6-v2 and every other BERT checkpoint): the same parameter names, so a
checkpoint's state dict loads as is, and the same operations in the same order, so the outputs
are the same to the bit. Other architectures, and training, go through transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def native_config(folder: Path) -> SimpleNamespace | None:
    """The saved config.json when this module builds its model exactly as transformers would; else None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    covered = (config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
               and config.get("position_embedding_type", "absolute") == "absolute"
               and not config.get("is_decoder") and not config.get("add_cross_attention")
               and not config.get("chunk_size_feed_forward")
               and config.get("hidden_size", 0) % config.get("num_attention_heads", 1) == 0)
    if not covered:
        return None
    defaults = {"type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0, "max_position_embeddings": 512}
    # "sdpa": MultiTaskModel.embed then passes the 4D boolean mask that attention takes, as for transformers'
    return SimpleNamespace(**{**defaults, **config, "_attn_implementation": "sdpa"})


def _unset_embedding(rows: int, size: int, padding_idx: int | None = None) -> nn.Embedding:
    """An embedding table left uninitialized for the checkpoint's weights (which load strictly): drawing
    30,522 x 384 random numbers first took 0.09 s of a one-text prediction."""
    return nn.Embedding(rows, size, padding_idx=padding_idx, _weight=torch.empty(rows, size))


class Embeddings(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.word_embeddings = _unset_embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = _unset_embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = _unset_embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)[None, :]
        token_types = torch.zeros_like(input_ids)
        # the sums in transformers' order: words + token types, then + positions (float sums are not associative)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        embeddings = embeddings + self.position_embeddings(positions)
        return self.LayerNorm(embeddings)


class SelfAttention(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shape = (*hidden.shape[:-1], -1, self.head_size)
        q, k, v = (layer(hidden).view(*shape).transpose(1, 2) for layer in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=self.head_size ** -0.5,
                                             is_causal=False)
        return out.transpose(1, 2).contiguous().reshape(*hidden.shape[:-1], -1).contiguous()


class DenseNorm(nn.Module):
    """A linear layer, then the residual added and LayerNorm: BertSelfOutput and BertOutput."""

    def __init__(self, config: SimpleNamespace, size_in: int):
        super().__init__()
        self.dense = nn.Linear(size_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class Attention(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = DenseNorm(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class Intermediate(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class Layer(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class Encoder(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))


class Pooler(nn.Module):
    """Held for the checkpoint's weights (BertModel has it); mtl's own poolers read the token vectors."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class BertEncoder(nn.Module):
    """Token ids and a mask in, ``last_hidden_state`` out, as transformers' ``BertModel`` in eval mode."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)

    def get_input_embeddings(self) -> nn.Embedding:  # as transformers' models name it
        return self.embeddings.word_embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """``attention_mask``: the 4D boolean mask [batch, 1, 1, length] that MultiTaskModel.embed makes."""
        if self.training:
            raise RuntimeError("BertEncoder is for inference; training builds transformers' BertModel")
        hidden = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            hidden = layer(hidden, attention_mask)
        return SimpleNamespace(last_hidden_state=hidden)
