"""From settings to modules: the multi-task model and its loss combiner, for a new run or from a checkpoint.

Which config key names which kind of component, and the registry it is looked up in, is declared
here once; training, loading a run and loading an export all build through ``build``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

import mtlcli.components  # noqa: F401  (built-ins registered before lookups)
import mtlcli.tasks  # noqa: F401
from mtlcli.model.checkpoint import Checkpoint, SavedRun
from mtlcli.config import TrainConfig
from mtlcli.errors import UserError, first_line
from mtlcli.model.network import MultiTaskModel
from mtlcli.registry import Registry, heads, loss_combiners, poolers, schedulers, singular
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import kind

# the config key naming each component a run is built with -> the registry it is looked up in
CONFIG_KEYS = {"pooling": poolers, "head": heads, "loss_combiner": loss_combiners, "scheduler": schedulers}
# kind as checkpoints record it ("loss_combiner") -> (the config key naming it, its registry)
COMPONENTS: dict[str, tuple[str, Registry]] = {singular(r.kind): (key, r) for key, r in CONFIG_KEYS.items()}


def look_up_components(config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Find every component the config names before anything slow happens; returns where each
    comes from (name, package, version), which checkpoints keep so a run names what it needs."""
    found = {}
    for kind, (key, registry) in COMPONENTS.items():
        name = config[key]
        registry.get(name)  # an unknown name is one line listing the known ones
        entry = registry.entry(name)
        found[kind] = {"name": name, "source": entry.source, "version": entry.version}
    return found


def check_installed(components: Mapping[str, Mapping[str, str]], where: Path) -> None:
    """Stop with a one-line error naming the package when a component the model needs is not installed."""
    for kind, info in components.items():
        if kind not in COMPONENTS or info.get("name") in COMPONENTS[kind][1]:
            continue
        what, package, version = kind.replace("_", " "), info.get("source", "?"), info.get("version", "")
        if package == "built-in":  # a built-in that this version of mtlcli no longer has
            package, what = "mtlcli", f"built-in {what}"
        raise UserError(f"{where}: the run uses the {what} '{info.get('name')}' from the package {package} {version}, "
                        f"which is not installed; install it with: pip install '{package}=={version}'")


def build(backbone: nn.Module, tasks: dict[str, Task],
          settings: TrainConfig) -> tuple[MultiTaskModel, nn.Module]:
    """The model (backbone -> pooler -> optional L2 norm -> one head per task) and the loss combiner,
    untrained, as ``settings`` (a new run's, or a saved run's SavedRun.settings) describe them."""
    hidden = backbone.config.hidden_size
    pooling, head = settings.pooling, settings.head
    try:
        pooler = poolers.get(pooling)(hidden, **(settings.pooler_options or {}))
        size = getattr(pooler, "output_size", hidden)
        task_heads = {t: heads.get(head)(size, kind(task).size(task), **(settings.head_options or {}))
                      for t, task in tasks.items()}
    except TypeError as exc:
        raise UserError(f"pooler '{pooling}' or head '{head}' does not accept these options: {exc}") from None
    model = MultiTaskModel(backbone, pooler, task_heads, bool(settings.normalize))
    combiner = loss_combiners.get(settings.loss_combiner)(list(tasks), settings.task_weights)
    return model, combiner


def from_checkpoint(ckpt: Checkpoint, saved: SavedRun, backbone: nn.Module,
                    path: Path) -> tuple[MultiTaskModel, nn.Module]:
    """The model and combiner of a checkpoint (``saved``: its ``saved_run()``), with its trained
    weights; ``backbone`` may be untrained."""
    check_installed(saved.components, path)
    try:
        model, combiner = build(backbone, saved.tasks, saved.settings)
        model.load_state_dict(ckpt.model)
        if ckpt.combiner:
            combiner.load_state_dict(ckpt.combiner)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: the checkpoint does not match its run's model ({first_line(exc, 200)})") from None
    return model, combiner
