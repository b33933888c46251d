"""The built-in components and the policies, checked on numbers."""

from __future__ import annotations

import math

import pytest
import torch

import mtlcli.components  # noqa: F401
from mtlcli.data.tables import MISSING
from mtlcli.errors import UserError
from mtlcli.model.losses import task_losses
from mtlcli.registry import Registry, heads, loss_combiners, poolers, schedulers
from mtlcli.tasks.base import Task
from mtlcli.training.policies import EarlyStopping, stopping_epoch


def test_masked_mean_ignores_padding():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, 5.0], [-7.0, 7.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = poolers.get("mean")(2)(tokens, mask)
    assert torch.allclose(out, torch.tensor([[2.0, 3.0], [7 / 3, 7.0]]))


def test_max_ignores_padding_and_cls_takes_the_first_token():
    tokens = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(poolers.get("max")(2)(tokens, mask), torch.tensor([[3.0, -2.0]]))
    assert torch.equal(poolers.get("cls")(2)(tokens, mask), torch.tensor([[1.0, -2.0]]))


def test_heads_give_logits_per_label():
    x = torch.randn(4, 8)
    assert heads.get("linear")(8, 3)(x).shape == (4, 3)
    assert heads.get("mlp")(8, 5, hidden_size=16)(x).shape == (4, 5)


def test_partial_labels_are_left_out_of_a_tasks_loss():
    logits = {"a": torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])}
    labels = {"a": torch.tensor([0, 0, MISSING])}
    tasks = {"a": Task("a", "classification", ["x", "y"])}
    summed, count = task_losses(logits, labels, tasks)["a"]
    expected = torch.nn.functional.cross_entropy(logits["a"][:2], labels["a"][:2], reduction="sum")
    assert int(count) == 2
    assert torch.allclose(summed, expected)
    # a batch with no label for the task contributes exactly nothing
    empty, n = task_losses(logits, {"a": torch.full((3,), MISSING)}, tasks)["a"]
    assert float(empty) == 0.0 and int(n) == 0


def test_weighted_combiner_uses_task_weights():
    comb = loss_combiners.get("weighted")(["a", "b"], {"a": 2.0})
    assert float(comb({"a": torch.tensor(1.5), "b": torch.tensor(0.5)})) == pytest.approx(3.5)
    assert float(comb({"b": torch.tensor(0.5)})) == pytest.approx(0.5)  # a task absent from the batch


def test_uncertainty_combiner_formula_and_learning():
    comb = loss_combiners.get("uncertainty")(["a", "b"])
    with torch.no_grad():
        comb.log_vars.copy_(torch.tensor([0.5, -1.0]))
    la, lb = torch.tensor(2.0), torch.tensor(0.3)
    expected = math.exp(-0.5) * 2.0 + 0.5 + math.exp(1.0) * 0.3 - 1.0
    assert comb({"a": la, "b": lb}).item() == pytest.approx(expected, rel=1e-6)
    comb({"a": la, "b": lb}).backward()
    # d/ds (e^-s L + s) = 1 - e^-s L
    assert comb.log_vars.grad.tolist() == pytest.approx([1 - math.exp(-0.5) * 2.0, 1 - math.exp(1.0) * 0.3], rel=1e-5)


def test_dwa_weights_follow_the_loss_ratio():
    comb = loss_combiners.get("dwa")(["a", "b"])
    comb.epoch_end({"a": 1.0, "b": 1.0})
    assert comb.dwa_weights.tolist() == [1.0, 1.0]  # needs two epochs of history
    comb.epoch_end({"a": 0.5, "b": 0.9})  # a fell fast, b slowly: b gets more weight
    r = torch.tensor([0.5, 0.9]) / 2.0
    assert torch.allclose(comb.dwa_weights, 2 * torch.softmax(r, 0))
    assert comb.dwa_weights[1] > comb.dwa_weights[0]
    state = comb.state_dict()
    again = loss_combiners.get("dwa")(["a", "b"])
    again.load_state_dict(state)
    assert torch.equal(again.dwa_weights, comb.dwa_weights)


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_schedulers_warm_up_then_follow_their_shape(name):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = schedulers.get(name)(opt, 100, 10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0  # warmup rises
    assert lrs[10] == pytest.approx(1.0)
    if name == "constant":
        assert lrs[-1] == pytest.approx(1.0)
    else:
        assert lrs[-1] < 0.05 and lrs[50] < lrs[20]


def test_early_stopping_on_a_scripted_loss_sequence():
    assert stopping_epoch([1.0, 0.9, 0.95, 0.97, 0.5], patience=2) == 4
    assert stopping_epoch([1.0, 0.9, 0.95, 0.8, 0.85, 0.86], patience=2) == 6
    assert stopping_epoch([1.0, 0.9, 0.8], patience=1) == 3  # never stops early: runs out of epochs
    assert stopping_epoch([1.0, 0.99, 0.98, 0.97], patience=2, min_delta=0.05) == 3
    policy = EarlyStopping(patience=3)
    for epoch, loss in enumerate([1.0, 0.7, 0.8], 1):
        policy.update(epoch, loss)
    assert (policy.best, policy.best_epoch, policy.bad_epochs) == (0.7, 2, 1)


def test_registry_lists_names_on_an_unknown_one():
    reg = Registry("widgets")
    reg.register("a", object)
    reg.register("b")(object)
    assert "a" in reg and reg.names() == ["a", "b"]
    with pytest.raises(UserError, match=r"unknown widget 'c' \(available: a, b\)"):
        reg.get("c")


def test_freeze_options(tiny_model):
    from mtlcli.config import TrainConfig
    from mtlcli.model.builder import build
    from mtlcli.model.network import apply_freeze, load_pretrained_backbone

    tasks = {"a": Task("a", "classification", ["x", "y"]), "b": Task("b", "classification", ["p", "q"])}

    def fresh():
        return build(load_pretrained_backbone(tiny_model), tasks, TrainConfig())[0]

    m = fresh()
    apply_freeze(m, ["bottom:1"])
    layers = m.backbone.encoder.layer
    assert not any(p.requires_grad for p in m.backbone.embeddings.parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    m = fresh()
    apply_freeze(m, ["backbone", "a"])
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert not any(p.requires_grad for p in m.heads["a"].parameters())
    assert all(p.requires_grad for p in m.heads["b"].parameters())
    with pytest.raises(UserError, match="bottom:9: N must be a whole number from 0 to 2"):
        apply_freeze(fresh(), ["bottom:9"])
