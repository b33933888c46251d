"""Optimizer steps as the unit of training: gradient accumulation, a step budget, validation every
N steps (and resuming from one mid-epoch), per-step losses in the trackers, gradient checkpointing.

Each option goes through `mtl train` (a flag or a config key); the comparisons are between real
runs of the tiny model, never against numbers written down here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from conftest import SignalAt, sample_rows, write_csv
from mtlcli import config as config_mod
from mtlcli.training.interrupt import TrainingInterrupted
from mtlcli.training.run import train

TIMING = ("seconds", "train_seconds", "train_sentences_per_s")


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def assert_close_rows(got: list[dict], want: list[dict], rel: float) -> None:
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for a, b in zip(got, want):
        for key in b:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-6), (a["epoch"], key)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def no_dropout_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model without dropout: batches of different sizes then compute the same function,
    so one batch and its parts can be compared."""
    import shutil

    folder = tmp_path_factory.mktemp("tiny-no-dropout") / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture
def partial_csv(tmp_path) -> Path:
    """120 sample rows, every third without a sentiment label: a task's labelled rows differ per batch."""
    rows = [[s, c, "" if i % 3 == 0 else m] for i, (s, c, m) in enumerate(sample_rows(120))]
    return write_csv(tmp_path / "partial.csv", rows)


# ---- gradient accumulation ----------------------------------------------------------------------


@pytest.mark.parametrize("combiner", ["weighted", "uncertainty"])
def test_accumulating_two_batches_of_8_trains_as_one_batch_of_16(cli, partial_csv, no_dropout_model, combiner):
    common = ["--model", no_dropout_model, "--lr-backbone", "1e-3", "--lr-heads", "3e-3", "--precision", "fp32",
              "--quiet", "--loss-combiner", combiner, "--patience", "5"]
    for budget, name in ((["--max-steps", "1"], "short"), (["--epochs", "2"], "")):
        assert cli("train", partial_csv, *common, *budget, "--batch-size", "16", "--name", f"whole{name}").exit_code == 0
        result = cli("train", partial_csv, *common, *budget, "--batch-size", "8", "--grad-accum", "2",
                     "--name", f"parts{name}")
        assert result.exit_code == 0, result.output
    # one step: the same numbers up to float rounding; over two epochs AdamW, which divides each
    # gradient by its own running size, lets the rounding grow a little
    assert_close_rows(metrics(Path("runs/partsshort")), metrics(Path("runs/wholeshort")), rel=1e-5)
    whole, parts = Path("runs/whole"), Path("runs/parts")
    assert_close_rows(metrics(parts), metrics(whole), rel=1e-3)
    # the schedule counts optimizer steps (the rows above hold the learning rates): as many in both
    assert summary(parts)["steps_run"] == summary(whole)["steps_run"]


def test_accumulation_is_not_a_bigger_batch_in_one_pass(cli, partial_csv, no_dropout_model):
    """The same run without accumulation (batches of 8, twice the steps) learns something else:
    the comparison above can fail."""
    common = ["--model", no_dropout_model, "--epochs", "1", "--precision", "fp32", "--quiet", "--lr-heads", "3e-3"]
    assert cli("train", partial_csv, *common, "--batch-size", "8", "--grad-accum", "2", "--name", "a").exit_code == 0
    assert cli("train", partial_csv, *common, "--batch-size", "8", "--name", "b").exit_code == 0
    a, b = metrics(Path("runs/a"))[0], metrics(Path("runs/b"))[0]
    assert a["val_loss"] != pytest.approx(b["val_loss"], rel=2e-3)
    assert summary(Path("runs/b"))["steps_run"] in (2 * summary(Path("runs/a"))["steps_run"] - 1,
                                                     2 * summary(Path("runs/a"))["steps_run"])


# ---- max-steps, eval-steps, resume --------------------------------------------------------------


