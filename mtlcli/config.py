"""The training configuration: one typed dataclass, read from YAML and merged with CLI flags.

Each field carries its own option schema (``setting(...)``): the flag, the help, how the flag's
text is read, the allowed choices and the range check. The `train` flags, the YAML keys, the help
text, the value errors, resume's rules and the argv of ``--nproc`` children all come from it, so
a new key is one field here.

Precedence: the defaults below < a ``--config`` YAML file < flags given on the command line.
The resolved config is written to the run folder as ``config.yaml`` and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from mtlcli.errors import UserError, shown

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLASS_WEIGHTS = ("none", "balanced")
BUNDLED_MODEL = "all-MiniLM-L6-v2"  # the backbone when no --model is given (mtlcli.model.network.default_model_path)
SAVED_MAX_LENGTH = 128  # what runs saved before max_length was resolved at training time cut texts to


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


def _class_weight_item(text: str) -> tuple[str | None, str]:
    task, sep, how = text.rpartition("=")
    if sep and not task:
        raise ValueError("expected balanced (every task) or TASK=balanced")
    return (task, how) if sep else (None, text)


def _class_weights(items: list[tuple[str | None, str]]) -> str | dict[str, str]:
    """``--class-weight balanced`` is for every task; ``--class-weight TASK=balanced`` for one."""
    if len(items) == 1 and items[0][0] is None:
        return items[0][1]
    if any(task is None for task, _ in items):
        raise ValueError("expected balanced (every task) or TASK=balanced")
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


def strictly_between_0_and_1(v: float) -> str | None:
    return None if 0.0 < v < 1.0 else "must be between 0 and 1"


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


def is_choice(value: str, choices: tuple[str, ...]) -> bool:
    """``value`` is one of ``choices``; a choice ``name:N`` stands for name:0, name:1, ..."""
    return value in choices or any(c.endswith(":N") and value.startswith(c[:-1]) and value[len(c) - 1:].isdigit()
                                   for c in choices)


# ---- the schema -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    help: str
    kind: Kind = TEXT
    flag: str | None = None  # default: --key with '-' for '_'; "DATA": a positional argument
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None
    default_text: str | None = None  # what help shows as the default, where the value alone says little
    metavar: str | None = None  # what help shows for the flag's value; default: the kind's
    on_resume: str | None = None  # "raise": --resume may raise it; "add": --resume may add to it


def setting(default: Any, help: str, **schema: Any) -> Any:
    """A config field with its option schema (see Setting)."""
    meta = {"setting": Setting(help, **schema)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # data
    data: str | None = setting(None, "Training data (CSV, TSV, JSONL, Parquet): a text column and one column per task.", flag="DATA")
    val: str | None = setting(None, "Validation data, in any format DATA takes.", default_text="hold out --val-split of DATA")
    text_column: str = setting("sentence", "Column with the text.")
    tasks: list[str] = setting([], "A task column to train (repeatable).", kind=TEXTS, flag="--task",
                               default_text="every other column")
    val_split: float = setting(0.2, "Share of DATA held out for validation, stratified on the first task.", kind=NUMBER,
                               check=strictly_between_0_and_1)
    delimiter: str | None = setting(None, "Field delimiter of delimited text, one character (tab: \\t or tab).",
                                    metavar="CHAR", default_text="by extension: .csv comma, .tsv tab; else sniffed")
    # model
    model: str | None = setting(None, "Backbone: a local folder or a Hugging Face id.",
                                default_text=f"bundled {BUNDLED_MODEL}")
    max_length: int | str = setting("auto", "Truncate texts to this many tokens; auto: the length 95% of the training "
                                    "texts fit in.", kind=AUTO_OR_WHOLE, check=token_count)
    attention_dropout: float | str = setting(0.0, "Dropout on the backbone's attention weights while training; 0 "
                                             "lets attention run as one fused kernel on a CPU (much less memory); "
                                             "model: the model's own.", kind=NUMBER_OR_MODEL, check=share_or_model)
    pooling: str = setting("mean", "Pooler: cls, mean, max or a plugin's (mtl plugins lists them).")
    normalize: bool = setting(False, "L2-normalize the pooled vector before the heads.", kind=SWITCH)
    head: str = setting("linear", "Head per task: linear, mlp or a plugin's.")
    pooler_options: dict[str, Any] = setting({}, "Keyword arguments for the pooler.", kind=MAPPING)
    head_options: dict[str, Any] = setting({}, "Keyword arguments for each head, e.g. '{hidden_size: 256}'.",
                                           kind=MAPPING)
    freeze: list[str] = setting([], "none, backbone, embeddings, bottom:N (embeddings and the lowest N layers), or a "
                                "task's head (repeatable).", kind=TEXTS, default_text="none")
    # loss and optimisation
    loss_combiner: str = setting("weighted", "How task losses combine: weighted, uncertainty, dwa or a plugin's.")
    task_weights: dict[str, float] = setting({}, "Weight of a task's loss for the weighted combiner (repeatable).",
                                             kind=WEIGHTS, flag="--task-weight", check=weights_not_negative,
                                             default_text="1.0 each")
    class_weight: str | dict[str, str] = setting("none", "balanced: weigh each label by how rare it is in the "
                                                 "training rows; for every task, or TASK=balanced (repeatable).",
                                                 kind=CLASS_WEIGHT, check=class_weight_names)
    label_smoothing: float = setting(0.0, "Spread this share of each target over all labels.", kind=NUMBER,
                                     check=share_below_one)
    lr_backbone: float = setting(5e-5, "Learning rate of the backbone.", kind=NUMBER, check=not_negative)
    lr_heads: float = setting(1e-3, "Learning rate of the heads and the loss combiner.", kind=NUMBER, check=positive)
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and norms).", kind=NUMBER,
                                  check=not_negative)
    max_grad_norm: float = setting(1.0, "Clip gradients to this norm; 0 turns clipping off.", kind=NUMBER,
                                   check=not_negative)
    scheduler: str = setting("linear", "LR schedule: linear, cosine, constant or a plugin's.")
    warmup_ratio: float = setting(0.1, "Share of all steps spent warming up.", kind=NUMBER, check=share_below_one)
    # the loop
    epochs: int = setting(3, "Most epochs to train.", kind=WHOLE, check=at_least(1), on_resume="raise")
    batch_size: int = setting(32, "Sentences per optimizer step, over all processes.", kind=WHOLE, check=at_least(1))
    patience: int = setting(2, "Stop after this many epochs without improvement.", kind=WHOLE, check=at_least(1),
                            on_resume="raise")
    min_delta: float = setting(0.0, "Fall in validation loss that counts as an improvement.", kind=NUMBER,
                               check=not_negative)
    keep_all_best: bool = setting(False, "Keep every best checkpoint, not only the newest.", kind=SWITCH)
    seed: int = setting(42, "Seed for Python, NumPy and torch.", kind=WHOLE, check=seed_range)
    device: str = setting("auto", "Where to train; auto: CUDA when present.", choices=DEVICES)
    precision: str = setting("auto", "auto: bf16 where the hardware runs it natively, else fp32; fp16 is CUDA only.",
                             choices=PRECISIONS)
    cuda_graphs: bool = setting(True, "On CUDA, run each batch shape's forward and backward pass as one recorded CUDA "
                                "graph (far less overhead per step); --no-cuda-graphs runs them op by op.",
                                kind=SWITCH)
    track: list[str] = setting([], "Also log the run to a tracker: tensorboard, mlflow or a plugin's (repeatable).",
                               kind=TEXTS, default_text="none", on_resume="add")
    # where the run goes
    out: str = setting("runs", "Folder that holds the runs.")
    name: str | None = setting(None, "Run folder name; an existing folder is never reused.", default_text="a timestamp")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> "TrainConfig":
        """The settings a run saved (a checkpoint's or an export's config), read back as trained.

        Lenient where the strict readers above refuse: a run written by another version of mtl
        still loads. Keys this version does not know are left out, keys it lacks take the defaults
        above, and a max_length that is not a number of tokens reads as SAVED_MAX_LENGTH.
        """
        cfg = cls(**{k: v for k, v in values.items() if k in FIELDS})
        if not isinstance(cfg.max_length, int):
            cfg.max_length = SAVED_MAX_LENGTH
        return cfg


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
SETTINGS: dict[str, Setting] = {name: f.metadata["setting"] for name, f in FIELDS.items()}
DEFAULTS = TrainConfig()
_HINTS = typing.get_type_hints(TrainConfig)


RESUMABLE = [key for key, s in SETTINGS.items() if s.on_resume]  # all else stays as the run started


def resume_rule() -> str:
    """What may be given beside --resume, as the schema says."""
    raisable = [flag_of(k) for k in RESUMABLE if SETTINGS[k].on_resume == "raise"]
    addable = [flag_of(k) for k in RESUMABLE if SETTINGS[k].on_resume == "add"]
    return f"only {' and '.join(raisable)} may be given, to raise them" + (
        f"; {' and '.join(addable)} adds to the run's" if addable else "")


def flag_of(key: str) -> str:
    return SETTINGS[key].flag or "--" + key.replace("_", "-")


def is_argument(key: str) -> bool:
    return not flag_of(key).startswith("-")


def default_shown(key: str) -> str:
    """The default as help and docs show it."""
    s = SETTINGS[key]
    if s.default_text is not None:
        return s.default_text
    value = getattr(DEFAULTS, key)
    if s.kind is SWITCH:
        return "on" if value else "off"
    return str(value)


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
        checked[key] = _coerce(key, value, _HINTS[key], where)
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
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
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
