"""The geometric-mean loss combiner and the inverse square-root schedule, on numbers."""

import math

import pytest
import torch

from mtl_plugin_example.combiners import GeometricMean
from mtl_plugin_example.schedulers import inverse_sqrt


def test_geometric_mean_of_task_losses():
    comb = GeometricMean(["a", "b"])
    assert comb({"a": torch.tensor(4.0), "b": torch.tensor(1.0)}).item() == pytest.approx(2.0)
    weighted = GeometricMean(["a", "b"], {"a": 2.0})
    assert weighted({"a": torch.tensor(4.0), "b": torch.tensor(1.0)}).item() == pytest.approx(4 ** (2 / 3))
    assert comb({"b": torch.tensor(0.3)}).item() == pytest.approx(0.3)  # a task absent from the batch


def test_each_tasks_gradient_is_scaled_by_its_own_loss():
    a, b = torch.tensor(4.0, requires_grad=True), torch.tensor(1.0, requires_grad=True)
    GeometricMean(["a", "b"])({"a": a, "b": b}).backward()
    # d/dL_t sqrt(L_a L_b) = G / (2 L_t), G = 2
    assert (a.grad.item(), b.grad.item()) == pytest.approx((0.25, 1.0))


def test_zero_weights_give_a_zero_loss():
    comb = GeometricMean(["a"], {"a": 0.0})
    assert comb({"a": torch.tensor(3.0)}).item() == 0.0


def test_inverse_sqrt_warms_up_then_decays():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = inverse_sqrt(opt, 1000, 9)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[8] == pytest.approx(0.9)
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[39] == pytest.approx(0.5)  # sqrt(10 / 40)
    assert lrs[99] == pytest.approx(math.sqrt(10 / 100))