def test_eval_steps_validates_within_epochs_and_max_steps_ends_the_run(cli, small_csv, train_args):
    result = cli("train", small_csv, *train_args, "--epochs", "9", "--max-steps", "13", "--eval-steps", "4",
                 "--patience", "9", "--name", "s")
    assert result.exit_code == 0, result.output
    run = Path("runs/s")
    # 7 steps an epoch: steps 4, 8 and 12 mid-epoch, 7 at the epoch's end, 13 where the budget is spent
    assert [r["epoch"] for r in metrics(run)] == [0.5714, 1, 1.1429, 1.7143, 1.8571]
    done = summary(run)
    assert done["steps_run"] == 13 and done["epochs_run"] == 1 and done["stopped_early"] is False
    # a run that spent its --max-steps keeps last.pt without --keep-optimizer: a budget is raised later
    assert done["optimizer_state"] == "kept" and done["last_checkpoint"] == "checkpoints/last.pt"
    assert done["best_step"] == round(done["best_epoch"] * 7)
    best = done["best_epoch"]
    assert done["best_checkpoint"] == f"checkpoints/best_epoch_{best}.pt" and (run / done["best_checkpoint"]).is_file()
    (said,) = [line for line in result.output.splitlines() if line.startswith("Best ")]
    assert said.startswith(f"Best epoch {best} of 1" if isinstance(best, int) else  # never "epoch 1.5 of 1"
                           f"Best validation at epoch {best} (step {done['best_step']} of 13)")
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["resume"]
    assert (state["epoch"], state["step"]) == (2, 6) and state["schedule"]["total_steps"] == 13
    assert metrics(run)[-1]["lr_heads"] == pytest.approx(0.0, abs=1e-12)  # the schedule spans the 13 steps
    again = cli("train", "--resume", run)
    assert again.exit_code == 2 and "the run has finished (step 13 of 13)" in again.output
    assert "raise --max-steps with --resume" in again.output


def test_early_stopping_counts_validations(cli, small_csv, train_args):
    # with --min-delta 1.0 only the first validation is an improvement: patience 2 ends the run at
    # the third validation, after step 8 (the first of epoch 2)
    result = cli("train", small_csv, *train_args, "--epochs", "4", "--eval-steps", "4", "--patience", "2",
                 "--min-delta", "1.0", "--keep-optimizer", "--name", "p")
    assert result.exit_code == 0, result.output
    run = Path("runs/p")
    assert [r["epoch"] for r in metrics(run)] == [0.5714, 1, 1.1429]
    done = summary(run)
    assert done["stopped_early"] is True and done["best_epoch"] == 0.5714 and done["steps_run"] == 8
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best_epoch_0.5714.pt", "last.pt"]
    again = cli("train", "--resume", run, "--epochs", "5")
    assert again.exit_code == 2 and "stopped early after epoch 1.1429 (no improvement for 2 validations)" in again.output


@pytest.mark.parametrize("signal_at, expect", [
    ((2, 3), (2, 4)),  # between validations: last.pt holds the epoch's running sums
    ((2, 4), (2, 5)),  # the stop lands on step 12, a validation: it validates, then stops
])
def test_a_run_stopped_between_step_validations_resumes_exactly(cli, small_csv, train_args, tmp_path, signal_at,
                                                                  expect):
    flags = ["--epochs", "3", "--eval-steps", "4", "--patience", "9", "--grad-accum", "2", "--batch-size", "8"]
    assert cli("train", small_csv, *train_args, *flags, "--name", "whole").exit_code == 0
    values = dict(zip(train_args[::2], train_args[1::2]))
    cfg = config_mod.resolve(None, {"data": str(small_csv), "model": values["--model"], "epochs": 3, "eval_steps": 4,
                                    "patience": 9, "grad_accum": 2, "batch_size": 8, "lr_backbone": 1e-3,
                                    "lr_heads": 3e-3, "precision": "fp32", "out": str(tmp_path / "runs"),
                                    "name": "stopped"})
    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg, SignalAt(*signal_at))
    assert (stopped.value.epoch, stopped.value.step) == expect
    run = tmp_path / "runs" / "stopped"
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["resume"]
    assert (state["epoch"], state["step"]) == expect and state["tally"] is not None
    result = cli("train", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    whole = tmp_path / "runs" / "whole"
    assert metrics(run) == metrics(whole)  # bit for bit: same batches, same order, same sums
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (whole / "checkpoints").iterdir())
    assert summary(run)["steps_run"] == summary(whole)["steps_run"] == 21


