"""The search space: which settings a trial draws, and from what.

A space maps config keys (TrainConfig's, as in a --config file; ``head_options.dropout`` reaches
into a mapping key) to a range (``{low, high}``, ``log: true`` for a log scale, ``step`` for a grid)
or a list of ``choices``. Every bound and choice is checked by the option schema before the first
trial, so a misspelled key or an impossible value is one line naming the file and the key.
"""

from __future__ import annotations

import inspect
import reprlib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mtlcli import config as config_mod
from mtlcli.config import TrainConfig
from mtlcli.config.schema import HINTS
from mtlcli.config.sources import blame_in_file, unknown_key
from mtlcli.errors import UserError, first_line, shown

# What measurably moves the score on a new table (the sweep behind the defaults), in ranges that
# train in about the default's time; a key given to `mtl tune` as a flag is fixed and left out.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr_backbone": {"low": 1e-5, "high": 2e-4, "log": True},
    "lr_heads": {"low": 1e-4, "high": 1e-2, "log": True},
    "epochs": {"low": 1, "high": 4},
    "batch_size": {"choices": [16, 32]},
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "max_length": {"choices": ["auto", 128]},
    "pooling": {"choices": ["mean", "cls", "max"]},
    "head": {"choices": ["linear", "mlp"]},
    "head_options.dropout": {"low": 0.0, "high": 0.3},
    "label_smoothing": {"low": 0.0, "high": 0.1},
    "class_weight": {"choices": ["auto", "none", "balanced"]},
}
DEFAULT_SOURCE = "the default search space"
MAPPING_KEYS = ("head_options", "pooler_options")  # keys whose entries a space may reach into
NOT_SEARCHED = ("data", "val", "test", "out", "name")  # the inputs, and where the trials go


@dataclass(frozen=True)
class Dimension:
    key: str  # a config key, or MAPPING_KEY.entry
    choices: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    whole: bool = False  # drawn as a whole number

    def distribution(self, optuna) -> Any:
        """Optuna's distribution of this dimension: a study keeps each key's from its first trial."""
        d = optuna.distributions
        if self.choices:
            return d.CategoricalDistribution(list(self.choices))
        if self.whole:
            return d.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is one this dimension can draw."""
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.whole and value != int(value)):
            return False
        return self.low <= value <= self.high

    def draw(self, trial) -> Any:
        """This dimension's value for an Optuna trial."""
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.whole:
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        value = trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        # three significant digits: a setting a person can read and type again (a grid's steps stay exact)
        return value if self.step else float(f"{value:.3g}")


