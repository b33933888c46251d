"""Resume: a run stopped at any batch and continued gives the metrics of a run that never stopped.

The stop is a real SIGINT, sent by the process to itself from the loop's reporter callback at an
exact batch, and handled by the real signal handler; the rest goes through `mtl train --resume`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SignalAt
from mtlcli import config as config_mod
from mtlcli.inference.loaded_run import load_run
from mtlcli.training.interrupt import TrainingInterrupted
from mtlcli.training.run import train

TIMING = ("seconds", "train_seconds", "train_sentences_per_s")


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def settings(small_csv, train_args, tmp_path, name: str, **extra):
    flags = dict(zip(train_args[::2], train_args[1::2]))  # the fast flags of the tiny model, as config keys
    values = {"data": str(small_csv), "model": flags["--model"], "epochs": 3, "batch_size": 16, "lr_backbone": 1e-3,
              "lr_heads": 3e-3, "precision": "fp32", "out": str(tmp_path / "runs"), "name": name, "patience": 5}
    return config_mod.resolve(None, {**values, **extra})


@pytest.fixture(autouse=True)
def one_thread():
    # Bit-for-bit comparisons need no particular thread count, but one thread keeps these runs quick
    # on a busy machine (no spinning worker threads competing for cores).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def uninterrupted(cli, small_csv, train_args, tmp_path):
    result = cli("train", small_csv, *train_args, "--epochs", "3", "--patience", "5", "--name", "whole")
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "whole"


@pytest.mark.parametrize("epoch, batch, expect", [
    (2, 3, (2, 4)),  # mid-epoch: the signal lands in batch 3, batch 4 finishes, then it stops
    (1, 0, (2, 0)),  # during validation: epoch 1 completes, then it stops
])
def test_a_run_stopped_and_resumed_logs_what_an_unstopped_run_logs(cli, small_csv, train_args, tmp_path,
                                                                   uninterrupted, epoch, batch, expect):
    with pytest.raises(TrainingInterrupted) as stopped:
        train(settings(small_csv, train_args, tmp_path, "stopped"), SignalAt(epoch, batch))
    run = tmp_path / "runs" / "stopped"
    assert stopped.value.exit_code == 130 and (stopped.value.epoch, stopped.value.step) == expect
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["position"] == list(expect)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["resume"]
    assert (state["epoch"], state["step"]) == expect
    assert (state["tally"] is not None) == (expect[1] > 0)  # mid-epoch: the epoch's running sums travel too
    assert len(metrics(run)) == expect[0] - 1

    result = cli("train", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert metrics(run) == metrics(uninterrupted)
    done = json.loads((run / "summary.json").read_text())
    assert done["interrupted"] is False and done["epochs_run"] == 3
    assert done["best_epoch"] == json.loads((uninterrupted / "summary.json").read_text())["best_epoch"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (uninterrupted / "checkpoints").iterdir())


def test_resume_refuses_other_settings_naming_them(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--epochs", "1", "--name", "r", "--keep-optimizer").exit_code == 0
    run = tmp_path / "runs" / "r"
    result = cli("train", "--resume", run, "--lr-heads", "0.1", "--pooling", "cls", "--task", "class_label")
    assert result.exit_code == 2
    assert "drop --lr-heads, --pooling, --task" in result.output and "only --epochs, --max-steps and --patience" in result.output
    result = cli("train", small_csv, "--resume", run)
    assert result.exit_code == 2 and "drop DATA" in result.output
    result = cli("train", "--resume", run, "--config", run / "config.yaml")
    assert result.exit_code == 2 and "drop --config" in result.output
    result = cli("train", "--resume", run, "--patience", "1")
    assert result.exit_code == 2 and "--patience 1: lower than the run's 2" in result.output
    result = cli("train", "--resume", run)
    assert result.exit_code == 2 and "the run has finished (epoch 1 of 1)" in result.output
    assert "raise --epochs with --resume" in result.output
    result = cli("train", "--resume", tmp_path / "runs" / "nope")
    assert result.exit_code == 2 and "no such run folder" in result.output


def test_raising_epochs_stretches_the_schedule_from_where_it_stopped(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--name", "short", "--patience", "9",
               "--keep-optimizer").exit_code == 0  # 2 epochs
    run = tmp_path / "runs" / "short"
    before = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["resume"]
    result = cli("train", "--resume", run, "--epochs", "4", "--quiet")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["resume"]
    steps = before["schedule"]["total_steps"] // 2
    assert after["schedule"] == {"total_steps": 4 * steps, "warmup_steps": before["schedule"]["warmup_steps"]}
    # the 2-epoch schedule had decayed to zero; stretched to 4 epochs, the linear decay goes on from
    # step 2*steps: halfway down after epoch 3, zero at the end
    warmup = before["schedule"]["warmup_steps"]
    assert rows[1]["lr_heads"] == pytest.approx(0.0, abs=1e-12)
    assert rows[2]["lr_heads"] == pytest.approx(3e-3 * (4 * steps - 3 * steps) / (4 * steps - warmup))
    assert rows[3]["lr_heads"] == pytest.approx(0.0, abs=1e-12)
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 4


def test_a_run_killed_before_its_first_checkpoint_starts_over_in_place(cli, small_csv, train_args, tmp_path,
                                                                       uninterrupted):
    assert cli("train", small_csv, *train_args, "--epochs", "3", "--patience", "5", "--name", "early").exit_code == 0
    run = tmp_path / "runs" / "early"
    for p in (run / "checkpoints").iterdir():  # what a kill -9 in the first epoch leaves: no checkpoint yet
        p.unlink()
    (run / "summary.json").unlink()
    (run / "checkpoints" / ".best_epoch_1.pt.tmp-99999").write_bytes(b"PK\x03\x04 half a file")
    result = cli("train", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert metrics(run) == metrics(uninterrupted)
    assert not list((run / "checkpoints").glob(".*"))  # the dead process's temporary file is gone


def test_resume_refuses_changed_data(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--epochs", "1", "--name", "d", "--keep-optimizer").exit_code == 0
    small_csv.write_text(small_csv.read_text().replace("The", "A", 1))
    result = cli("train", "--resume", tmp_path / "runs" / "d", "--epochs", "2")
    assert result.exit_code == 2 and "the file changed since the run started" in result.output


def test_last_checkpoint_is_plain_data_and_serves_eval(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--name", "p", "--keep-optimizer").exit_code == 0
    run = tmp_path / "runs" / "p"
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # no code, only tensors and plain data
    state = last["resume"]
    assert {"model", "combiner", "config", "labels", "components"} <= set(last)
    assert {"epoch", "step", "optimizer", "scheduler", "schedule", "early_stopping", "best_checkpoint", "rng",
            "metrics_rows", "data_sha256"} <= set(state)
    assert set(state["rng"]) >= {"python", "numpy", "torch"} and len(state["metrics_rows"]) == 2
    assert state["best_checkpoint"]["name"] == json.loads((run / "summary.json").read_text())["best_checkpoint"].split("/")[-1]
    loaded = load_run(run, device="cpu", precision="fp32", checkpoint=run / "checkpoints" / "last.pt")
    assert loaded.saved.epoch == 2



def test_a_run_from_before_attention_dropout_was_a_setting_resumes_with_the_models_own(cli, small_csv, train_args,
                                                                                       tmp_path):
    # such a run trained with the backbone's own attention dropout (0.1 in the tiny BERT's config) and
    # its config.yaml has no attention_dropout key; resumed, it goes on with 0.1 as if it never stopped
    whole = cli("train", small_csv, *train_args, "--epochs", "3", "--patience", "5", "--attention-dropout", "0.1",
                "--name", "whole")
    assert whole.exit_code == 0, whole.output
    with pytest.raises(TrainingInterrupted):
        train(settings(small_csv, train_args, tmp_path, "old", attention_dropout=0.1), SignalAt(2, 3))
    run = tmp_path / "runs" / "old"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved.pop("attention_dropout") == 0.1
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))

    result = cli("train", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert metrics(run) == metrics(tmp_path / "runs" / "whole")
    assert yaml.safe_load((run / "config.yaml").read_text())["attention_dropout"] == "model"  # the model's own
    again = cli("train", "--resume", run)
    assert again.exit_code == 2 and "the run ended after epoch 3" in again.output
