"""What a run keeps on disk when it ends: the optimizer state (checkpoints/last.pt) only when it can
still be needed (interrupted, or --keep-optimizer), and `mtl tidy` for older runs."""

from __future__ import annotations

import json
import os
import signal

import pytest

from mtlcli import config as config_mod
from mtlcli.training.interrupt import TrainingInterrupted
from mtlcli.training.reporter import Reporter
from mtlcli.training.run import train


def summary(run):
    return json.loads((run / "summary.json").read_text())


def one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


class StopInEpoch2(Reporter):
    def batch_end(self, epoch, step, steps, loss, sentences_per_s):
        if (epoch, step) == (2, 2):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_finished_run_drops_its_optimizer_state_and_says_so_on_resume(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--name", "done").exit_code == 0
    run = tmp_path / "runs" / "done"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best_epoch_2.pt"]
    ended = summary(run)
    assert ended["optimizer_state"] == "dropped" and ended["last_checkpoint"] is None
    line = one_error(cli("train", "--resume", run, "--epochs", "4"))
    assert "runs/done: the run ended after epoch 2 and its optimizer state (checkpoints/last.pt) was dropped" in line
    assert "start a new run (with --keep-optimizer" in line
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]  # untouched


def test_a_run_stopped_early_drops_it_too(cli, small_csv, train_args, tmp_path):
    # no fall in validation loss counts: epoch 1 is the best and the run stops after epoch 2
    result = cli("train", small_csv, *train_args, "--epochs", "5", "--patience", "1", "--min-delta", "1000",
                 "--name", "early")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "early"
    assert summary(run)["stopped_early"] is True and summary(run)["optimizer_state"] == "dropped"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best_epoch_1.pt"]


def test_keep_optimizer_keeps_it_and_the_run_trains_on(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--epochs", "1", "--keep-optimizer", "--name", "kept").exit_code == 0
    run = tmp_path / "runs" / "kept"
    assert summary(run)["optimizer_state"] == "kept" and summary(run)["last_checkpoint"] == "checkpoints/last.pt"
    result = cli("train", "--resume", run, "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert (run / "checkpoints" / "last.pt").is_file() and summary(run)["epochs_run"] == 2  # kept again


def test_an_interrupted_run_keeps_it_and_drops_it_once_resumed_to_the_end(cli, small_csv, train_args, tmp_path):
    flags = dict(zip(train_args[::2], train_args[1::2]))
    cfg = config_mod.resolve(None, {"data": str(small_csv), "model": flags["--model"], "epochs": 3, "batch_size": 16,
                                    "precision": "fp32", "out": str(tmp_path / "runs"), "name": "cut", "patience": 5})
    with pytest.raises(TrainingInterrupted):
        train(cfg, StopInEpoch2())
    run = tmp_path / "runs" / "cut"
    assert summary(run)["optimizer_state"] == "kept" and (run / "checkpoints" / "last.pt").is_file()
    tidied = cli("tidy", tmp_path / "runs")
    assert tidied.exit_code == 0 and "Nothing to tidy" in tidied.output  # it is still needed
    assert (run / "checkpoints" / "last.pt").is_file()
    result = cli("train", "--resume", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert summary(run)["optimizer_state"] == "dropped" and not (run / "checkpoints" / "last.pt").exists()


def test_tidy_lists_then_frees_the_optimizer_state_of_finished_runs(cli, small_csv, train_args, tmp_path):
    for name in ("one", "two"):
        assert cli("train", small_csv, *train_args, "--epochs", "1", "--keep-optimizer", "--name", name).exit_code == 0
    assert cli("train", small_csv, *train_args, "--epochs", "1", "--name", "three").exit_code == 0  # dropped already
    out = tmp_path / "runs"
    lasts = [out / name / "checkpoints" / "last.pt" for name in ("one", "two")]
    size = sum(p.stat().st_size for p in lasts)

    listed = cli("tidy", out, "--dry-run")
    assert listed.exit_code == 0, listed.output
    assert f"Would free {size / 1e6:.1f} MB: the optimizer state of 2 finished runs (of 3)" in listed.output
    assert all(str(p) in listed.output for p in lasts) and all(p.is_file() for p in lasts)

    freed = cli("tidy", out)
    assert freed.exit_code == 0, freed.output
    assert f"Freed {size / 1e6:.1f} MB: the optimizer state of 2 finished runs (of 3); a tidied run can no longer " \
           "train on with --resume" in freed.output
    assert not any(p.exists() for p in lasts)
    for name in ("one", "two"):
        assert summary(out / name)["optimizer_state"] == "dropped" and summary(out / name)["last_checkpoint"] is None
        assert (out / name / "checkpoints" / "best_epoch_1.pt").is_file()
    assert "ended after epoch 1" in one_error(cli("train", "--resume", out / "one", "--epochs", "2"))
    assert "Nothing to tidy" in cli("tidy", out / "one").output


def test_tidy_of_a_folder_that_is_not_there_is_one_line(cli, tmp_path):
    assert "nowhere: no such folder" in one_error(cli("tidy", tmp_path / "nowhere"))
