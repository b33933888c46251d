"""Signals and kill -9 against real `python -m mtlcli train` processes on the tiny model.

After every fault the run folder must serve `load_run` (what eval and predict use) and
`mtl train --resume`, and the resumed run must log exactly what a run that was never stopped logs.
Faults injected: SIGINT and SIGTERM mid-training, a second SIGINT while the first is being handled,
SIGKILL in the middle of an epoch, and SIGKILL (via tests/crash_driver.py) halfway through writing a
best checkpoint, halfway through writing last.pt, and between writing metrics.jsonl and last.pt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import sample_rows, write_csv
from mtlcli.model.checkpoint import load_checkpoint
from mtlcli.inference.loaded_run import load_run

pytestmark = pytest.mark.slow  # each test starts a training process, and then resumes it

DRIVER = Path(__file__).with_name("crash_driver.py")
TIMING = ("seconds", "train_seconds", "train_sentences_per_s")
EPOCHS = 6
WAIT = 600  # seconds; generous for a loaded machine, and no test waits this long when all is well


def env() -> dict[str, str]:
    # one thread: quick on a shared machine, and all processes of a comparison run alike
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def mtl_here(*args: str):
    """`mtl ARGS` in this process, on one thread like the subprocesses (the numbers then match bit for bit)."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("interrupt")
    data = write_csv(folder / "data.csv", sample_rows(200))
    args = ["train", str(data), "--model", tiny_model, "--epochs", str(EPOCHS), "--patience", str(EPOCHS),
            "--batch-size", "8", "--lr-backbone", "1e-3", "--lr-heads", "3e-3", "--precision", "fp32",
            "--out", str(folder / "runs"), "--quiet"]
    done = mtl_here(*args, "--name", "reference")
    assert done.exit_code == 0, done.output
    return folder, args


def start(args, name, fault: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(DRIVER), fault, "--", *args] if fault else [sys.executable, "-m", "mtlcli", *args]
    return subprocess.Popen([*cmd, "--name", name], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_epoch(run: Path, n: int, proc: subprocess.Popen) -> None:
    """Until epoch n is logged and checkpoints/last.pt exists (written right after the log)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and proc.poll() is None:
        path = run / "metrics.jsonl"
        if (run / "checkpoints" / "last.pt").is_file() and path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    pytest.fail(f"no epoch {n} (exit code {proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def resume_and_compare(folder: Path, run: Path) -> None:
    """The folder serves eval/predict as it is, resumes, and ends exactly like the reference run.

    The resume runs in this process (quicker than another start of Python, torch and transformers).
    """
    if list((run / "checkpoints").glob("best_epoch_*.pt")):
        load_run(run, device="cpu", precision="fp32")
    done = mtl_here("train", "--resume", run, "--quiet")
    assert done.exit_code == 0, done.output
    assert metrics(run) == metrics(folder / "runs" / "reference")
    assert not [p.name for p in run.rglob(".*.tmp-*")]  # what the killed process left half-written is gone
    load_run(run, device="cpu", precision="fp32")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_state_and_says_how_to_resume(setup, sig, code):
    folder, args = setup
    run = folder / "runs" / f"signal{code}"
    proc = start(args, run.name)
    wait_for_epoch(run, 1, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == code, err
    assert f"mtl train --resume {run}" in err and "finishing this batch" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["last_checkpoint"] == "checkpoints/last.pt"
    state = load_checkpoint(run / "checkpoints" / "last.pt")["resume"]
    assert [state["epoch"], state["step"]] == summary["position"]
    if sig == signal.SIGINT:  # the two differ only in the exit code; one resume is enough
        resume_and_compare(folder, run)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_complete_checkpoint(setup):
    folder, args = setup
    run = folder / "runs" / "twice"
    proc = start(args, run.name)
    wait_for_epoch(run, 1, proc)
    proc.send_signal(signal.SIGINT)
    while "finishing this batch" not in (line := proc.stderr.readline()):  # the first one has been handled
        assert line, "the process ended before handling the first Ctrl-C"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130
    assert "stopping now; the last complete checkpoint is kept" in err and "Traceback" not in err
    load_checkpoint(run / "checkpoints" / "last.pt")  # complete: the old one or the new one, never half of one
    resume_and_compare(folder, run)


def test_kill_9_during_an_epoch(setup, tmp_path):
    # the process holds still after batch 3 of epoch 3 (tests/crash_driver.py) and says so in a file;
    # the kill then lands in the middle of that epoch however loaded the machine is
    folder, args = setup
    run = folder / "runs" / "killed"
    mark = tmp_path / "holding"
    proc = start(args, run.name, f"hold-after-batch:3:3:{mark}")
    try:
        deadline = time.monotonic() + WAIT
        while not mark.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.is_file(), f"never reached epoch 3 (exit code {proc.returncode}): {proc.stderr.read()}"
        epoch, step, steps = (int(w) for w in mark.read_text().split()[1::2])
        assert (epoch, step) == (3, 3) and steps > step  # the epoch is under way, with batches still to go
        assert proc.poll() is None  # and the process is still in it
        proc.kill()
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err
    # on disk: epochs 1 and 2 complete, nothing of epoch 3, and the run never got to its summary
    assert [row["epoch"] for row in metrics(run)] == [1, 2]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["resume"]
    assert (state["epoch"], state["step"]) == (3, 0)
    assert not (run / "summary.json").exists()
    resume_and_compare(folder, run)


@pytest.mark.parametrize("fault, what_is_left", [
    # the first best checkpoint, half written: no checkpoint at all yet, so the run starts over in place
    ("kill-in-write:best_epoch_1.pt:1", "nothing"),
    # last.pt of epoch 2, half written: last.pt of epoch 1 is intact beside the half-written temporary file
    ("kill-in-write:last.pt:2", "last.pt of epoch 1"),
    # metrics.jsonl already has epoch 2, last.pt does not: resume trusts last.pt and runs epoch 2 again
    ("kill-before-rename:last.pt:2", "last.pt of epoch 1"),
])
def test_kill_9_while_writing_a_checkpoint(setup, fault, what_is_left):
    folder, args = setup
    run = folder / "runs" / fault.replace(":", "-")
    proc = start(args, run.name, fault)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL, err
    left = list(run.rglob(".*.tmp-*"))
    assert left, "the kill left no temporary file: it did not hit a write"
    last = run / "checkpoints" / "last.pt"
    if what_is_left == "nothing":
        assert not last.exists()
    else:
        state = torch.load(last, weights_only=True)["resume"]
        assert (state["epoch"], state["step"]) == (2, 0)
    if fault.startswith("kill-before-rename"):
        assert len(metrics(run)) == 2  # one row ahead of last.pt
    resume_and_compare(folder, run)
