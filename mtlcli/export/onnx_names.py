"""The names an ONNX export shares between its writer (onnx_graph.py, which needs torch) and its
reader (onnx_predictor.py, which runs without torch): the graph's file, inputs and outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtlcli.tasks.base import Task

MODEL = "model.onnx"
INPUTS = ["input_ids", "attention_mask"]  # what the saved tokenizer returns (its model_input_names)


def output_name(task: Task) -> str:
    """``probs_<task>`` for the probabilities of a task with labels, ``value_<task>`` for one value per row."""
    return f"{'probs' if task.labels else 'value'}_{task.name}"


def output_names(tasks: dict[str, Task]) -> list[str]:
    return ["embedding"] + [output_name(task) for task in tasks.values()]
