"""Rebuild a trained model from a run folder alone, and run it on texts in bounded-size batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from mtlcli import runs
from mtlcli.batching import Encoded, encode, inference_batch_size, iterate, sorted_batches, width_multiple
from mtlcli.checkpoint import load_checkpoint
from mtlcli.errors import UserError
from mtlcli.losses import Objective
from mtlcli.model import MultiTaskModel, backbone_from_config, build_model, load_tokenizer
from mtlcli.registry import REGISTRIES
from mtlcli.training.hardware import autocast, configure_device, cpu_has_native_bf16, resolve_device, resolve_precision


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

    @property
    def max_length(self) -> int:
        """Tokens a text is cut to, as in training (checkpoints hold the resolved number, never auto)."""
        value = self.config.get("max_length", 128)
        return value if isinstance(value, int) else 128

    @property
    def objective(self) -> Objective:
        saved = self.ckpt.get("objective") or {}
        return Objective(saved.get("class_weights") or {}, float(saved.get("label_smoothing") or 0.0))

    # what every predictor offers (this one, the ONNX one, mtlcli.Model): tokenize, then predict;
    # predict_io tokenizes the next chunk while the current one runs
    def encode(self, texts: Sequence[str]) -> Encoded:
        return encode_texts(self, texts)

    def probs_encoded(self, data: Encoded, batch_size: int | None = None, with_embeddings: bool = False,
                      on_batch: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
        return predict_encoded(self, data, batch_size, with_embeddings, on_batch)

    def probs(self, texts: Sequence[str], batch_size: int | None = None, with_embeddings: bool = False,
              on_batch: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
        """See ``predict_batches``."""
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
    configure_device(dev)
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


def predict_batches(loaded: LoadedRun, texts: Sequence[str], batch_size: int | None = None,
                    with_embeddings: bool = False,
                    on_batch: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Probabilities per task for ``texts`` (in input order); ``"_embeddings"`` too if asked.

    ``on_batch(done, total)`` is called after each batch, for progress displays.

    Texts are sorted by length for speed and put back in order; memory grows with ``len(texts)``
    only, so callers stream a large input through this in chunks.
    """
    return predict_encoded(loaded, encode_texts(loaded, texts), batch_size, with_embeddings, on_batch)


def encode_texts(loaded: LoadedRun, texts: Sequence[str]) -> Encoded:
    """Token ids for ``texts``, cut as the run was trained."""
    return encode(loaded.tokenizer, texts, {}, loaded.max_length)


@torch.inference_mode()
def predict_encoded(loaded: LoadedRun, data: Encoded, batch_size: int | None = None, with_embeddings: bool = False,
                    on_batch: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """``predict_batches`` for texts already tokenized with ``encode_texts``."""
    n = len(data)
    multiple = width_multiple(loaded.device)
    out = {t: np.zeros((n, len(labels)), dtype=np.float32) for t, labels in loaded.label_sets.items()}
    if with_embeddings:
        out["_embeddings"] = None  # sized on the first batch
    done = 0
    batches = sorted_batches(data.lengths, batch_size or inference_batch_size(loaded.device), multiple, loaded.max_length)
    found: dict[str, list[torch.Tensor]] = {t: [] for t in out}  # on the device until the end: no sync per batch
    for batch in iterate(data, batches, loaded.pad_id, loaded.device, multiple, loaded.max_length):
        with loaded.amp():
            pooled = loaded.model.embed(batch.input_ids, batch.attention_mask)
            logits = {t: head(pooled) for t, head in loaded.model.heads.items()}
        for t in loaded.label_sets:
            found[t].append(torch.softmax(logits[t].float(), dim=-1))
        if with_embeddings:
            found["_embeddings"].append(pooled.float())
        done += len(batch)
        if on_batch is not None:
            on_batch(done, n)
    rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    for t, parts in found.items():
        if parts:
            values = torch.cat(parts).cpu().numpy()
            out[t] = np.zeros((n, values.shape[-1]), dtype=np.float32) if out[t] is None else out[t]
            out[t][rows] = values
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
