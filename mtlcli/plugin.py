"""The public interface for plugin authors: import from here, nothing else of mtlcli.

A plugin is a package that declares components in its ``pyproject.toml``, one entry-point group
per kind; the entry point's name is the name users pass to ``mtl train``::

    [project.entry-points."mtlcli.heads"]
    prototype = "mtl_plugin_example.heads:PrototypeHead"

The kinds and what mtlcli calls (``docs/components.md`` has the full contracts):

``mtlcli.poolers``
    ``Pooler(hidden_size, **pooler_options)``, an ``nn.Module``;
    ``forward(token_embeddings [B, T, H], attention_mask [B, T]) -> [B, output_size]``.
``mtlcli.heads``
    ``Head(in_features, num_labels, **head_options)``, an ``nn.Module``;
    ``forward(sentence_embedding [B, in_features]) -> logits [B, num_labels]``.
``mtlcli.loss_combiners``
    ``LossCombiner(tasks, weights)``, an ``nn.Module``; ``forward({task: scalar loss}) -> scalar``,
    and ``epoch_end({task: mean training loss})`` once per epoch.
``mtlcli.schedulers``
    ``factory(optimizer, num_training_steps, num_warmup_steps) -> LRScheduler``, stepped per batch.
``mtlcli.trackers``
    ``Tracker()``, built on the main process only; ``start(config, run_dir, resumed)``,
    ``log_metrics(row, epoch)`` after every epoch, ``finish(run_dir, summary)`` at the end.
``mtlcli.task_types``
    ``TaskType()``, a ``TaskType`` subclass: what a kind of task column means (``--task-type
    TASK=NAME``): ``fit`` a ``Task`` on the training cells, their ``targets``, the head's ``size``,
    the ``loss``, the ``outputs`` a person reads, ``score`` (its ``metrics``, each a ``Metric`` whose
    suffix holds no '_'), ``baseline``/``learned`` (did it learn?) and ``decide`` (a prediction per
    row). ``metrics`` has the built-in types' scoring functions, ``read_number`` reads a cell as a number.

Poolers, heads and combiners may also be factory functions that return a module. Subclassing the
base classes below is optional; ``check_component`` tells whether an object fits its kind, the same
check ``mtl plugins`` runs.
"""

from __future__ import annotations

from typing import Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from mtlcli import __version__
from mtlcli.vocabulary import ACCURACY, LOSS, MACRO_F1, MAE, Metric
from mtlcli.components.combiners import LossCombiner
from mtlcli.components.heads import Head
from mtlcli.components.poolers import Pooler
from mtlcli.components.trackers import Tracker
from mtlcli.errors import UserError, shown
from mtlcli.registry import CONTRACTS, KINDS, REGISTRIES, check_component
from mtlcli.data.tables import Labels
from mtlcli.tasks import metrics
from mtlcli.tasks.base import Task, TaskType, Where, first_row
from mtlcli.tasks.regression import read_number

ENTRY_POINT_GROUPS = {kind: registry.group for kind, registry in REGISTRIES.items()}
"""Kind -> the entry-point group a package declares its components in."""


class SchedulerFactory(Protocol):
    """What a scheduler entry point is: a callable returning a learning-rate scheduler."""

    def __call__(self, optimizer: Optimizer, num_training_steps: int, num_warmup_steps: int) -> LRScheduler: ...


__all__ = [
    "ACCURACY",
    "CONTRACTS",
    "ENTRY_POINT_GROUPS",
    "KINDS",
    "LOSS",
    "MACRO_F1",
    "MAE",
    "Head",
    "Labels",
    "LossCombiner",
    "Metric",
    "Pooler",
    "SchedulerFactory",
    "Task",
    "TaskType",
    "Tracker",
    "UserError",
    "Where",
    "__version__",
    "check_component",
    "first_row",
    "metrics",
    "read_number",
    "shown",
]
