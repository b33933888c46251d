"""How config values are read and checked: flag text to values (the ``Kind``s), range checks, and
plain values (from YAML or Python) checked against a field's type annotation.

Nothing here knows the config's keys; the schema (``mtlcli.config.schema``) picks a kind and a check
for each key.
"""

from __future__ import annotations

import json
import math
import reprlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from mtlcli.errors import UserError, shown

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PREDICT_PRECISIONS = (*PRECISIONS, "int8")  # int8: prediction on a CPU only, never training
CLASS_WEIGHTS = ("auto", "none", "balanced")  # auto: what the task's type weighs by default


# ---- how a flag's text becomes a value, and back ----------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How a flag's text is read (``read``, one flag at a time) and written back (``write``).

    A repeatable kind reads each flag's text with ``read`` and joins the results with ``join``.
    """

    metavar: str
    read: Callable[[str], Any]
    write: Callable[[Any], list[str]] = lambda value: [str(value)]
    join: Callable[[list[Any]], Any] | None = None  # set: the flag is repeatable

    @property
    def repeatable(self) -> bool:
        return self.join is not None


def read_whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def read_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _word_or(word: str, read: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """A reader for flags that take one word (auto, model) or what ``read`` reads."""
    def reading(text: str) -> Any:
        if text == word:
            return text
        try:
            return read(text)
        except ValueError:
            raise ValueError(expected) from None
    return reading


def _task_and_weight(text: str) -> tuple[str, float]:
    task, sep, weight = text.rpartition("=")
    try:
        if not sep or not task:
            raise ValueError
        return task, float(weight)
    except ValueError:
        raise ValueError("expected TASK=WEIGHT, for example class_label=2.0") from None


def _task_and_type(text: str) -> tuple[str, str]:
    task, sep, kind = text.rpartition("=")
    if not sep or not task or not kind:
        raise ValueError("expected TASK=TYPE, for example rating=regression")
    return task, kind


def _class_weight_item(text: str) -> tuple[str | None, str]:
    task, sep, how = text.rpartition("=")
    if sep and not task:
        raise ValueError("expected auto, none or balanced (every task), or TASK=HOW")
    return (task, how) if sep else (None, text)


def _class_weights(items: list[tuple[str | None, str]]) -> str | dict[str, str]:
    """``--class-weight balanced`` is for every task; ``--class-weight TASK=balanced`` for one."""
    if len(items) == 1 and items[0][0] is None:
        return items[0][1]
    if any(task is None for task, _ in items):
        raise ValueError("expected auto, none or balanced (every task), or TASK=HOW")
    return dict(items)


def _yaml_mapping(text: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise ValueError("expected a mapping such as '{hidden_size: 256, dropout: 0.1}'")
    return value


def _pairs_written(value: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in value.items()]


TEXT = Kind("TEXT", str)
WHOLE = Kind("N", read_whole_number)
NUMBER = Kind("X", read_number)
SWITCH = Kind("", bool)  # --key/--no-key: the command line gives the value itself
AUTO_OR_WHOLE = Kind("auto|N", _word_or("auto", int, "expected a number of tokens or auto"))
NUMBER_OR_MODEL = Kind("X|model", _word_or("model", read_number, "expected a number or model"))
TEXTS = Kind("TEXT", str, write=list, join=list)
WEIGHTS = Kind("TASK=W", _task_and_weight, write=_pairs_written, join=dict)
CLASS_WEIGHT = Kind("[TASK=]HOW", _class_weight_item,
                    write=lambda v: [v] if isinstance(v, str) else _pairs_written(v), join=_class_weights)
TASK_TYPES = Kind("TASK=TYPE", _task_and_type, write=_pairs_written, join=dict)
MAPPING = Kind("YAML", _yaml_mapping, write=lambda v: [json.dumps(v)])


# ---- range checks: each returns what is wrong, or None ----------------------------------------


def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def not_negative(v: float) -> str | None:
    return None if v >= 0 else "must not be negative"


def positive(v: float) -> str | None:
    return None if v > 0 else "must be positive"


def share_below_one(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def held_out_share(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be 0 (no validation) or between 0 and 1"


def share_or_model(v: float | str) -> str | None:
    return None if v == "model" or (not isinstance(v, str) and 0.0 <= v < 1.0) else "must be model or in [0, 1)"


def seed_range(v: int) -> str | None:
    return None if 0 <= v < 2**32 else "must be from 0 to 2**32 - 1"


def token_count(v: int | str) -> str | None:
    return None if v == "auto" or (isinstance(v, int) and v >= 2) else "must be auto or a number of tokens of at least 2"


def class_weight_names(v: str | dict[str, str]) -> str | None:
    chosen = v.values() if isinstance(v, dict) else [v]
    ok = all(w in CLASS_WEIGHTS for w in chosen)
    return None if ok else f"must be {' or '.join(CLASS_WEIGHTS)} (for every task or per task)"


def weights_not_negative(v: dict[str, float]) -> str | None:
    negative = [task for task, w in v.items() if w < 0]
    return f"weight of task '{negative[0]}' must not be negative" if negative else None


def one_character(v: str) -> str | None:
    return None if len(v) == 1 and not v.isspace() else "must be one character, not a space"


def is_choice(value: str, choices: tuple[str, ...]) -> bool:
    """``value`` is one of ``choices``; a choice ``name:N`` stands for name:0, name:1, ..."""
    return value in choices or any(c.endswith(":N") and value.startswith(c[:-1]) and value[len(c) - 1:].isdigit()
                                   for c in choices)


# ---- plain values against a field's type ------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(key: str, value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for inner in options[:-1]:  # int | str: the first type the value fits wins
            try:
                return coerce(key, value, inner, where)
            except UserError:
                pass
        return coerce(key, value, options[-1], where)
    # reprlib: a bounded look at the value; a plain repr of a YAML alias bomb never ends
    bad = UserError(f"{where}: key '{shown(key)}' must be {_describe(tp)}, got {shown(reprlib.repr(value), 80)}")
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)
        return [coerce(key, v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, val_tp = typing.get_args(tp)
        return {str(k): coerce(f"{key}.{k}", v, val_tp, where) for k, v in value.items()}
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
