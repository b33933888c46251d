"""What every export folder holds besides the model: ``labels.json``, ``mtl_config.json`` (how the
model was trained and what it scored) and the tokenizer; and how a folder is written all at once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from mtlcli import __version__
from mtlcli.errors import UserError
from mtlcli import vocabulary as vocab

if TYPE_CHECKING:
    from mtlcli.model.checkpoint import SavedRun

CONFIG = "mtl_config.json"
LABELS = "labels.json"
FORMAT = "mtl-export"
FORMAT_VERSION = 1
KINDS = ("sentence-transformers", "onnx")


def is_export(path: Path) -> bool:
    return (path / CONFIG).is_file()


def describe(loaded, kind: str, quantized: str | None = None) -> dict[str, Any]:
    """The ``mtl_config.json`` of an export of ``loaded`` (a LoadedRun): plain JSON, nothing to unpickle.
    With labels.json it is the run's ``SavedRun``, as ``read`` gives it back; ``task_types`` holds
    each task's type and what it learned (``Task.to_dict``: a regression's mean and std, a
    multi-label task's thresholds). ``quantized``: "int8" for an ONNX graph quantized at export."""
    saved = loaded.saved
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "mtl_version": __version__,
        "run": loaded.run.name, "epoch": saved.epoch, "precision": saved.precision or "fp32",
        "validation": saved.validation, "components": saved.components, "config": saved.config,
        "task_types": {name: task.to_dict() for name, task in saved.tasks.items()},
    }
    if quantized:
        meta["quantized"] = quantized
    return meta


def precision(folder: Path) -> str:
    """What an export computes in: "int8" where it was quantized at export, else fp32."""
    return "int8" if _read_json(folder / CONFIG).get("quantized") == "int8" else "fp32"


def read(folder: Path) -> tuple[str, SavedRun]:
    """The kind of an export folder and the run it holds (``describe`` and labels.json read back), checked.
    An export without ``task_types`` (written before task types) holds classification tasks."""
    meta = _read_json(folder / CONFIG)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{folder / CONFIG}: not an mtl export")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise UserError(f"{folder / CONFIG}: written by a newer mtl (export format {meta.get('format_version')}); upgrade mtlcli")
    if meta.get("kind") not in KINDS or not isinstance(meta.get("config"), dict):
        raise UserError(f"{folder / CONFIG}: broken export ('kind' must be one of {', '.join(KINDS)}, 'config' an object)")
    labels = _read_json(folder / LABELS)
    if not isinstance(labels, dict) or not labels or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in labels.values()):
        raise UserError(f"{folder / LABELS}: must map each task to its list of labels")
    types = _task_types(folder / CONFIG, meta.get("task_types"), labels)
    from mtlcli.model.checkpoint import SavedRun  # torch: not on import, `mtl --help` reads KINDS

    return meta["kind"], SavedRun(meta["config"], labels, epoch=meta.get("epoch"),
                                  validation=meta.get("validation") or {}, precision=meta.get("precision"),
                                  components=meta.get("components") or {}, task_types=types)


def _task_types(path: Path, types: Any, labels: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """``task_types`` of mtl_config.json, checked against labels.json: a task without an entry is
    classification; only a type with no labels (regression) may have an empty list of labels."""
    from mtlcli.tasks.columns import task_type  # the registry: a type not installed is one line naming it

    types = {} if types is None else types
    if not isinstance(types, dict) or not all(isinstance(v, dict) and isinstance(v.get("type", ""), str)
                                              and isinstance(v.get("params", {}), dict) for v in types.values()):
        raise UserError(f"{path}: broken export ('task_types' must map each task to an object with its 'type')")
    if extra := sorted(set(types) - set(labels)):
        raise UserError(f"{path}: task_types names the task '{extra[0]}', which labels.json does not have")
    for name, names in labels.items():
        type_name = types.get(name, {}).get("type", "classification")
        try:
            kind = task_type(type_name)
        except UserError as exc:
            raise UserError(f"{path}: task '{name}': {exc}") from None
        if not names and getattr(kind, "min_labels", 0):
            raise UserError(f"{path.with_name(LABELS)}: the {type_name} task '{name}' has no labels")
    return types


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; the export is incomplete") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None


def save_tokenizer(tokenizer, out: Path, max_length: int, input_names: list[str] | None = None) -> None:
    """The run's tokenizer, saved so that a plain ``tokenizer(texts, truncation=True)`` cuts texts
    where the run cut them: ``model_max_length`` is the run's max length, not the base model's
    limit. ``input_names`` (``model_input_names``) are what it returns, when the model reads fewer
    than the tokenizer would give (the ONNX graph takes no ``token_type_ids``)."""
    tokenizer.save_pretrained(str(out))
    path = out / "tokenizer_config.json"
    config = _read_json(path)
    config["model_max_length"] = max_length
    if input_names is not None:
        config["model_input_names"] = list(input_names)
    write_json(path, config)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed to ``out`` when the block succeeds: no half exports."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty folder; choose another or remove it")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write here ({exc.strerror or exc})") from None
    try:
        yield tmp
        _usual_permissions(tmp)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _usual_permissions(tmp: Path) -> None:
    """safetensors writes its files readable by the owner only; an export is for sharing, so files
    get the permissions the umask gives new files, as the tokenizer's and the JSON files have."""
    umask = os.umask(0)
    os.umask(umask)
    for path in tmp.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)