def apply(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with a trial's values (``head_options.dropout`` sets one entry)."""
    settings = cfg.to_dict()
    for key, value in values.items():
        field, _, entry = key.partition(".")
        if entry:
            settings[field] = {**settings[field], entry: value}
        else:
            settings[field] = value
    return TrainConfig(**settings)


def own_values(dims: list[Dimension], cfg: TrainConfig) -> dict[str, Any]:
    """The searched keys' values in ``cfg`` (`mtl train`'s defaults where not given), where the space
    holds them: a new study trains these first, so its best trial is never below what `mtl train`
    gives on the same split. An entry of head_options / pooler_options that ``cfg`` leaves out is
    the component's own default."""
    from mtlcli.model import builder  # the built-in components registered

    values = {}
    for dim in dims:
        field, _, entry = dim.key.partition(".")
        value = getattr(cfg, field)
        if entry and entry in value:
            value = value[entry]
        elif entry:  # the head or pooler takes its own default: read it off its signature
            kind, name = ("head", cfg.head) if field == "head_options" else ("pooler", cfg.pooling)
            component = builder.COMPONENTS[kind][1].get(name)
            parameter = inspect.signature(component).parameters.get(entry)
            if parameter is None or parameter.default is inspect.Parameter.empty:
                continue
            value = parameter.default
        if dim.holds(value):
            values[dim.key] = value
    return values


def read_space(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the search space ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML "
                        f"({getattr(exc, 'problem', None) or first_line(exc)})") from None
    if not isinstance(values, dict) or not values:
        raise UserError(f"{path}: a search space is a mapping of config keys to ranges or choices, "
                        "e.g. 'lr_backbone: {low: 1e-5, high: 1e-4, log: true}'")
    return {str(k): v for k, v in values.items()}


def build_space(spec: dict[str, Any], fixed: TrainConfig, given: set[str], where: str,
                check_value=None) -> list[Dimension]:
    """The dimensions of ``spec``, each bound and choice checked against the schema with ``fixed``'s
    other settings (``check_value(cfg)`` checks more: plugin names); keys in ``given`` (the user's
    flags) stay fixed and are left out."""
    dims = []
    for key, entry in spec.items():
        dim = _dimension(key, entry, where)
        for value in dim.choices or (dim.low, dim.high):
            _check(key, value, fixed, where, check_value)
        dims.append(dim)
    return [d for d in dims if d.key.partition(".")[0] not in given]  # checked all the same: a typo is a typo


def _dimension(key: str, entry: Any, where: str) -> Dimension:
    field, dot, part = key.partition(".")
    if field not in config_mod.FIELDS:
        raise unknown_key(field, where)
    if dot and (field not in MAPPING_KEYS or not part):
        raise UserError(f"{where}: key '{shown(key)}': only {' and '.join(MAPPING_KEYS)} take an entry after '.'")
    if field in NOT_SEARCHED:
        raise UserError(f"{where}: key '{field}' says where trials read or write, not how they train; "
                        f"give it to `mtl tune` as {config_mod.flag_of(field)}")
    problem = _shape_problem(entry)
    if problem:
        raise UserError(f"{where}: key '{shown(key)}' {problem}, got {shown(reprlib.repr(entry), 80)}")
    if "choices" in entry:
        return Dimension(key, tuple(entry["choices"]))
    low, high = (_number(key, entry[end], end, where) for end in ("low", "high"))
    step = _number(key, entry["step"], "step", where) if entry.get("step") is not None else None
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: key '{shown(key)}': log must be true or false, got {shown(reprlib.repr(log), 40)}")
    if low > high:
        raise UserError(f"{where}: key '{shown(key)}': low {low} is above high {high}")
    if log and low <= 0:
        raise UserError(f"{where}: key '{shown(key)}': a log scale needs low above 0, got {low}")
    if log and step is not None:
        raise UserError(f"{where}: key '{shown(key)}': give log or step, not both")
    whole = isinstance(low, int) and isinstance(high, int) and (dot or _whole_numbers(field))
    return Dimension(key, low=low, high=high, log=log, step=step, whole=whole)


def _whole_numbers(field: str) -> bool:
    """A key that holds whole numbers (epochs; max_length, which may also be auto)."""
    hint = HINTS[field]
    return hint is int or (int in typing.get_args(hint) and float not in typing.get_args(hint))


def _shape_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "must be a range {low: ..., high: ...} or {choices: [...]}"
    extra = set(entry) - {"choices", "low", "high", "log", "step"}
    if extra:
        return f"has unknown entries ({', '.join(sorted(map(str, extra)))}): use low, high, log, step or choices"
    if "choices" in entry:
        if set(entry) != {"choices"}:
            return "takes choices or a range (low, high), not both"
        if not isinstance(entry["choices"], list) or not entry["choices"]:
            return "must list at least one choice"
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in entry["choices"]):
            return "takes plain choices (numbers, words, true/false)"
        return None
    if "low" not in entry or "high" not in entry:
        return "needs both low and high (or choices)"
    return None


def _number(key: str, value: Any, end: str, where: str) -> int | float:
    if isinstance(value, str):  # YAML reads 1e-5 (no dot) as text
        try:
            return config_mod.read_number(value)
        except ValueError as exc:
            raise UserError(f"{where}: key '{shown(key)}': {end} {exc}, got {shown(value, 40)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: key '{shown(key)}': {end} must be a number, got {shown(reprlib.repr(value), 40)}")
    return value


def _check(key: str, value: Any, fixed: TrainConfig, where: str, check_value) -> None:
    """One bound or choice, through the same checks a --config file's value goes through."""
    field, _, entry = key.partition(".")
    value_at = {field: {**getattr(fixed, field), entry: value}} if entry else {field: value}
    checked = config_mod.check_values(value_at, where)
    cfg = apply(fixed, checked)
    config_mod.validate(cfg, blame_in_file(where))
    if check_value is not None:
        try:
            check_value(cfg)
        except UserError as exc:
            raise UserError(f"{where}: key '{shown(key)}': {exc}") from None
