"""The task type contract: everything that differs between a class column, a tag column and a number.

A ``TaskType`` is stateless; what one task learned from its training rows (its labels, a
regression's mean and spread, a multi-label task's thresholds) is that task's ``Task``: plain data,
kept in every checkpoint and export, so a run is read back without the training data.

The flow, for every type alike:

    cells of the training rows --fit--> Task --targets--> array per row (unlabelled: ``unlabelled``)
    logits --loss--> a number to minimise;  logits --outputs--> what a person reads (probabilities, values)
    outputs + targets --score--> the type's metrics;  outputs --decide--> a prediction per row
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from mtlcli import vocabulary as vocab
from mtlcli.data.tables import Labels
from mtlcli.errors import UserError, shown

if TYPE_CHECKING:  # torch is imported where a model runs: reading a run's tasks (an ONNX export's) needs none
    import torch

Where = Callable[[int], str]  # row index -> "data.csv:7", for messages


@dataclass
class Task:
    """One task column as a run trained it."""

    name: str
    type: str  # the task type's registered name
    labels: list[str]  # output names, in the order of the head's outputs; [] for a single value
    params: dict[str, Any] = field(default_factory=dict)  # what the type learned: plain data

    def to_dict(self) -> dict[str, Any]:
        """As checkpoints and exports keep it (the labels are kept beside it, in labels.json)."""
        return {"type": self.type, **({"params": copy.deepcopy(self.params)} if self.params else {})}

    @classmethod
    def from_saved(cls, name: str, labels: list[str], saved: dict[str, Any] | None) -> "Task":
        """A task read back; runs saved before task types were classification tasks."""
        saved = saved or {}
        return cls(name, str(saved.get("type", "classification")), list(labels), dict(saved.get("params") or {}))


class TaskType:
    """What a kind of task column means. Subclass it, set ``name`` and ``metrics``, implement the methods.

    ``metrics`` are what validation logs for a task of this type, loss first; ``headline`` is the one
    metric that says whether the task learned (the quality check and short views use it).
    """

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[vocab.Metric, ...]] = (vocab.LOSS,)
    headline: ClassVar[vocab.Metric] = vocab.LOSS
    train_metric: ClassVar[vocab.Metric | None] = None  # a metric counted on training batches (``train_hits``)
    min_labels: ClassVar[int] = 0  # labels the training rows must hold for a task of this type
    describe: ClassVar[str] = ""  # one line on the type for an export's model card
    default_class_weight: ClassVar[str] = "none"  # what --class-weight auto (the default) means for this type

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        vocab.add_metrics(cls.metrics)

    # ---- cells -> targets ----------------------------------------------------------------------
    def fit(self, name: str, cells: Labels, where: Where, settings: dict[str, Any]) -> Task:
        """The task as its training rows define it; a cell the type cannot read is a UserError
        naming its file and line. ``settings``: the run's config as a dict (separator, loss, ...)."""
        raise NotImplementedError

    def targets(self, task: Task, cells: Labels, where: Where, ignore_unknown: bool = False,
                hint: str = "") -> np.ndarray:
        """One target per row (an empty cell: unlabelled). A label the task does not know is an error
        ending with ``hint``, or, with ``ignore_unknown``, an unlabelled row."""
        raise NotImplementedError

    def unknown(self, task: Task, cells: Labels) -> dict[str, int]:
        """Cells the task cannot score (labels it never saw) and how many rows hold each."""
        return {}

    def labelled(self, targets: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Which rows have a target (a bool per row); float targets mark the others with NaN."""
        first = targets if targets.ndim == 1 else targets[:, 0]
        return first == first  # NaN is the one value not equal to itself; works on numpy and torch

    # ---- the model's side ----------------------------------------------------------------------
    def size(self, task: Task) -> int:
        """Outputs of the task's head."""
        return len(task.labels)

    def loss(self, task: Task, logits: torch.Tensor, targets: torch.Tensor, objective: Any,
             reduction: str = "sum") -> torch.Tensor:
        """``sum``: the loss summed over the labelled rows; ``none``: each row's (0 where unlabelled).
        Shapes never depend on the data (no boolean indexing), so a CUDA graph can record it."""
        raise NotImplementedError

    def train_hits(self, task: Task, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Labelled training rows scored right, for ``train_metric`` (a tensor: no host sync)."""
        raise NotImplementedError

    def outputs(self, task: Task, logits: torch.Tensor) -> torch.Tensor:
        """What the logits mean to a person, as float32: probabilities, or values in the column's units."""
        raise NotImplementedError

    # ---- outputs -> scores and predictions -------------------------------------------------------
    def tune(self, task: Task, targets: np.ndarray, outputs: np.ndarray) -> None:
        """Decisions set on the validation rows (a multi-label task's thresholds), into ``task.params``."""

    def score(self, task: Task, targets: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
        """The type's metrics by name on the labelled rows given (plus details such as a confusion
        matrix, which are not logged per epoch). ``targets`` as ``targets`` made them."""
        raise NotImplementedError

    def baseline(self, task: Task, val: np.ndarray) -> dict[str, Any]:
        """A constant answer's scores on ``val`` (targets of labelled rows): ``headline`` must beat
        it clearly for the task to count as learned. Keys: ``answer`` (what it says, in words) and
        metric names."""
        raise NotImplementedError

    def learned(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> bool:
        """Does ``scores`` clearly beat the constant answer ``base``?"""
        raise NotImplementedError

    def advice(self, task: Task) -> str:
        """What to try when a task of this type has not learned."""
        return "try more --epochs, or a higher --lr-backbone or --lr-heads"

    def check_entries(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        """What summary.json's task check says: the scores, and the constant answer's."""
        names = [m.name for m in self.metrics if m != vocab.LOSS]
        return {**{n: scores[n] for n in names}, "baseline": base["answer"],
                **{f"baseline_{n}": base[n] for n in names if n in base}}

    def warning(self, task: Task, scores: dict[str, Any], base: dict[str, Any]) -> str:
        m = self.headline
        return (f"task '{task.name}' has not clearly learned: {m.label} {scores[m.name]:.3f}, where "
                f"{base['answer']} gives {base[m.name]:.3f}; {self.advice(task)}")

    def decide(self, task: Task, outputs: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        """A prediction per row, as `mtl predict --format jsonl` writes it under the task's name
        (its numbers unrounded: files round them)."""
        raise NotImplementedError

    def class_weights(self, task: Task, targets: np.ndarray) -> list[float]:
        """``--class-weight balanced``: a weight per output from the training targets."""
        raise UserError(f"--class-weight {shown(task.name)}=balanced: the {self.name} task "
                        f"'{shown(task.name)}' has no classes to weigh")


def first_row(cells: Labels, code: int) -> int | None:
    """The first row holding the distinct cell ``code``, for a message; None when no row of these
    holds it (the cells of a split share one list of distinct cells with the other split)."""
    rows = np.flatnonzero(cells.codes == code)
    return int(rows[0]) if len(rows) else None
