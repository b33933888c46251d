"""README.md of an export: a model card saying what the model does, how well, and how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlcli import vocabulary as vocab
from mtlcli.config import BUNDLED_MODEL
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind as kind_of

if TYPE_CHECKING:
    from mtlcli.model.checkpoint import SavedRun


_LOAD = {
    "sentence-transformers": """## Load it

Sentence embeddings, with sentence-transformers alone (no mtl needed):

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{folder}")
vectors = model.encode(["The battery died after a day."])
```

Labels, with mtl (`pip install mtlcli`):

```python
from mtlcli import Model
model = Model.load("{folder}")
model.predict(["The battery died after a day."], top_k=2)
```

or `mtl predict {folder} "The battery died after a day."`, or `mtl serve {folder}`.
The task heads are in `heads.safetensors` (`heads.<task>.*` tensors), their labels in `labels.json`,
in the order of the heads' outputs; each task's type and what it learned (a regression's `mean` and
`std`, a multi-label task's `thresholds`) in `task_types` of `mtl_config.json`. A regression head
gives the standardised value: times `std` plus `mean` is the value in the column's units.
""",
    "onnx": """## Load it

With ONNX Runtime: `model.onnx` takes `input_ids` and `attention_mask` (int64, `[batch, tokens]`),
which the tokenizer in this folder returns, cut at {max_length} tokens:
`encoded = tokenizer(texts, truncation=True, padding=True, return_tensors="np")`, then
`session.run(None, dict(encoded))`. It returns `embedding`
(`[batch, {dim}]`) and per task `probs_<task>` (`[batch, labels]`, in the order of `labels.json`) for
a classification or multi-label task, or `value_<task>` (`[batch]`, in the column's units) for a
regression task.

With mtl (`pip install "mtlcli[onnx]"`), which runs it on ONNX Runtime:

```python
from mtlcli import Model
model = Model.load("{folder}")
model.predict(["The battery died after a day."], top_k=2)
```

or `mtl predict {folder} "The battery died after a day."`, or `mtl serve {folder}`.
""",
}


def model_card(meta: dict[str, Any], saved: SavedRun, folder: Path, dim: int) -> str:
    """``meta``: the export's mtl_config.json; ``saved``: the run it holds."""
    cfg = saved.settings
    kind = meta["kind"]
    what = "classifier" if all(t.type == "classification" for t in saved.tasks.values()) else "model"
    lines = [f"# {folder.name}", "",
             f"A multi-task text {what} trained with mtl {meta['mtl_version']} ({kind} export of run "
             f"`{meta['run']}`, epoch {meta['epoch']}).", "",
             "| | |", "|---|---|",
             f"| base model | `{_name(cfg.model) or f'{BUNDLED_MODEL} (bundled)'}` |",
             f"| training data | `{_name(cfg.data)}`" + (f", validation `{_name(cfg.val)}`" if cfg.val else "") + " |",
             f"| text column | `{cfg.text_column}` |",
             f"| pooling | {cfg.pooling}{', L2-normalized' if cfg.normalize else ''} |",
             f"| head | {cfg.head} |",
             f"| max length | {cfg.max_length} tokens |",
             f"| trained in | {meta['precision']} |",
             *([f"| weights | {meta['quantized']} (quantized at export; inputs quantized per batch) |"]
               if meta.get("quantized") else []), "",
             "## Tasks", "", "| task | type | outputs | validation |", "|---|---|---|---|"]
    val = saved.validation
    for name, task in saved.tasks.items():
        scores = ", ".join(f"{m.label} {_fmt(val.get(vocab.key(vocab.VAL, name, m)))}"
                           for m in kind_of(task).metrics if m != vocab.LOSS)
        lines.append(f"| {name} | {task.type} | {_outputs(task)} | {scores or '-'} |")
    lines += [""] + [f"- {t}: {kind_of(task).describe}" for t, task in
                     {task.type: task for task in saved.tasks.values()}.items() if kind_of(task).describe]
    if vocab.VAL_LOSS in val:
        lines += ["", f"Validation loss (all tasks combined): {_fmt(val[vocab.VAL_LOSS])}."]
    lines += ["", _LOAD[kind].format(folder=folder.name, max_length=cfg.max_length, dim=dim)]
    return "\n".join(lines).rstrip() + "\n"


def _outputs(task: Task) -> str:
    """What a task's outputs are, for the card: its labels (with a multi-label task's thresholds), or
    a regression's units."""
    params = task.params
    if "thresholds" in params and len(params["thresholds"]) == len(task.labels):
        return ", ".join(f"{label} (threshold {t:.2f})" for label, t in zip(task.labels, params["thresholds"]))
    if task.labels:
        return ", ".join(task.labels)
    if "mean" in params and "std" in params:
        return f"a number in the column's units (training mean {params['mean']:.4g}, std {params['std']:.4g})"
    return "a number"


def _name(path: str | None) -> str:
    return Path(path).name if path else ""


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
