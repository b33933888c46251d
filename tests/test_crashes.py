"""Training that cannot go on: a loss that stops being finite, a disk that fills up, a folder that
cannot be written, texts far longer than --max-length.

Faults injected: learning rates of 1e30 (a real divergence); a loss combiner registered through
the component registry that returns NaN from the 9th training batch on (epoch 2, batch 2); a file
size limit (RLIMIT_FSIZE) under which the kernel refuses to grow last.pt, as on a full disk.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import subprocess
import sys

import pytest
import torch

from conftest import sample_rows, write_csv
from mtlcli import runs
from mtlcli.components.combiners import WeightedSum
from mtlcli.errors import UserError
from mtlcli.inference.loaded_run import load_run, predict_batches
from mtlcli.registry import loss_combiners


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # quick on a busy machine
    yield
    torch.set_num_threads(before)


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


class NanFromBatch9(WeightedSum):
    """The weighted sum, until the 9th training batch: from then on NaN (a loss that blows up)."""

    def __init__(self, tasks, weights=None):
        super().__init__(tasks, weights)
        self.batches = 0

    def forward(self, losses):
        total = super().forward(losses)
        if torch.is_grad_enabled():  # a training batch, not validation
            self.batches += 1
            if self.batches >= 9:
                return total * float("nan")
        return total


@pytest.fixture
def nan_combiner():
    loss_combiners.register("nan_from_batch_9", NanFromBatch9)
    yield "nan_from_batch_9"
    loss_combiners.unregister("nan_from_batch_9")


def test_a_nan_loss_stops_naming_epoch_and_batch_and_keeps_the_best(cli, small_csv, train_args, tmp_path,
                                                                     nan_combiner):
    # 102 training rows in batches of 16: seven batches per epoch, so the 9th is epoch 2, batch 2
    result = cli("train", small_csv, *train_args, "--loss-combiner", nan_combiner, "--epochs", "4", "--name", "n")
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert "the training loss became nan in epoch 2 at batch 2 of 7" in line
    assert "best checkpoint (checkpoints/best_epoch_1.pt) and last.pt are from before it" in line
    run = tmp_path / "runs" / "n"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["diverged"]["epoch"] == 2 and summary["diverged"]["batch"] == 2
    assert summary["best_checkpoint"] == "checkpoints/best_epoch_1.pt" and summary["best_epoch"] == 1
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["best_epoch_1.pt", "last.pt"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    best = torch.load(run / "checkpoints" / "best_epoch_1.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in best["model"].values() if t.is_floating_point())
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (last["resume"]["epoch"], last["resume"]["step"]) == (2, 0)
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    load_run(run, device="cpu", precision="fp32")


def test_absurd_learning_rates_diverge_with_a_clear_message(cli, small_csv, train_args, tmp_path):
    result = cli("train", small_csv, *train_args, "--lr-backbone", "1e30", "--lr-heads", "1e30", "--name", "big")
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert re.search(r"the training loss became (nan|inf) in epoch 1 at batch \d+ of 7", line), line
    assert "no epoch had finished, so the run has no checkpoint" in line and "lower learning rates" in line
    run = tmp_path / "runs" / "big"
    assert not list((run / "checkpoints").iterdir())
    assert json.loads((run / "summary.json").read_text())["best_checkpoint"] is None


def test_a_failed_checkpoint_write_keeps_the_previous_one(cli, small_csv, train_args, tmp_path):
    assert cli("train", small_csv, *train_args, "--epochs", "1", "--patience", "5", "--name", "d",
               "--keep-optimizer").exit_code == 0
    run = tmp_path / "runs" / "d"
    best, last = run / "checkpoints" / "best_epoch_1.pt", run / "checkpoints" / "last.pt"
    limit = (best.stat().st_size + last.stat().st_size) // 2  # a best checkpoint fits, last.pt does not

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mtlcli", "train", "--resume", str(run), "--epochs", "2", "--quiet"],
                          env=env, preexec_fn=small_disk, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert f"{last}: cannot write the checkpoint (File too large); the previous one is kept" in done.stderr
    assert "Traceback" not in done.stderr
    state = torch.load(last, weights_only=True)["resume"]
    assert (state["epoch"], state["step"]) == (2, 0)  # still the one from after epoch 1
    assert not list(run.rglob(".*.tmp-*"))
    load_run(run, device="cpu", precision="fp32")

    result = cli("train", "--resume", run, "--epochs", "2", "--quiet")  # space again: it goes on
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_run_that_ends_writes_no_last_checkpoint_it_would_drop(cli, small_csv, train_args, tmp_path):
    # the sizes from a run that keeps its optimizer: under the limit a best checkpoint fits, last.pt does not
    assert cli("train", small_csv, *train_args, "--epochs", "1", "--name", "k", "--keep-optimizer").exit_code == 0
    kept = tmp_path / "runs" / "k" / "checkpoints"
    limit = ((kept / "best_epoch_1.pt").stat().st_size + (kept / "last.pt").stat().st_size) // 2

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mtlcli", "train", str(small_csv), *train_args, "--epochs", "1",
                           "--name", "d"], cwd=tmp_path, env=env, preexec_fn=small_disk, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "d"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["optimizer_state"] == runs.DROPPED and summary["last_checkpoint"] is None
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best_epoch_1.pt"]


def test_an_output_folder_that_cannot_be_written_is_reported_before_training(cli, small_csv, train_args, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = cli("train", small_csv, *train_args, "--out", blocker / "runs")
    assert result.exit_code == 2
    assert "cannot write the run folder here" in error_line(result)


def test_too_little_disk_space_is_reported_before_training(tmp_path):
    with pytest.raises(UserError, match=r"MB free on this disk; the checkpoints need about 1000000000000 MB"):
        runs.require_free_space(tmp_path, 10**18, "the checkpoints")


def test_texts_far_longer_than_max_length_are_truncated(cli, train_args, tmp_path):
    rows = sample_rows(80)
    long_text = " ".join(["the battery lasted a long time and the screen is bright"] * 5000)  # ~55,000 words
    rows[0][0] = rows[5][0] = long_text
    data = write_csv(tmp_path / "long.csv", rows)
    result = cli("train", data, *train_args, "--epochs", "1", "--max-length", "16", "--name", "long")
    assert result.exit_code == 0, result.output
    loaded = load_run(tmp_path / "runs" / "long", device="cpu", precision="fp32")
    from mtlcli.data.batching import tokenize

    assert len(tokenize(loaded.tokenizer, [long_text], 16)[0]) == 16
    probs = predict_batches(loaded, [long_text, "short"])
    for task, p in probs.items():
        assert p.shape[0] == 2 and all(math.isclose(float(s), 1.0, abs_tol=1e-5) for s in p.sum(axis=1))


def test_a_max_length_beyond_the_model_is_refused_before_a_run_folder_exists(cli, small_csv, train_args, tmp_path):
    result = cli("train", small_csv, *train_args, "--max-length", "100000", "--name", "x")
    assert result.exit_code == 2
    assert "--max-length 100000: the model" in error_line(result) and "reads at most 256 tokens" in result.output
    assert not (tmp_path / "runs" / "x").exists()
