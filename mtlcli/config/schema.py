"""The training configuration's schema: one typed dataclass whose fields carry their option schema.

Each field carries its own option schema (``setting(...)``): the flag, the help, how the flag's
text is read, the allowed choices and the range check. The `train` flags, the YAML keys, the help
text, the value errors, resume's rules and the argv of ``--nproc`` children all come from it, so
a new key is one field here.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from mtlcli.config.values import (AUTO_OR_WHOLE, CLASS_WEIGHT, DEVICES, MAPPING, NUMBER, NUMBER_OR_MODEL, PRECISIONS,
                                  SWITCH, TASK_TYPES, TEXT, TEXTS, WEIGHTS, WHOLE, Kind, at_least, class_weight_names,
                                  held_out_share, not_negative, one_character, positive, seed_range, share_below_one,
                                  share_or_model, token_count, weights_not_negative)


BUNDLED_MODEL = "all-MiniLM-L6-v2"  # the backbone when no --model is given (mtlcli.model.network.default_model_path)
SAVED_MAX_LENGTH = 128  # what runs saved before max_length was resolved at training time cut texts to


@dataclass(frozen=True)
class Setting:
    help: str
    kind: Kind = TEXT
    flag: str | None = None  # default: --key with '-' for '_'; "DATA": a positional argument
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None
    default_text: str | None = None  # what help shows as the default, where the value alone says little
    metavar: str | None = None  # what help shows for the flag's value; default: the kind's
    on_resume: str | None = None  # "raise": --resume may raise it; "add": add to it; "set": set it (no result changes)


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
    test: str | None = setting(None, "Test data, in any format DATA takes: scored with the best checkpoint when "
                               "training ends; its scores go into summary.json and the report.", default_text="none")
    text_column: str = setting("sentence", "Column with the text.")
    tasks: list[str] = setting([], "A task column to train (repeatable).", kind=TEXTS, flag="--task",
                               default_text="every other column")
    task_types: dict[str, str] = setting({}, "A task's type: classification, multilabel, regression or a plugin's "
                                         "(repeatable); the others are inferred from their cells.", kind=TASK_TYPES,
                                         flag="--task-type", default_text="inferred")
    label_separator: str = setting("|", "What joins the labels of a multi-label cell in delimited text.",
                                   metavar="CHAR", check=one_character)
    val_split: float = setting(0.2, "Share of DATA held out for validation, stratified on the first class task; 0: "
                               "train on every row for --epochs epochs, without validation or early stopping "
                               "(the last epoch is kept).", kind=NUMBER, check=held_out_share)
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
    class_weight: str | dict[str, str] = setting("auto", "balanced: weigh each label by how rare it is in the "
                                                 "training rows; none: do not; auto: multi-label tasks balanced, "
                                                 "the others not. For every task, or TASK=HOW (repeatable).",
                                                 kind=CLASS_WEIGHT, check=class_weight_names)
    label_smoothing: float = setting(0.0, "Spread this share of each class target over all labels.", kind=NUMBER,
                                     check=share_below_one)
    regression_loss: str = setting("mse", "Loss of regression tasks on their standardised values: mse or huber.",
                                   choices=("mse", "huber"))
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
    batch_size: int = setting(32, "Sentences per forward pass, over all processes; an optimizer step takes "
                              "--grad-accum of them.", kind=WHOLE, check=at_least(1))
    grad_accum: int = setting(1, "Gradient accumulation (Trainer's gradient_accumulation_steps): add up the gradients "
                              "of this many batches before each optimizer step, as one batch of --batch-size x "
                              "--grad-accum sentences would give, in the memory of one batch.", kind=WHOLE,
                              check=at_least(1), metavar="K")
    max_steps: int = setting(0, "Stop after this many optimizer steps in all, whatever --epochs says; the learning "
                             "rate schedule spans them.", kind=WHOLE, check=at_least(0), on_resume="raise",
                             default_text="0 (off: --epochs decides)")
    eval_steps: int = setting(0, "Also validate every this many optimizer steps (and save last.pt, and the best "
                              "checkpoint when it improved); validation always runs at each epoch's end.",
                              kind=WHOLE, check=at_least(0), default_text="0 (at epoch ends only)")
    log_steps: int = setting(10, "With --track: log the training loss and learning rates every this many optimizer "
                             "steps (their mean over those steps).", kind=WHOLE, check=at_least(1))
    gradient_checkpointing: bool = setting(False, "Recompute the backbone's activations during the backward pass "
                                           "instead of keeping them: less memory for some more time per step (on a CPU, freed "
                                           "activations also go back to the system at once).",
                                           kind=SWITCH)
    patience: int = setting(2, "Stop after this many validations without improvement.", kind=WHOLE,
                            check=at_least(1), on_resume="raise")
    min_delta: float = setting(0.0, "Fall in validation loss that counts as an improvement.", kind=NUMBER,
                               check=not_negative)
    keep_all_best: bool = setting(False, "Keep every best checkpoint, not only the newest.", kind=SWITCH)
    keep_optimizer: bool = setting(False, "Keep checkpoints/last.pt (the optimizer state that --resume needs to "
                                   "train on) when the run ends; without it a finished or early-stopped run drops "
                                   "it and an interrupted one keeps it.", kind=SWITCH)
    seed: int = setting(42, "Seed for Python, NumPy and torch.", kind=WHOLE, check=seed_range)
    device: str = setting("auto", "Where to train; auto: CUDA when present.", choices=DEVICES)
    precision: str = setting("auto", "auto: bf16 where the hardware runs it natively, else fp32; fp16 is CUDA only.",
                             choices=PRECISIONS)
    cuda_graphs: bool = setting(True, "On CUDA, run each batch shape's forward and backward pass as one recorded CUDA "
                                "graph (far less overhead per step); --no-cuda-graphs runs them op by op.",
                                kind=SWITCH)
    track: list[str] = setting([], "Also log the run to a tracker: tensorboard, mlflow or a plugin's (repeatable).",
                               kind=TEXTS, default_text="none", on_resume="add")
    token_cache: bool = setting(True, "Keep the token ids of the texts in .cache/tokens under --out, and read them "
                                "there when a later run tokenizes the same texts with the same tokenizer and max "
                                "length; --no-token-cache tokenizes again (the results are the same).",
                                kind=SWITCH, on_resume="set")
    # where the run goes
    out: str = setting("runs", "Folder that holds the runs.")
    name: str | None = setting(None, "Run folder name; an existing folder is never reused.", default_text="a timestamp")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> "TrainConfig":
        """The settings a run saved (a checkpoint's or an export's config), read back as trained.

        Lenient where the strict readers in ``sources`` refuse: a run written by another version of
        mtl still loads. Keys this version does not know are left out, keys it lacks take the
        defaults above, and a max_length that is not a number of tokens reads as SAVED_MAX_LENGTH.
        """
        cfg = cls(**{k: v for k, v in values.items() if k in FIELDS})
        if not isinstance(cfg.max_length, int):
            cfg.max_length = SAVED_MAX_LENGTH
        return cfg


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
SETTINGS: dict[str, Setting] = {name: f.metadata["setting"] for name, f in FIELDS.items()}
DEFAULTS = TrainConfig()
HINTS = typing.get_type_hints(TrainConfig)  # each key's annotation, the types resolved


RESUMABLE = [key for key, s in SETTINGS.items() if s.on_resume]  # all else stays as the run started


def resume_rule() -> str:
    """What may be given beside --resume, as the schema says."""
    raisable = [flag_of(k) for k in RESUMABLE if SETTINGS[k].on_resume == "raise"]
    addable = [flag_of(k) for k in RESUMABLE if SETTINGS[k].on_resume == "add"]
    settable = [f"{flag_of(k)} or --no-{flag_of(k)[2:]}" for k in RESUMABLE if SETTINGS[k].on_resume == "set"]
    return f"only {_listed(raisable)} may be given, to raise them" + (
        f"; {' and '.join(addable)} adds to the run's" if addable else "") + (
        f"; {' and '.join(settable)} may be given too" if settable else "")


def _listed(words: list[str]) -> str:
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 2 else words)


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
