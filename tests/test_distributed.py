"""Training under torch.distributed: real `python -m mtlcli train --nproc 2` runs (gloo, CPU, tiny model).

Two processes with the same global batch step through the same rows per optimizer step as one, so
their first epoch must match a one-process run; a worker killed mid-run must end the run, not hang it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import runs_in, sample_rows, write_csv

pytestmark = pytest.mark.slow  # each test starts two or three Python processes that train

EPOCHS = 6  # of 120 rows: a signal sent once epoch 1 is logged lands mid-run, with epochs to spare
WAIT = 600  # seconds: generous for a loaded machine, and shorter than the 10-minute collective timeout
COMPARED = ("train_loss", "val_loss", "val_class_label_loss", "val_class_label_acc", "val_class_label_f1",
            "val_sentiment_label_loss", "val_sentiment_label_acc", "val_sentiment_label_f1",
            "train_class_label_acc", "train_sentiment_label_acc")


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def mtl(*args, timeout: float = WAIT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtlcli", *map(str, args)], env=env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    """The tiny model without dropout (so both runs see the same function), and 150 rows: 120 train in
    batches of 12 (none smaller than 2, so no rows are dropped), 30 validate."""
    folder = tmp_path_factory.mktemp("distributed")
    model = folder / "tiny-no-dropout"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(config))
    data = write_csv(folder / "data.csv", sample_rows(150))
    args = [data, "--model", model, "--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--batch-size", "12",
            "--val-split", "0.2",
            "--lr-backbone", "1e-3", "--lr-heads", "3e-3", "--precision", "fp32", "--seed", "3", "--quiet"]
    return folder, args


@pytest.fixture(scope="module")
def finished(setup):
    """The same run on one process and on two (the second is also the reference for resuming)."""
    folder, args = setup
    one = mtl("train", *args, "--out", folder / "one")
    assert one.returncode == 0, one.stderr
    two = mtl("train", *args, "--out", folder / "two", "--nproc", "2")
    assert two.returncode == 0, two.stderr + two.stdout
    return folder / "one", folder / "two"


def test_two_processes_match_one(finished):
    runs = runs_in(finished[1])
    assert len(runs) == 1, runs  # rank 0 alone made the run folder
    run = runs[0]
    # rank 0 dropped the optimizer state of the finished run
    assert list((run / "checkpoints").glob("best_epoch_*.pt")) and not (run / "checkpoints" / "last.pt").exists()
    rows = [[json.loads(line) for line in (out / "latest" / "metrics.jsonl").read_text().splitlines()]
            for out in finished]
    assert len(rows[0]) == len(rows[1]) == EPOCHS
    for key in COMPARED:  # the first epoch: every later one builds on float rounding that differs
        assert rows[1][0][key] == pytest.approx(rows[0][0][key], abs=1e-3), key
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == EPOCHS

    # the checkpoint is the plain model: it loads and predicts without torch.distributed
    from mtlcli.inference.loaded_run import load_run, predict_batches

    loaded = load_run(run, "cpu", "fp32")
    assert not any(k.startswith("module.") for k in loaded.model.state_dict())
    probs = predict_batches(loaded, ["a fine phone", "it broke"])
    assert probs["class_label"].shape[0] == 2


def test_two_processes_accumulating_two_batches_of_6_match_one_process_with_batches_of_12(setup, finished):
    folder, args = setup
    done = mtl("train", *args, "--batch-size", "6", "--grad-accum", "2", "--out", folder / "accum",
               "--nproc", "2")
    assert done.returncode == 0, done.stderr + done.stdout
    rows = [json.loads((out / "latest" / "metrics.jsonl").read_text().splitlines()[0])
            for out in (finished[0], folder / "accum")]
    for key in COMPARED:
        assert rows[1][key] == pytest.approx(rows[0][key], abs=1e-3), key
    assert json.loads((folder / "accum" / "latest" / "summary.json").read_text())["steps_run"] == 10 * EPOCHS  # 120 / 12


def start_training(args, out: Path, *extra: str) -> subprocess.Popen:
    """`mtl train --nproc 2` in a new session, as a terminal starts it: Ctrl-C reaches its whole group."""
    return subprocess.Popen([sys.executable, "-m", "mtlcli", "train", *map(str, args), "--nproc", "2", "--out", str(out),
                             *extra], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_until(condition, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gave up waiting (exit code {proc.returncode}): {proc.communicate()[1]}")
        time.sleep(0.02)


def finish(proc: subprocess.Popen) -> str:
    try:
        return proc.communicate(timeout=WAIT)[1]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_then_resume_logs_what_an_unstopped_run_logs(setup, finished, tmp_path):
    folder, args = setup
    out = tmp_path / "stopped"
    proc = start_training(args, out)
    wait_until(lambda: list(out.glob("*/metrics.jsonl")), proc)  # epoch 1 is done: training is under way
    os.killpg(proc.pid, signal.SIGINT)
    stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert stderr.count("mtl train --resume") == 1 and "Traceback" not in stderr and "error:" not in stderr, stderr
    (run,) = runs_in(out)
    assert f"mtl train --resume {run}" in stderr  # said by the launcher, which named the run folder

    again = mtl("train", "--resume", run, "--nproc", "2")
    assert again.returncode == 0, again.stderr + again.stdout
    timing = ("seconds", "train_seconds", "train_sentences_per_s")
    logs = [[{k: v for k, v in json.loads(line).items() if k not in timing} for line in path.read_text().splitlines()]
            for path in (finished[1] / "latest" / "metrics.jsonl", run / "metrics.jsonl")]
    assert len(logs[0]) == EPOCHS and logs[1] == logs[0]


def test_sigterm_while_the_processes_start_is_a_clean_stop(setup, tmp_path):
    """SIGTERM to `mtl train --nproc 2` alone (as a scheduler sends it) the moment torchrun starts:
    the workers are not running yet, and still every process ends quietly with 143."""
    folder, args = setup
    out = tmp_path / "early"
    proc = start_training(args, out)
    from mtlcli.training.torchrun_child import children

    wait_until(lambda: children(proc.pid), proc)  # the launcher (torchrun) has started
    proc.send_signal(signal.SIGTERM)
    stderr = finish(proc)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and "error:" not in stderr, stderr
    assert not list(out.glob("*/checkpoints/last.pt"))  # stopped before training: nothing to resume
    assert not _workers(str(out))


def _workers(marker: str) -> dict[int, int]:
    """rank -> pid of the training processes whose command line holds ``marker``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = dict(e.split(b"=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if marker.encode() in cmdline and b"RANK" in environ and b"torch.distributed.run" not in cmdline:
            found[int(environ[b"RANK"])] = int(proc.name)
    return found


def test_killed_worker_ends_the_run(setup):
    folder, args = setup
    out = folder / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mtlcli", "train", *map(str, args), "--epochs", "500",
                             "--patience", "500", "--out", str(out), "--nproc", "2"],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: list(out.glob("*/metrics.jsonl")), proc)  # training is under way once epoch 1 is logged
        workers = _workers(str(out))
        assert set(workers) == {0, 1}, workers
        os.kill(workers[1], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "error: training with 2 processes failed" in stderr
    assert not _workers(str(out))  # rank 0 did not stay behind


def test_launch_options_are_checked_before_any_process_starts(cli, small_csv, tiny_model):
    both = cli("train", small_csv, "--model", tiny_model, "--batch-size", "8", "--batch-size-per-process", "4",
               "--nproc", "2")
    assert both.exit_code == 2
    assert "give --batch-size (the whole batch) or --batch-size-per-process, not both" in both.output
    bad_data = cli("train", "missing.csv", "--model", tiny_model, "--nproc", "2")
    assert bad_data.exit_code == 2 and bad_data.output.count("error:") == 1
    assert "missing.csv" in bad_data.output


def test_launch_passes_the_resolved_options_through(tiny_model, tmp_path):
    """The processes of --nproc get argv built from the resolved settings; read again, it gives them back."""
    import typer

    from mtlcli.cli.app import app
    from mtlcli.cli.train_cmd import child_argv, settings
    from mtlcli.config import SETTINGS

    command = typer.main.get_command(app).commands["train"]

    def resolved(argv):
        p = command.make_context("train", list(argv)).params
        return settings(p["config"], p["batch_size_per_process"], p["nproc"], p["resume"], {k: p[k] for k in SETTINGS})[1]

    config = tmp_path / "c.yaml"
    config.write_text("pooling: cls\nhead_options: {hidden_size: 8}\nepochs: 5\n")
    cfg = resolved(["data.csv", "--config", config, "--model", tiny_model, "--normalize", "--freeze", "embeddings",
                    "--freeze", "bottom:1", "--batch-size-per-process", "4", "--task-weight", "a=b=2",
                    "--class-weight", "a=balanced", "--max-length", "64", "--lr-heads", "3e-3", "--device", "cpu",
                    "--epochs", "4", "--quiet", "--nproc", "2"])
    argv = child_argv(cfg, None, quiet=True)
    assert resolved(argv) == cfg
    assert argv[0] == "data.csv" and "--nproc" not in argv and "--config" not in argv and argv[-1] == "--quiet"
    assert cfg.batch_size == 8 and cfg.pooling == "cls" and cfg.epochs == 4 and cfg.task_weights == {"a=b": 2.0}


LATE_SIGNAL = """
import os, signal, sys
# Python's own handling, whatever this process inherited (a job started with & in a script ignores SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from mtlcli.training.interrupt import StopSignals
with StopSignals() as stop:
    stop.armed = True  # training ran
signal.raise_signal(signal.SIG{name})  # comes while the process is on its way out; handled before this returns
print("still here")
"""


@pytest.mark.parametrize("name", ["INT", "TERM"])
def test_a_signal_after_training_does_not_end_a_torchrun_process_by_the_signal(name):
    """Python's own SIGINT handler would end the process by the signal, which torchrun reads as a
    failure and answers by stopping the other processes while they still write the summary."""
    worker = subprocess.run([sys.executable, "-c", LATE_SIGNAL.format(name=name)], capture_output=True, text=True,
                            env={**env(), "WORLD_SIZE": "2", "RANK": "1"}, timeout=WAIT)
    assert worker.returncode == 0 and worker.stdout == "still here\n", worker.stderr
    alone = subprocess.run([sys.executable, "-c", LATE_SIGNAL.format(name=name)], capture_output=True, text=True,
                           env=env(), timeout=WAIT)
    assert alone.returncode != 0 and "still here" not in alone.stdout  # one process keeps Python's handling
