"""Where config values come from: a YAML file, command-line flags, Python; and back out, as the
argv of ``--nproc`` children and as YAML.

Precedence: the defaults < a ``--config`` YAML file < flags given on the command line.
The resolved config is written to the run folder as ``config.yaml`` and into every checkpoint.
A value error names where the value came from: the file and key, or the flag as typed.
"""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Any, Callable

import yaml

from mtlcli.config.schema import DEFAULTS, FIELDS, HINTS, SETTINGS, TrainConfig, flag_of, is_argument
from mtlcli.config.values import SWITCH, coerce, is_choice
from mtlcli.errors import UserError, first_line, shown


Blame = Callable[[str, Any, str], str]  # (key, value, what is wrong) -> the message, naming where the value came from


def blame_in_file(where: str) -> Blame:
    return lambda key, value, problem: f"{where}: key '{shown(key)}' {problem}, got {shown(reprlib.repr(value), 80)}"


def blame_on_command_line(texts: dict[str, str]) -> Blame:
    """Name the flag and the text the user typed."""

    def blame(key: str, value: Any, problem: str) -> str:
        typed = texts.get(key, str(value))
        return f"{flag_of(key)} {shown(typed)}: {problem}" if typed else f"{flag_of(key)}: {problem}"

    return blame


blame_in_code = blame_in_file("config")  # values given in Python (the defaults, an API call)


def unknown_key(key: str, where: str) -> UserError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(FIELDS)}"
    return UserError(f"{where}: unknown key '{shown(key)}' ({hint})")


def check_values(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a mapping of config keys: unknown keys and wrong types name the key."""
    checked = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise unknown_key(key, where)
        checked[key] = coerce(key, value, HINTS[key], where)
    return checked


def read_flags(given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The flags the user gave (their text, keyed by config key) as config values, and the text of each."""
    values, texts = {}, {}
    for key, raw in given.items():
        if raw is None or raw == []:
            continue
        kind, flag = SETTINGS[key].kind, flag_of(key)
        if kind is SWITCH:
            values[key], texts[key] = raw, ""
            continue
        items = raw if kind.repeatable else [raw]
        texts[key] = " ".join(items)
        read = []
        for text in items:
            try:
                read.append(kind.read(text))
            except ValueError as exc:
                raise UserError(f"{flag} {shown(text)}: {exc}") from None
        try:
            values[key] = kind.join(read) if kind.repeatable else read[0]
        except ValueError as exc:
            raise UserError(f"{flag} {shown(texts[key])}: {exc}") from None
    return values, texts


def to_argv(cfg: TrainConfig, keys: list[str] | None = None) -> list[str]:
    """Flags that give ``cfg`` back when read by `mtl train` (values equal to the defaults left out)."""
    argv: list[str] = []
    for key in keys or SETTINGS:
        value, kind, flag = getattr(cfg, key), SETTINGS[key].kind, flag_of(key)
        if value == getattr(DEFAULTS, key):
            continue
        if is_argument(key):
            argv[:0] = [str(value)]
        elif kind is SWITCH:
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            for text in kind.write(value):
                argv += [flag, text]
    return argv


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
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise UserError(f"{path}{line}: not valid YAML ({problem})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: a config file must be a mapping of keys to values, got {type(values).__name__}")
    return check_values({str(k): v for k, v in values.items()}, str(path))


def resolve(config_file: str | Path | None, overrides: dict[str, Any], typed: dict[str, str] | None = None) -> TrainConfig:
    """Defaults < config file < the flags the user gave (``None`` means not given).

    ``typed``: the text of each flag as the user typed it, so that a value error names the flag.
    """
    values: dict[str, Any] = {}
    blames: dict[str, Blame] = {}
    if config_file is not None:
        from_file = read_config_file(config_file)
        values.update(from_file)
        blames.update(dict.fromkeys(from_file, blame_in_file(str(config_file))))
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(check_values(given, "command line"))
    on_command_line = blame_on_command_line(typed) if typed is not None else blame_in_code
    blames.update(dict.fromkeys(given, on_command_line))
    cfg = TrainConfig(**values)
    validate(cfg, lambda key, value, problem: blames.get(key, blame_in_code)(key, value, problem))
    return cfg


def validate(cfg: TrainConfig, blame: Blame = blame_in_code) -> None:
    """The choices and range checks of the schema; they do not need the data or the model."""
    for key, s in SETTINGS.items():
        value = getattr(cfg, key)
        problem = s.check(value) if s.check else None
        if s.choices and not is_choice(value, s.choices):
            problem = f"must be one of {', '.join(s.choices)}"
        if problem:
            raise UserError(blame(key, value, problem))


def dump(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