def test_a_run_ended_by_max_steps_goes_on_with_a_larger_budget(cli, small_csv, train_args):
    # a constant schedule: the budget is the only thing the two runs differ in
    flags = ["--epochs", "1", "--scheduler", "constant", "--warmup-ratio", "0", "--eval-steps", "5", "--patience", "9"]
    assert cli("train", small_csv, *train_args, *flags, "--max-steps", "15", "--name", "whole").exit_code == 0
    assert cli("train", small_csv, *train_args, *flags, "--max-steps", "8", "--name", "part").exit_code == 0
    assert [r["epoch"] for r in metrics(Path("runs/part"))] == [0.7143, 1, 1.1429]
    result = cli("train", "--resume", "runs/part", "--max-steps", "15", "--quiet")
    assert result.exit_code == 0, result.output
    # the row at step 8 (where the budget was first spent) is one the whole run does not log
    resumed = [r for r in metrics(Path("runs/part")) if r["epoch"] != 1.1429]
    assert resumed == metrics(Path("runs/whole"))
    assert summary(Path("runs/part"))["steps_run"] == 15


def test_eval_steps_without_validation_is_refused_and_max_steps_keeps_where_it_ended(cli, small_csv, train_args):
    refused = cli("train", small_csv, *train_args, "--val-split", "0", "--eval-steps", "4")
    assert refused.exit_code == 2
    assert refused.output.strip() == ("error: --eval-steps 4: --val-split 0 leaves no validation rows to score "
                                      "every 4 steps; drop --eval-steps, or give --val FILE or a --val-split above 0")
    assert not Path("runs").exists() or not any(Path("runs").iterdir())
    # no validation: every epoch's end, and the step where the budget is spent, is the kept checkpoint
    result = cli("train", small_csv, *train_args, "--val-split", "0", "--epochs", "5", "--max-steps", "13",
                 "--name", "nv")
    assert result.exit_code == 0, result.output
    run = Path("runs/nv")
    done = summary(run)
    assert done["best_rule"].startswith("last epoch") and done["steps_run"] == 13
    assert done["best_checkpoint"] == f"checkpoints/best_epoch_{done['best_epoch']}.pt"
    assert done["best_step"] == 13 and done["optimizer_state"] == "kept"
    assert f"Kept where --max-steps ended, epoch {done['best_epoch']} (step 13)" in result.output
    assert all("val_loss" not in r for r in metrics(run))


def test_step_options_are_config_keys_and_refuse_bad_values_in_one_line(cli, small_csv, train_args, tmp_path):
    config = tmp_path / "steps.yaml"
    config.write_text("grad_accum: 2\nmax_steps: 3\neval_steps: 2\nlog_steps: 1\ngradient_checkpointing: true\n")
    result = cli("train", small_csv, *train_args, "--config", config, "--name", "c")
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in metrics(Path("runs/c"))] == [0.5, 0.75]  # 4 steps of 32 rows an epoch
    for flag, value in (("--grad-accum", "0"), ("--max-steps", "-1"), ("--eval-steps", "x"), ("--log-steps", "0")):
        bad = cli("train", small_csv, *train_args, flag, value)
        assert bad.exit_code == 2 and flag in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output


# ---- per-step losses in the trackers ------------------------------------------------------------


