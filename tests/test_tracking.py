"""Experiment tracking: TensorBoard and MLflow read back through their own readers, a real MLflow
server on 127.0.0.1, resume into the same MLflow run, rank 0 only, and trackers that fail."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import runs_in, sample_rows, write_csv

pytestmark = pytest.mark.slow  # MLflow and TensorBoard (heavy imports), an MLflow server, two training processes

SERVER_START = 120  # seconds: an mlflow server on a busy 2-core machine can take a while


def only_run(tmp_path: Path) -> Path:
    (run,) = runs_in(tmp_path / "runs")
    return run


def metrics_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def no_mlflow_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


# ---- TensorBoard ------------------------------------------------------------------------------


def test_tensorboard_event_files_hold_every_epoch_as_metrics_jsonl(cli, small_csv, train_args, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = cli("train", small_csv, *train_args, "--epochs", "3", "--patience", "3", "--track", "tensorboard",
                 "--test", small_csv)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    rows = metrics_rows(run)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/class_label_acc", "val/sentiment_label_f1", "lr/backbone",
            "epoch/seconds"} <= tags
    for tag, key in (("val/loss", "val_loss"), ("val/class_label_acc", "val_class_label_acc"),
                     ("train/sentiment_label_loss", "train_sentiment_label_loss")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3]
        assert [e.value for e in logged] == pytest.approx([r[key] for r in rows], rel=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    for tag, value in (("test/loss", summary["test"]["loss"]),
                       ("test/class_label_acc", summary["test"]["tasks"]["class_label"]["accuracy"])):
        (event,) = events.Scalars(tag)  # once, at the best epoch: the checkpoint the test scores are of
        assert event.step == summary["best_epoch"] and event.value == pytest.approx(value, rel=1e-6)
    assert "track:\n- tensorboard" in (run / "config.yaml").read_text()


# ---- MLflow, local store and resume -----------------------------------------------------------


def test_mlflow_local_store_holds_params_metrics_and_artifacts_and_resume_continues_the_run(
        cli, small_csv, train_args, tmp_path, no_mlflow_env):
    from mlflow.tracking import MlflowClient

    first = cli("train", small_csv, *train_args, "--epochs", "3", "--patience", "5", "--track", "mlflow",
                "--keep-optimizer", "--test", small_csv)
    assert first.exit_code == 0, first.output
    run = only_run(tmp_path)
    saved = json.loads((run / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    logged = client.get_run(saved["run_id"])
    assert logged.info.status == "FINISHED" and logged.info.run_name == run.name
    assert client.get_experiment(logged.info.experiment_id).name == "mtl"
    assert logged.data.params["lr_heads"] == "0.003" and logged.data.params["pooling"] == "mean"
    assert logged.data.params["tasks"] == '["class_label", "sentiment_label"]'
    rows = metrics_rows(run)
    for key in ("val_loss", "val_class_label_acc", "val_class_label_f1", "val_sentiment_label_loss"):
        history = sorted(client.get_metric_history(saved["run_id"], key), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx([r[key] for r in rows], rel=1e-9)
    artifacts = {a.path for a in client.list_artifacts(saved["run_id"])}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "labels.json", "plots", "backbone"} <= artifacts
    assert "checkpoints" not in artifacts
    assert logged.data.tags["mtl.epochs_run"] == "3"
    test = json.loads((run / "summary.json").read_text())["test"]
    (scored,) = client.get_metric_history(saved["run_id"], "test_sentiment_label_f1")
    assert scored.value == pytest.approx(test["tasks"]["sentiment_label"]["macro_f1"], rel=1e-9)

    more = cli("train", "--resume", run, "--epochs", "4", "--patience", "5", "--quiet")
    assert more.exit_code == 0, more.output
    resumed = client.get_run(saved["run_id"])
    assert resumed.info.status == "FINISHED"
    assert resumed.data.params["epochs"] == "3" and resumed.data.tags["resumed.epochs"] == "4"
    history = sorted(client.get_metric_history(saved["run_id"], "val_loss"), key=lambda m: m.step)
    assert [m.value for m in history] == pytest.approx([r["val_loss"] for r in metrics_rows(run)], rel=1e-9)
    assert [m.step for m in history] == [1, 2, 3, 4]
    experiment = client.get_experiment_by_name("mtl")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # the same MLflow run, not a second


def test_resume_may_add_a_tracker(cli, small_csv, train_args, tmp_path, no_mlflow_env):
    from mlflow.tracking import MlflowClient

    first = cli("train", small_csv, *train_args, "--epochs", "1", "--patience", "5", "--keep-optimizer")
    assert first.exit_code == 0, first.output
    run = only_run(tmp_path)
    more = cli("train", "--resume", run, "--epochs", "2", "--track", "mlflow", "--quiet")
    assert more.exit_code == 0, more.output
    saved = json.loads((run / "mlflow.json").read_text())
    history = MlflowClient(tracking_uri=saved["tracking_uri"]).get_metric_history(saved["run_id"], "val_loss")
    assert [m.step for m in history] == [2]  # what this process trained; epoch 1 was before tracking


# ---- a real mlflow server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        log.close()


def test_mlflow_server_receives_the_run_and_a_server_gone_only_warns(
        cli, small_csv, train_args, tmp_path, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    url, proc = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "served")
    result = cli("train", small_csv, *train_args, "--epochs", "2", "--track", "mlflow", "--name", "served")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "served"
    saved = json.loads((run / "mlflow.json").read_text())
    assert saved["tracking_uri"] == url
    client = MlflowClient(tracking_uri=url)
    assert client.get_experiment_by_name("served").experiment_id == saved["experiment_id"]
    history = sorted(client.get_metric_history(saved["run_id"], "val_class_label_acc"), key=lambda m: m.step)
    assert [m.value for m in history] == pytest.approx([r["val_class_label_acc"] for r in metrics_rows(run)])
    assert "metrics.jsonl" in {a.path for a in client.list_artifacts(saved["run_id"])}

    os.killpg(proc.pid, signal.SIGTERM)  # the server goes away: a new run is not trained unrecorded
    proc.wait(timeout=30)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the default retries only make this test slower
    gone = cli("train", small_csv, *train_args, "--epochs", "2", "--track", "mlflow", "--name", "gone")
    assert gone.exit_code == 2, gone.output
    (line,) = gone.output.strip().splitlines()
    assert line.startswith(f"error: --track mlflow: cannot start at the tracking store {url} (MlflowException: ")
    assert line.endswith("check MLFLOW_TRACKING_URI: sqlite:///mlflow.db or a tracking server that answers")
    assert not (tmp_path / "runs" / "gone").exists()
    assert os.readlink(tmp_path / "runs" / "latest") == "served"  # still the last run that trained


# ---- failures, the registry, and rank 0 -------------------------------------------------------


class FlakyTracker:
    """A tracker whose service goes away after the first epoch."""

    calls: list = []

    def start(self, config, run_dir, resumed):
        self.calls.append("start")

    def log_metrics(self, row, epoch):
        self.calls.append(f"epoch {epoch}")
        if epoch == 2:
            raise ConnectionError("server gone\nsecond line")

    def finish(self, run_dir, summary):
        self.calls.append("finish")


def test_a_tracker_that_fails_mid_run_warns_once_and_training_goes_on(cli, small_csv, train_args, tmp_path):
    from mtlcli.registry import trackers

    trackers.register("flaky", FlakyTracker)
    FlakyTracker.calls = []
    try:
        result = cli("train", small_csv, *train_args, "--epochs", "4", "--patience", "5", "--track", "flaky",
                     "--track", "tensorboard")
    finally:
        trackers.unregister("flaky")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "warning: tracker" in line]
    assert warnings == ["warning: tracker 'flaky' failed in log_metrics (ConnectionError: server gone); "
                        "training goes on without it"]
    assert FlakyTracker.calls == ["start", "epoch 1", "epoch 2"]  # dropped: no more calls, no finish
    assert len(metrics_rows(only_run(tmp_path))) == 4
    assert list((only_run(tmp_path) / "tensorboard").iterdir())  # the other tracker carried on


@pytest.mark.parametrize("store", ["file", "folder"])
def test_a_store_mlflow_refuses_stops_the_run_before_training_and_leaves_no_folder(
        cli, small_csv, train_args, tmp_path, monkeypatch, store):
    import mlflow

    # MLflow 3 keeps its folder store in maintenance mode: it raises rather than write one
    uri = (tmp_path / "mlruns").as_uri() if store == "file" else str(tmp_path / "mlruns")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    result = cli("train", small_csv, *train_args, "--track", "tensorboard", "--track", "mlflow")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: --track mlflow: MLflow {mlflow.__version__} refuses the tracking store {uri}: a folder store is "
        "no longer written; set MLFLOW_TRACKING_URI=sqlite:///mlflow.db or a tracking server (http://HOST:5000)")
    assert list((tmp_path / "runs").iterdir()) == []  # no run folder, no latest
    # TensorBoard had started first: its writer thread was stopped before the folder went
    assert not [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread" and t.is_alive()]


def test_a_tracker_that_cannot_start_on_resume_stops_it_and_keeps_the_run_as_it_was(
        cli, small_csv, train_args, tmp_path, monkeypatch, no_mlflow_env):
    from mlflow.tracking import MlflowClient

    first = cli("train", small_csv, *train_args, "--epochs", "1", "--patience", "5", "--keep-optimizer")
    assert first.exit_code == 0, first.output
    run = only_run(tmp_path)
    (run / "tensorboard").write_text("not a folder")  # where the event files would go
    before = (run / "metrics.jsonl").read_text()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    more = cli("train", "--resume", run, "--epochs", "2", "--track", "mlflow", "--track", "tensorboard", "--quiet")
    assert more.exit_code == 2, more.output
    assert more.output.strip() == (f"error: --track tensorboard: cannot write event files to {run / 'tensorboard'} "
                                   "(File exists); make it a writable folder, or train without --track tensorboard")
    assert (run / "metrics.jsonl").read_text() == before  # nothing trained
    assert (run / "tensorboard").read_text() == "not a folder" and (run / "checkpoints" / "last.pt").is_file()
    # MLflow had started first: the MLflow run it opened for this resume is deleted again, and forgotten
    client = MlflowClient(tracking_uri=store)
    assert client.search_runs([client.get_experiment_by_name("mtl").experiment_id]) == []
    assert not (run / "mlflow.json").exists()


def test_a_plugin_tracker_that_cannot_start_is_named_in_one_line(cli, small_csv, train_args, tmp_path):
    from mtlcli.registry import trackers

    class Refused:
        def start(self, config, run_dir, resumed):
            raise ConnectionRefusedError("no server at 127.0.0.1:9\nsecond line")

    trackers.register("refused", Refused)
    try:
        result = cli("train", small_csv, *train_args, "--track", "refused", "--name", "r")
    finally:
        trackers.unregister("refused")
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --track refused: the tracker cannot start (ConnectionRefusedError: no "
                                     "server at 127.0.0.1:9); fix its settings, or train without it")
    assert not (tmp_path / "runs" / "r").exists()


def test_unknown_tracker_and_missing_extra_are_one_line_before_training(cli, small_csv, train_args, tmp_path,
                                                                       monkeypatch):
    unknown = cli("train", small_csv, *train_args, "--track", "wandb")
    assert unknown.exit_code == 2
    assert "error: unknown tracker 'wandb' (available: mlflow, tensorboard)" in unknown.output

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what Python does when the package is not installed
    missing = cli("train", small_csv, *train_args, "--track", "mlflow")
    assert missing.exit_code == 2
    assert missing.output.strip() == ("error: --track mlflow: the mlflow package is not installed; "
                                      "install it with: pip install 'mtlcli[mlflow]'")
    assert not (tmp_path / "runs").exists() or not [p for p in (tmp_path / "runs").iterdir()]


def test_mtl_plugins_lists_the_trackers(cli):
    result = cli("plugins", "--kind", "trackers", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"mlflow", "tensorboard"}
    assert rows["mlflow"]["target"] == "mtlcli.components.mlflow_tracker:MlflowTracker"
    assert all(r["status"] == "ok" and r["source"] == "built-in" for r in rows.values())


def test_under_two_processes_only_rank_0_tracks(tmp_path, tiny_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_csv(tmp_path / "data.csv", sample_rows(120))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mtlcli", "train", str(data), "--model", tiny_model, "--epochs", "2", "--batch-size",
         "12", "--precision", "fp32", "--quiet", "--out", str(tmp_path / "runs"), "--name", "two", "--nproc", "2",
         "--track", "tensorboard", "--log-steps", "4"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "runs" / "two" / "tensorboard"
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [p.name for p in folder.glob("events.*")]
    assert len(list(folder.glob("events.*"))) == 1 and len(list((folder / "steps").iterdir())) == 1  # one writer each
    events = EventAccumulator(str(folder))
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [1, 2]
    steps = EventAccumulator(str(folder / "steps"))
    steps.Reload()
    assert [e.step for e in steps.Scalars("train/loss")] == [4, 8, 12, 16]  # 96 training rows: 8 steps an epoch
