"""Rebuild a trained model from a run folder alone, and run it on texts in bounded-size batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from mtlcli import runs
from mtlcli.batching import Encoded, iterate, sorted_batches, tokenize
from mtlcli.checkpoint import load_checkpoint
from mtlcli.errors import UserError
from mtlcli.model import MultiTaskModel, backbone_from_config, build_model, load_tokenizer
from mtlcli.registry import REGISTRIES
from mtlcli.training.hardware import autocast, cpu_has_native_bf16, resolve_device, resolve_precision


@dataclass
class LoadedRun:
    run: Path
    checkpoint: Path
    model: MultiTaskModel
    tokenizer: Any
    label_sets: dict[str, list[str]]
    config: dict[str, Any]
    ckpt: dict[str, Any]
    device: torch.device
    precision: str

    def amp(self):
        return autocast(self.device, self.precision)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def probs(self, texts: Sequence[str], batch_size: int = 64, with_embeddings: bool = False,
              on_batch: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
        """What every predictor offers (this one, the ONNX one): see ``predict_batches``."""
        return predict_batches(self, texts, batch_size, with_embeddings, on_batch)


def check_components_installed(ckpt: dict[str, Any], path: Path) -> None:
    """Stop with a one-line error naming the package when a component the model needs is not installed."""
    kinds = {"pooler": "poolers", "head": "heads", "loss_combiner": "loss_combiners", "scheduler": "schedulers"}
    for kind, info in (ckpt.get("components") or {}).items():
        registry = REGISTRIES.get(kinds.get(kind, ""))
        if registry is not None and info.get("name") not in registry:
            what, package, version = kind.replace("_", " "), info.get("source", "?"), info.get("version", "")
            if package == "built-in":  # a built-in that this version of mtlcli no longer has
                package, what = "mtlcli", f"built-in {what}"
            raise UserError(
                f"{path}: the run uses the {what} '{info.get('name')}' from the package {package} {version}, "
                f"which is not installed; install it with: pip install '{package}=={version}'"
            )


def load_run(run_dir: str | Path, device: str = "auto", precision: str = "auto",
             checkpoint: str | Path | None = None) -> LoadedRun:
    """The run's best checkpoint (or the one given), rebuilt on ``device``: one loader for every command."""
    import mtlcli.components  # noqa: F401

    run = runs.resolve_run(run_dir)
    path = Path(checkpoint) if checkpoint else runs.best_checkpoint(run)
    dev = resolve_device(device)
    ckpt = load_checkpoint(path)
    check_components_installed(ckpt, path)
    cfg = ckpt["config"]
    if not (run / "backbone").is_dir():
        raise UserError(f"{run}: the run has no backbone/ folder (tokenizer and architecture)")
    tokenizer = load_tokenizer(str(run / "backbone"))
    try:
        model = build_model(backbone_from_config(run / "backbone"), ckpt["labels"], cfg["pooling"], cfg["head"],
                            cfg["normalize"], cfg.get("pooler_options"), cfg.get("head_options"))
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: the checkpoint does not match its run's model ({str(exc).splitlines()[0][:200]})") from None
    precision = ready(model, dev, precision, ckpt.get("precision"))
    return LoadedRun(run, path, model, tokenizer, ckpt["labels"], cfg, ckpt, dev, precision)


def ready(model: MultiTaskModel, dev: torch.device, requested: str, trained: str | None) -> str:
    """Put a freshly built model on ``dev`` for inference; returns the precision it will run in."""
    model.to(dev).eval()
    precision = _precision(requested, {"precision": trained}, dev)
    _cast_backbone_linears(model, precision)
    return precision


def _cast_backbone_linears(model: MultiTaskModel, precision: str) -> None:
    """Give the backbone's linear layers the autocast dtype once, for inference.

    Under bf16/fp16 autocast every linear layer casts its fp32 weights again on every call (the
    cast cache does not apply under inference mode), so every batch paid for copying the whole
    backbone. Autocast would cast them to exactly these values, so the results do not change.
    Only the backbone (Hugging Face layers, all F.linear); plugin heads and poolers stay as they are.
    """
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        for module in model.backbone.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(dtype)


def _precision(requested: str, ckpt: dict[str, Any], dev: torch.device) -> str:
    """``"run"``: the precision the run trained with (so scores match its validation), where it works here."""
    if requested != "run":
        return resolve_precision(requested, dev)
    trained = ckpt.get("precision")
    if trained == "fp32" or (trained == "fp16" and dev.type == "cuda") or (
            trained == "bf16" and (dev.type == "cuda" or cpu_has_native_bf16())):
        return trained
    return resolve_precision("auto", dev)


@torch.inference_mode()
def predict_batches(loaded: LoadedRun, texts: Sequence[str], batch_size: int = 64,
                    with_embeddings: bool = False,
                    on_batch: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Probabilities per task for ``texts`` (in input order); ``"_embeddings"`` too if asked.

    ``on_batch(done, total)`` is called after each batch, for progress displays.

    Texts are sorted by length for speed and put back in order; memory grows with ``len(texts)``
    only, so callers stream a large input through this in chunks.
    """
    max_length = int(loaded.config.get("max_length", 128))
    data = Encoded(tokenize(loaded.tokenizer, texts, max_length), {})
    out = {t: np.zeros((len(texts), len(labels)), dtype=np.float32) for t, labels in loaded.label_sets.items()}
    if with_embeddings:
        out["_embeddings"] = None  # sized on the first batch
    done = 0
    for batch in iterate(data, sorted_batches(data.lengths, batch_size), loaded.pad_id):
        batch = batch.to(loaded.device)
        with loaded.amp():
            pooled = loaded.model.embed(batch.input_ids, batch.attention_mask)
            logits = {t: head(pooled) for t, head in loaded.model.heads.items()}
        idx = batch.index.numpy()
        for t in loaded.label_sets:
            out[t][idx] = torch.softmax(logits[t].float(), dim=-1).cpu().numpy()
        if with_embeddings:
            if out["_embeddings"] is None:
                out["_embeddings"] = np.zeros((len(texts), pooled.shape[-1]), dtype=np.float32)
            out["_embeddings"][idx] = pooled.float().cpu().numpy()
        done += len(idx)
        if on_batch is not None:
            on_batch(done, len(texts))
    return out


def chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