@pytest.mark.slow  # TensorBoard and MLflow imports
def test_trackers_get_the_training_loss_per_step(cli, small_csv, train_args, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    # a read-out every 7 steps: one per epoch, at its end, so it is the epoch's training loss
    result = cli("train", small_csv, *train_args, "--track", "tensorboard", "--track", "mlflow", "--log-steps", "7",
                 "--name", "t")
    assert result.exit_code == 0, result.output
    run, rows = Path("runs/t"), metrics(Path("runs/t"))

    steps = EventAccumulator(str(run / "tensorboard" / "steps"))
    steps.Reload()
    loss = steps.Scalars("train/loss")
    assert [e.step for e in loss] == [7, 14]
    assert [e.value for e in loss] == pytest.approx([r["train_loss"] for r in rows], rel=1e-5)
    assert [e.value for e in steps.Scalars("lr/heads")] == pytest.approx([r["lr_heads"] for r in rows], rel=1e-5)
    epochs = EventAccumulator(str(run / "tensorboard"))
    epochs.Reload()
    assert [e.step for e in epochs.Scalars("val/loss")] == [1, 2]  # validations stay by epoch

    client = MlflowClient(tracking_uri=store)
    run_id = json.loads((run / "mlflow.json").read_text())["run_id"]
    history = sorted(client.get_metric_history(run_id, "step/train_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [e.step for e in loss]
    assert [m.value for m in history] == pytest.approx([e.value for e in loss], rel=1e-6)
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2]


@pytest.mark.slow
def test_with_eval_steps_trackers_plot_validations_by_step(cli, small_csv, train_args, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = cli("train", small_csv, *train_args, "--track", "tensorboard", "--eval-steps", "4", "--patience", "9",
                 "--name", "e")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(Path("runs/e/tensorboard")))
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [4, 7, 8, 12, 14]
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx(
        [r["val_loss"] for r in metrics(Path("runs/e"))], rel=1e-6)



@pytest.mark.slow  # TensorBoard and MLflow imports
def test_with_eval_steps_the_test_scores_go_to_the_best_validations_step(cli, small_csv, train_args, tmp_path,
                                                                         monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    result = cli("train", small_csv, *train_args, "--track", "tensorboard", "--track", "mlflow", "--eval-steps", "4",
                 "--patience", "9", "--test", small_csv, "--name", "t")
    assert result.exit_code == 0, result.output
    run = Path("runs/t")
    done = summary(run)
    assert done["best_step"] == round(done["best_epoch"] * 7) and done["test"]["n"] > 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("test/loss")] == [done["best_step"]]
    assert events.Scalars("test/loss")[0].value == pytest.approx(done["test"]["loss"], rel=1e-6)
    client = MlflowClient(tracking_uri=store)
    run_id = json.loads((run / "mlflow.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "test_loss")] == [done["best_step"]]


# ---- gradient checkpointing ---------------------------------------------------------------------


def test_gradient_checkpointing_recomputes_each_layer_in_the_backward_pass(tiny_model):
    from mtlcli.model.network import enable_gradient_checkpointing, load_pretrained_backbone

    calls = []
    for on in (False, True):
        torch.manual_seed(0)
        backbone = load_pretrained_backbone(tiny_model, 0.0)
        if on:
            with warnings.catch_warnings():
                warnings.simplefilter("error", FutureWarning)  # transformers' deprecated name is not used
                enable_gradient_checkpointing(backbone)
        backbone.train()
        attention = backbone.encoder.layer[0].attention  # inside the checkpointed layer
        seen = []
        attention.register_forward_hook(lambda *_: seen.append(1))
        out = backbone(input_ids=torch.randint(5, 50, (2, 7))).last_hidden_state
        out.sum().backward()
        calls.append(len(seen))
    assert calls == [1, 2]  # with checkpointing the layer's insides run again for the backward pass


def test_gradient_checkpointing_trains_to_the_same_numbers(cli, small_csv, train_args):
    assert cli("train", small_csv, *train_args, "--name", "plain").exit_code == 0
    result = cli("train", small_csv, *train_args, "--gradient-checkpointing", "--name", "ckpt")
    assert result.exit_code == 0, result.output
    # dropout included: the recomputed layers replay the same random masks
    assert_close_rows(metrics(Path("runs/ckpt")), metrics(Path("runs/plain")), rel=1e-5)
