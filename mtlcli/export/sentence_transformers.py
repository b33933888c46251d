"""The sentence-transformers export: a standard folder that ``SentenceTransformer(folder)`` loads for
embeddings (backbone -> pooling -> optional Normalize), with mtl's task heads beside it.

The folder uses the classic module layout (``modules.json``, ``1_Pooling/``, ``2_Normalize/``) that
every sentence-transformers release reads. All weights are safetensors: loading runs no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mtlcli.config import TrainConfig
from mtlcli.errors import UserError, first_line
from mtlcli.export import folder as export_folder
from mtlcli.model.checkpoint import SavedRun

HEADS = "heads.safetensors"
ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}


def check_exportable(settings: TrainConfig) -> None:
    pooling = settings.pooling
    if pooling not in ST_POOLING:
        raise UserError(f"the run pools with '{pooling}', which sentence-transformers has no module for "
                        f"(it has {', '.join(ST_POOLING)}); export it with --format onnx instead")


def write(loaded, out: Path) -> None:
    """The backbone (safetensors), tokenizer, pooling and normalize modules, and the heads (their
    safetensors metadata names each task's type)."""
    from safetensors.torch import save_file

    cfg = loaded.saved.settings
    check_exportable(cfg)
    model = loaded.model
    model.backbone.save_pretrained(str(out))  # config.json + model.safetensors
    export_folder.save_tokenizer(loaded.tokenizer, out, cfg.max_length)
    hidden = model.backbone.config.hidden_size
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if cfg.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir()
    export_folder.write_json(out / "modules.json", modules)
    export_folder.write_json(out / "sentence_bert_config.json", {"max_seq_length": cfg.max_length,
                                                                 "do_lower_case": False})
    (out / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": hidden, **{mode: False for mode in ST_POOLING.values()},
               "pooling_mode_mean_sqrt_len_tokens": False}
    pooling[ST_POOLING[cfg.pooling]] = True
    export_folder.write_json(out / "1_Pooling" / "config.json", pooling)
    tensors = {f"heads.{k}": v for k, v in model.heads.state_dict().items()}
    tensors.update({f"pooler.{k}": v for k, v in model.pooler.state_dict().items()})
    # each head's task type, for a reader of this file alone; what each learned is in mtl_config.json
    types = json.dumps({name: task.type for name, task in loaded.tasks.items()})
    save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, str(out / HEADS),
              metadata={"format": "pt", "task_types": types})


def load(path: Path, saved: SavedRun, device: str, precision: str):
    """The export as a LoadedRun (what eval and predict use), built from safetensors and JSON only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoModel

    from mtlcli.model import builder
    from mtlcli.runtime.hardware import resolve_device
    from mtlcli.inference.loaded_run import LoadedRun, ready
    from mtlcli.model.network import _quiet_transformers, load_tokenizer

    builder.check_installed(saved.components, path / export_folder.CONFIG)
    dev = resolve_device(device)
    _quiet_transformers()
    tokenizer = load_tokenizer(str(path))
    try:
        backbone = AutoModel.from_pretrained(str(path), use_safetensors=True, dtype=torch.float32)
        heads = load_file(str(path / HEADS))
    except (OSError, ValueError, SafetensorError) as exc:
        raise UserError(f"{path}: cannot load the exported weights ({first_line(exc, 200)})") from None
    try:
        model, combiner = builder.build(backbone, saved.tasks, saved.settings)  # the combiner untrained: exports keep no losses
        missing, unexpected = model.load_state_dict(heads, strict=False)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise UserError(f"{path / HEADS}: does not match the export's config ({first_line(exc, 200)})") from None
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise UserError(f"{path / HEADS}: does not match the export's config "
                        f"(missing {', '.join(missing) or 'nothing'}; unexpected {', '.join(unexpected) or 'nothing'})")
    precision = ready(model, dev, precision, saved.precision)
    return LoadedRun(run=path, checkpoint=path / HEADS, model=model, combiner=combiner.to(dev), tokenizer=tokenizer,
                     saved=saved, device=dev, precision=precision)
