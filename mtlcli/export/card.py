"""README.md of an export: a model card saying what the model does, how well, and how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlcli import vocabulary as vocab
from mtlcli.config import BUNDLED_MODEL

if TYPE_CHECKING:
    from mtlcli.model.checkpoint import SavedRun

SCORES = (vocab.ACCURACY, vocab.MACRO_F1)  # each task's validation scores in the card's table

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
in the order of the heads' outputs.
""",
    "onnx": """## Load it

With ONNX Runtime: `model.onnx` takes `input_ids` and `attention_mask` (int64, `[batch, tokens]`,
from the tokenizer in this folder, at most {max_length} tokens) and returns `embedding`
(`[batch, {dim}]`) and one `probs_<task>` (`[batch, labels]`) per task, in the order of
`labels.json`.

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
    lines = [f"# {folder.name}", "",
             f"A multi-task text classifier trained with mtl {meta['mtl_version']} ({kind} export of run "
             f"`{meta['run']}`, epoch {meta['epoch']}).", "",
             "| | |", "|---|---|",
             f"| base model | `{_name(cfg.model) or f'{BUNDLED_MODEL} (bundled)'}` |",
             f"| training data | `{_name(cfg.data)}`" + (f", validation `{_name(cfg.val)}`" if cfg.val else "") + " |",
             f"| text column | `{cfg.text_column}` |",
             f"| pooling | {cfg.pooling}{', L2-normalized' if cfg.normalize else ''} |",
             f"| head | {cfg.head} |",
             f"| max length | {cfg.max_length} tokens |",
             f"| trained in | {meta['precision']} |", "",
             "## Tasks", "", "| task | labels | " + " | ".join(f"validation {m.label}" for m in SCORES) + " |",
             "|---|---|" + "---|" * len(SCORES)]
    val = saved.validation
    for task, names in saved.labels.items():
        shown = " | ".join(_fmt(val.get(vocab.key(vocab.VAL, task, m))) for m in SCORES)
        lines.append(f"| {task} | {', '.join(names)} | {shown} |")
    if vocab.VAL_LOSS in val:
        lines += ["", f"Validation loss (all tasks combined): {_fmt(val[vocab.VAL_LOSS])}."]
    lines += ["", _LOAD[kind].format(folder=folder.name, max_length=cfg.max_length, dim=dim)]
    return "\n".join(lines).rstrip() + "\n"


def _name(path: str | None) -> str:
    return Path(path).name if path else ""


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
