"""The ordinal task type: levels in numeric order, cumulative targets, the loss, outputs and decisions."""

import numpy as np
import pytest
import torch

from mtl_plugin_example.ordinal import WITHIN_ONE, Ordinal
from mtlcli.plugin import Labels, Task, UserError, check_component

ORDINAL = Ordinal()


class Plain:
    """No class weights (what mtlcli passes when --class-weight is not set)."""

    def weight(self, task, device):
        return None


def cells(*values):
    names = list(dict.fromkeys(values))
    return Labels(names, np.array([names.index(v) for v in values], dtype=np.int32))


def where(i):
    return f"data.csv:{i + 2}"


def fitted(*values):
    return ORDINAL.fit("rating", cells(*values), where, {})


def test_fits_the_contract_and_declares_its_metric():
    assert check_component("task_types", Ordinal) is None
    assert WITHIN_ONE in Ordinal.metrics and "_" not in WITHIN_ONE.suffix


def test_levels_sort_as_numbers_and_empty_cells_have_no_target():
    task = fitted("10", "2", "", "1", "2", "10")
    assert task.labels == ["1", "2", "10"] and ORDINAL.size(task) == 2
    assert task.params == {"median": 1}  # the middle of 1, 2, 2, 10, 10
    y = ORDINAL.targets(task, cells("2", "", "10", "1"), where)
    assert y[[0, 2, 3]].tolist() == [1.0, 2.0, 0.0] and np.isnan(y[1])
    assert ORDINAL.labelled(y).tolist() == [True, False, True, True]


def test_a_word_or_an_unknown_level_names_its_line():
    with pytest.raises(UserError, match=r"data.csv:3: 'great' in ordinal column 'rating' is not a number"):
        fitted("1", "great", "2")
    task = fitted("1", "2", "3")
    with pytest.raises(UserError, match=r"data.csv:3: level '7' of task 'rating' is not one the model knows "
                                        r"\(known: 1, 2, 3\); a hint"):
        ORDINAL.targets(task, cells("1", "7"), where, hint="; a hint")
    assert np.isnan(ORDINAL.targets(task, cells("1", "7"), where, ignore_unknown=True)[1])
    assert ORDINAL.unknown(task, cells("1", "7", "7")) == {"7": 2}


def test_the_loss_is_binary_cross_entropy_on_each_cut():
    task = fitted("1", "2", "3")
    logits = torch.tensor([[3.0, -1.0], [0.5, 0.5], [9.0, 9.0]])
    y = torch.tensor([1.0, 2.0, float("nan")])  # levels 2 and 3, and a row with no label
    above = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # level 2 is above cut 0 only; level 3 above both
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits[:2], above, reduction="none").mean(-1)
    rows = ORDINAL.loss(task, logits, y, Plain(), "none")
    assert torch.allclose(rows[:2], want) and float(rows[2]) == 0.0
    assert torch.allclose(ORDINAL.loss(task, logits, y, Plain()), want.sum())


def test_outputs_are_a_distribution_over_levels_even_when_cuts_disagree():
    task = fitted("1", "2", "3", "4")
    logits = torch.tensor([[4.0, 0.0, -4.0], [-2.0, 2.0, 0.0]])  # the second row's cuts are out of order
    p = ORDINAL.outputs(task, logits).numpy()
    assert p.shape == (2, 4) and (p >= 0).all() and p.sum(1) == pytest.approx([1.0, 1.0])
    s = 1 / (1 + np.exp(-np.array([4.0, 0.0, -4.0])))
    assert p[0] == pytest.approx([1 - s[0], s[0] - s[1], s[1] - s[2], s[2]], abs=1e-6)


def test_decide_gives_the_median_level_its_probability_and_the_expected_value():
    task = fitted("1", "2", "3")
    outputs = np.array([[0.1, 0.3, 0.6], [0.45, 0.1, 0.45]], dtype=np.float32)
    first, second = ORDINAL.decide(task, outputs, top_k=2)
    assert first["label"] == "3" and first["score"] == pytest.approx(0.6)
    assert first["expected"] == pytest.approx(0.1 * 1 + 0.3 * 2 + 0.6 * 3)
    assert first["top"] == [["3", pytest.approx(0.6)], ["2", pytest.approx(0.3)]]
    assert second["label"] == "2"  # the median, where the mode would be a tie of the two ends


def test_scores_and_did_it_learn():
    task = fitted("1", "2", "3", "3", "5")
    truth = np.array([0, 1, 2, 3], dtype=np.float32)  # levels 1, 2, 3, 5
    perfect = np.eye(4, dtype=np.float32)
    scores = ORDINAL.score(task, truth, perfect)
    assert scores == {"mae": 0.0, "accuracy": 1.0, "macro_f1": 1.0, "within_one": 1.0}
    base = ORDINAL.baseline(task, truth)
    assert base["answer"] == "always answering '3'"
    assert base["mae"] == pytest.approx((2 + 1 + 0 + 2) / 4)  # in the column's units: 5 is two above 3
    assert base["within_one"] == pytest.approx(3 / 4)
    assert ORDINAL.learned(task, scores, base) and not ORDINAL.learned(task, base, base)


def test_balanced_weights_weigh_each_cut():
    task = fitted("1", "2", "3")
    y = np.array([0, 0, 0, 1, 2, np.nan], dtype=np.float32)
    assert ORDINAL.class_weights(task, y) == [pytest.approx(3 / 2), pytest.approx(4 / 1)]
