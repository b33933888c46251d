"""A BERT encoder that imports nothing of transformers.

Importing a model class of transformers imports its whole framework (torch's compiler and
distributed tensors among it): about 3 s of the 7 s a one-text `mtl predict` took on a 2-core CPU,
and 2 s before a training run's first step, for code that neither runs. This module is transformers'
``BertModel`` (the bundled all-MiniLM-L6-v2 and every other BERT checkpoint) as mtl runs it: the
same parameter names, so a checkpoint's state dict loads as is, and the same operations in the same
order, dropout included, so the outputs and the gradients are the same to the bit. Other
architectures, and gradient checkpointing, go through transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class NativeConfig(SimpleNamespace):
    """A config.json's settings, read as transformers' config attributes are."""

    def save_pretrained(self, folder: str | Path) -> None:
        """config.json, as transformers writes it for this model: every setting but the run-time ones."""
        settings = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n",
                                                  encoding="utf-8")


def native_config(folder: Path) -> NativeConfig | None:
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
    # BertConfig's defaults, for the settings a config.json may leave out
    defaults = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0, "max_position_embeddings": 512}
    # "sdpa": MultiTaskModel.embed then passes the 4D boolean mask that attention takes, as for transformers'
    return NativeConfig(**{**defaults, **config, "_attn_implementation": "sdpa"})


WEIGHTS = "model.safetensors"
# buffers that some checkpoints hold beside the weights; BertModel makes them itself and drops these
DROPPED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def pretrained_encoder(folder: Path, overrides: dict[str, Any]) -> BertEncoder | None:
    """The pretrained BERT in ``folder``, to train, with ``overrides`` of its config; None where
    transformers must load it: not an architecture this module covers, weights other than one
    float32 model.safetensors, or names and shapes other than BertModel's (a checkpoint of
    BertForMaskedLM, say, whose names transformers maps)."""
    config = native_config(folder)
    if config is None or not (folder / WEIGHTS).is_file():
        return None
    from safetensors import safe_open

    with torch.device("meta"):  # no random initial weights: they are all replaced, and the seeded generator
        model = BertEncoder(NativeConfig(**{**vars(config), **overrides}))  # is left as transformers leaves it
    model.to_empty(device="cpu")
    expected = model.state_dict()
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as weights:
            names = set(weights.keys()) - set(DROPPED_BUFFERS)
            if names != expected.keys():
                return None
            for name in names:
                tensor = weights.get_tensor(name)
                if tensor.dtype != torch.float32 or tensor.shape != expected[name].shape:
                    return None
                expected[name].copy_(tensor)
    except Exception:  # not a readable safetensors file: transformers reports what is wrong with it
        return None
    return model.eval()  # as from_pretrained returns it


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
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)[None, :]
        token_types = torch.zeros_like(input_ids)
        # the sums in transformers' order: words + token types, then + positions (float sums are not associative)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        embeddings = embeddings + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(embeddings))


class SelfAttention(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)  # its p is what attention drops

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shape = (*hidden.shape[:-1], -1, self.head_size)
        q, k, v = (layer(hidden).view(*shape).transpose(1, 2) for layer in (self.query, self.key, self.value))
        dropout = self.dropout.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.head_size ** -0.5,
                                             is_causal=False)
        return out.transpose(1, 2).contiguous().reshape(*hidden.shape[:-1], -1).contiguous()


class DenseNorm(nn.Module):
    """A linear layer, then the residual added and LayerNorm: BertSelfOutput and BertOutput."""

    def __init__(self, config: SimpleNamespace, size_in: int):
        super().__init__()
        self.dense = nn.Linear(size_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


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
    """Token ids and a mask in, ``last_hidden_state`` out, as transformers' ``BertModel``."""

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
        hidden = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            hidden = layer(hidden, attention_mask)
        return SimpleNamespace(last_hidden_state=hidden)
