"""fp16 loss scaling: the step with torch.amp.GradScaler, and its state in last.pt.

No CUDA here: the scaler runs on the CPU (torch supports that), which exercises the same calls.
"""

from __future__ import annotations

import pytest
import torch

from mtlcli.model.checkpoint import load_checkpoint, save_checkpoint
from mtlcli.training.grad_scaling import clip_and_step, grad_scaler


def parts(lr: float = 0.1):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)  # plain SGD: the update shows the gradient's size
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return model, optimizer, scheduler


def loss_of(model) -> torch.Tensor:
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return (model(x) ** 2).sum()


def one_step(scaler, max_grad_norm: float):
    model, optimizer, scheduler = parts()
    optimizer.zero_grad()
    scaler.scale(loss_of(model)).backward()
    stepped = clip_and_step(scaler, optimizer, scheduler, model.parameters(), max_grad_norm)
    return stepped, model, scheduler


@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])
def test_a_scaled_step_equals_the_unscaled_one_clipping_included(max_grad_norm):
    plain = one_step(grad_scaler(torch.device("cpu"), "fp32"), max_grad_norm)
    scaled = one_step(torch.amp.GradScaler("cpu", init_scale=2.0**12), max_grad_norm)
    assert plain[0] and scaled[0]
    for a, b in zip(plain[1].parameters(), scaled[1].parameters()):
        torch.testing.assert_close(a, b)  # clipped after unscaling: the same update
    assert plain[2].last_epoch == scaled[2].last_epoch == 1


def test_an_overflowing_step_is_skipped_and_the_scale_lowered():
    scaler = torch.amp.GradScaler("cpu", init_scale=1e38)  # the scaled loss overflows to inf
    model, optimizer, scheduler = parts()
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale(loss_of(model)).backward()
    assert not clip_and_step(scaler, optimizer, scheduler, model.parameters(), 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # weights untouched
    assert scheduler.last_epoch == 0 and not optimizer.state  # the schedule and the optimizer did not move
    assert scaler.get_scale() == pytest.approx(0.5e38)
    assert grad_scaler(torch.device("cpu"), "fp16").is_enabled() and not grad_scaler(torch.device("cpu"), "bf16").is_enabled()


def test_the_scaler_state_survives_a_checkpoint(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=1e38)
    model, optimizer, scheduler = parts()
    for _ in range(3):  # three overflows: the scale halves three times
        optimizer.zero_grad()
        scaler.scale(loss_of(model)).backward()
        clip_and_step(scaler, optimizer, scheduler, model.parameters(), 0.0)
    save_checkpoint(tmp_path / "last.pt", {"config": {}, "labels": {}, "model": {},
                                            "resume": {"grad_scaler": scaler.state_dict()}})
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(load_checkpoint(tmp_path / "last.pt")["resume"]["grad_scaler"])  # weights_only load
    assert restored.state_dict() == scaler.state_dict() and restored.get_scale() == pytest.approx(1e38 / 8)


def test_training_saves_the_scaler_state_and_resumes_with_it(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--epochs", "1", "--patience", "5", "--name", "s",
               "--keep-optimizer").exit_code == 0
    last = tmp_path / "runs" / "s" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["resume"]["grad_scaler"] == {}  # fp32: the scaler is off and has no state
    resumed = cli("train", "--resume", tmp_path / "runs" / "s", "--epochs", "2", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(last)["resume"]["epoch"] == 3


def adamw_step(max_grad_norm: float, folded: bool, extra: bool = False) -> list[torch.Tensor]:
    """The parameters after three fused AdamW steps: the loop's (clip_and_step), or clip_grad_norm_ then
    the step. ``extra``: one more parameter in the optimizer and not among those clipped (a combiner's).
    Each step's loss is larger than the one before: Adam's update depends on the clipping only
    through the ratios of the steps' gradients."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    params = list(model.parameters()) + ([torch.nn.Parameter(torch.zeros(3))] if extra else [])
    optimizer = torch.optim.AdamW(params, lr=0.1, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for k in range(1, 4):
        optimizer.zero_grad()
        (loss_of(model) * k**3 + (params[-1].sum() * 50 * k**3 if extra else 0)).backward()
        if folded:
            assert clip_and_step(grad_scaler(torch.device("cpu"), "bf16"), optimizer, scheduler, model.parameters(),
                                 max_grad_norm)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("max_grad_norm", [1.0, 1e9])
def test_a_fused_adamw_clips_inside_its_step_as_clip_grad_norm_does(max_grad_norm, monkeypatch):
    separate = adamw_step(max_grad_norm, folded=False)

    def no_pass_of_its_own(*args, **kwargs):
        raise AssertionError("clip_grad_norm_ called: the clipping was not left to the fused step")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", no_pass_of_its_own)
    for a, b in zip(adamw_step(max_grad_norm, folded=True), separate):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_parameter_stepped_but_not_clipped_keeps_its_whole_gradient():
    for a, b in zip(adamw_step(1.0, folded=True, extra=True), adamw_step(1.0, folded=False, extra=True)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
