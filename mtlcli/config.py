"""The training configuration: one typed dataclass, read from YAML and merged with CLI flags.

Precedence: the defaults below < a ``--config`` YAML file < flags given on the command line.
The resolved config is written to the run folder as ``config.yaml`` and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtlcli.errors import UserError, shown


@dataclass
class TrainConfig:
    # data
    data: str | None = None  # the training CSV
    val: str | None = None  # a validation CSV; when unset, --val-split of the data is held out
    text_column: str = "sentence"
    tasks: list[str] = field(default_factory=list)  # empty: every column but the text column
    val_split: float = 0.2  # share of rows held out, stratified on the first task
    delimiter: str | None = None  # of delimited text (data and val); unset: by extension, else sniffed
    # model
    model: str | None = None  # a local folder or a Hugging Face id; unset: the bundled all-MiniLM-L6-v2
    max_length: int | str = "auto"  # tokens, longer texts are truncated; auto: 95% of the training texts fit
    pooling: str = "mean"  # registry kind "poolers"
    normalize: bool = False  # L2-normalise the pooled vector before the heads
    head: str = "linear"  # registry kind "heads"; one head per task
    pooler_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments for the pooler
    head_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments for each head
    freeze: list[str] = field(default_factory=list)  # backbone | embeddings | bottom:N | a task's head
    # loss and optimisation
    loss_combiner: str = "weighted"  # registry kind "loss_combiners"
    task_weights: dict[str, float] = field(default_factory=dict)  # TASK -> weight, 1.0 when absent
    class_weight: str | dict[str, str] = "none"  # none | balanced, for every task or as TASK -> none | balanced
    label_smoothing: float = 0.0  # share of each target spread evenly over all labels
    lr_backbone: float = 5e-5
    lr_heads: float = 1e-3  # also the loss combiner's parameters
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    max_grad_norm: float = 1.0  # 0 turns clipping off
    scheduler: str = "linear"  # registry kind "schedulers"
    warmup_ratio: float = 0.1  # share of all steps spent warming up
    # the loop
    epochs: int = 3
    batch_size: int = 32
    patience: int = 2  # epochs without improvement before stopping
    min_delta: float = 0.0  # how much validation loss must fall to count as an improvement
    keep_all_best: bool = False  # keep every best_epoch_N.pt, not only the newest
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    track: list[str] = field(default_factory=list)  # registry kind "trackers": tensorboard, mlflow or a plugin's
    # where the run goes
    out: str = "runs"
    name: str | None = None  # default: a timestamp

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CLASS_WEIGHTS = ("none", "balanced")
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for inner in options[:-1]:  # int | str: the first type the value fits wins
            try:
                return _coerce(key, value, inner, where)
            except UserError:
                pass
        return _coerce(key, value, options[-1], where)
    # reprlib: a bounded look at the value; a plain repr of a YAML alias bomb never ends
    bad = UserError(f"{where}: key '{shown(key)}' must be {_describe(tp)}, got {shown(reprlib.repr(value), 80)}")
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(key, v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(f"{key}.{k}", v, val_tp, where) for k, v in value.items()}
    if tp is Any:
        return _plain(key, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise UserError(f"{where}: key '{shown(key)}' must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        if "\x00" in value:  # no path or name can hold one, and the OS would refuse it later
            raise UserError(f"{where}: key '{shown(key)}' holds a NUL character")
        return value
    raise bad


PLAIN_LIMIT = 10_000  # values in an options mapping; YAML aliases can make a small file expand without bound


def _plain(key: str, value: Any, where: str) -> Any:
    """Options mappings hold plain data only (what YAML, JSON and a weights-only checkpoint all take)."""
    budget = [PLAIN_LIMIT]

    def walk(v: Any) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise UserError(f"{where}: key '{shown(key)}' holds more than {PLAIN_LIMIT} values")
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise UserError(f"{where}: key '{shown(key)}' has a non-string key {shown(reprlib.repr(k), 40)}")
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{where}: key '{shown(key)}' holds {v!r}; use a finite number")
        elif not (v is None or isinstance(v, (str, int, float, bool))):
            raise UserError(f"{where}: key '{shown(key)}' holds a {type(v).__name__} "
                            "(only strings, numbers, true/false, lists and mappings are allowed)")

    walk(value)
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping to {_describe(typing.get_args(tp)[1])}"
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return " or ".join(_describe(a) for a in args if a is not type(None)) + (" (or empty)" if type(None) in args else "")
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
        _type_name(tp), _type_name(tp)
    )


def check_values(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a mapping of config keys: unknown keys and wrong types name the key."""
    checked = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise UserError(f"{where}: unknown key '{shown(key)}' (known keys: {', '.join(FIELDS)})")
        checked[key] = _coerce(key, value, _HINTS[key], where)
    return checked


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config file ({exc})") from None
    try:
        values = yaml.safe_load(text)  # safe: tags like !!python/object are refused
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: not valid YAML ({problem})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: a config file must be a mapping of keys to values, got {type(values).__name__}")
    return check_values({str(k): v for k, v in values.items()}, str(path))


def resolve(config_file: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < the flags the user gave (``None`` means not given)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_file))
    values.update(check_values({k: v for k, v in overrides.items() if v is not None}, "command line"))
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Range checks that do not need the data or the model."""

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise UserError(f"config key '{key}' {what}, got {getattr(cfg, key)!r}")

    need(0.0 < cfg.val_split < 1.0, "val_split", "must be between 0 and 1")
    need(cfg.max_length == "auto" or (isinstance(cfg.max_length, int) and cfg.max_length >= 2), "max_length",
         "must be auto or a number of tokens of at least 2")
    weights = cfg.class_weight.values() if isinstance(cfg.class_weight, dict) else [cfg.class_weight]
    need(all(w in CLASS_WEIGHTS for w in weights), "class_weight", f"must be {' or '.join(CLASS_WEIGHTS)} (for every task "
         "or per task)")
    need(0.0 <= cfg.label_smoothing < 1.0, "label_smoothing", "must be in [0, 1)")
    need(cfg.epochs >= 1, "epochs", "must be at least 1")
    need(cfg.batch_size >= 1, "batch_size", "must be at least 1")
    need(cfg.patience >= 1, "patience", "must be at least 1")
    need(0 <= cfg.seed < 2**32, "seed", "must be from 0 to 2**32 - 1")
    need(cfg.min_delta >= 0, "min_delta", "must not be negative")
    need(cfg.lr_backbone >= 0, "lr_backbone", "must not be negative")
    need(cfg.lr_heads > 0, "lr_heads", "must be positive")
    need(cfg.weight_decay >= 0, "weight_decay", "must not be negative")
    need(cfg.max_grad_norm >= 0, "max_grad_norm", "must not be negative")
    need(0.0 <= cfg.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
    need(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"), "device", "must be auto, cpu or cuda")
    need(cfg.precision in ("auto", "fp32", "bf16", "fp16"), "precision", "must be auto, fp32, bf16 or fp16")
    for task, w in cfg.task_weights.items():
        if w < 0:
            raise UserError(f"config key 'task_weights': weight of task '{task}' must not be negative, got {w}")


def dump(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
