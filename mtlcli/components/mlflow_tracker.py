"""The MLflow tracker: the resolved config as parameters, every validation's metrics, the per-step
training loss, the run folder's files as artifacts, in one MLflow run that ``mtl train --resume``
continues.

Where: ``MLFLOW_TRACKING_URI`` when set (a server, ``http://127.0.0.1:5000``), else MLflow's own
default (a local store in the working folder, as ``mlflow ui`` expects). The experiment is
``MLFLOW_EXPERIMENT_NAME`` when set, else ``mtl``. The MLflow run's id and store are kept in
``<run>/mlflow.json``, so a resumed run logs into the same MLflow run from any working folder.
A store MLflow refuses or cannot reach at the start is a UserError: the run does not train.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from mtlcli.components.trackers import Tracker, best_x, by_step, numbers, numbers_on_test, require
from mtlcli.errors import UserError, first_line
from mtlcli.registry import trackers

RUN_FILE = "mlflow.json"
STEP = "step"  # the prefix of the per-step metrics
EXPERIMENT = "mtl"
SKIPPED = ("checkpoints",)  # weights stay in the run folder: hundreds of MB per run in the store otherwise
PARAM_LIMIT = 6000  # MLflow's longest parameter value
# a server that is gone should cost seconds, not MLflow's default minutes of retries, before training goes on
GENTLE_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def metric_key(key: str) -> str:
    """MLflow allows letters, digits, '_', '-', '.', ' ' and '/' in names; a task column may hold more."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)


def params_of(config: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in config.items():
        text = value if isinstance(value, str) else json.dumps(value)
        out[key] = text[:PARAM_LIMIT]
    return out


@trackers.register("mlflow")
class MlflowTracker(Tracker):
    def __init__(self):
        require("mlflow", "mlflow")
        self.client = None
        self.run_id = None
        self.resumed = False  # continues the MLflow run of <run>/mlflow.json
        self.by_step = False  # validations logged against optimizer steps, not epochs

    def start(self, config: dict[str, Any], run_dir: Path, resumed: bool) -> None:
        self.by_step = by_step(config)
        for name, value in GENTLE_HTTP.items():
            os.environ.setdefault(name, value)
        for logger in ("mlflow", "alembic"):  # creating a local store logs a dozen INFO lines into the display
            logging.getLogger(logger).setLevel(logging.WARNING)
        saved = _read_run_file(run_dir) if resumed else None
        # the saved store wins over the default (another working folder), not over an explicit URI
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (saved or {}).get("tracking_uri")
        try:
            self._start(config, run_dir, saved, uri)
        except Exception as exc:  # the store or the server: training is not started unrecorded
            with contextlib.suppress(Exception):  # an MLflow run opened before the failure goes again
                self.abandon(run_dir)
            raise UserError(cannot_start(exc, uri)) from None

    def _start(self, config: dict[str, Any], run_dir: Path, saved: dict[str, Any] | None, uri: str | None) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.resumed = saved is not None
        params = params_of(config)
        if saved:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            logged = self.client.get_run(self.run_id).data.params
            # a parameter cannot change in MLflow: a raised --epochs on resume is recorded as a tag
            for key, value in params.items():
                if key in logged and logged[key] != value:
                    self.client.set_tag(self.run_id, f"resumed.{key}", value)
            params = {k: v for k, v in params.items() if k not in logged}
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"mtl.run_dir": str(run_dir)})
            self.run_id = run.info.run_id
            from mtlcli import atomic

            atomic.write_json(run_dir / RUN_FILE, {"run_id": self.run_id, "experiment_id": experiment_id,
                                                 "tracking_uri": self.client.tracking_uri})
        if params:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def log_metrics(self, row: dict[str, Any], epoch: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(k), v, now, epoch) for k, v in numbers(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_step(self, values: dict[str, float], step: int) -> None:
        """The per-step losses as ``step/train_loss``, ``step/lr_backbone``...: their own metrics, so
        that each metric's history has one x-axis."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(f"{STEP}/{k}"), v, now, step) for k, v in numbers(values).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, summary: dict[str, Any]) -> None:
        if self.client is None:
            return
        tags = {"mtl.best_epoch": summary.get("best_epoch"), "mtl.epochs_run": summary.get("epochs_run"),
                "mtl.stopped_early": summary.get("stopped_early")}
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, json.dumps(value))
        scores = numbers_on_test(summary)
        if scores:
            from mlflow.entities import Metric

            now, step = int(time.time() * 1000), best_x(summary, self.by_step)
            self.client.log_batch(self.run_id, metrics=[Metric(metric_key(k), v, now, step) for k, v in scores.items()])
        for path in sorted(run_dir.iterdir()):
            if path.name in SKIPPED or path.name.startswith("."):
                continue
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))
        ended = "FAILED" if summary.get("diverged") else "KILLED" if summary.get("interrupted") else "FINISHED"
        self.client.set_terminated(self.run_id, status=ended)

    def abandon(self, run_dir: Path) -> None:
        if self.client is None or self.run_id is None:
            return
        if self.resumed:  # the run it continues stays, as stopped
            self.client.set_terminated(self.run_id, status="KILLED")
        else:  # a run that never trained is no record; a later resume starts a new one
            self.client.delete_run(self.run_id)
            (run_dir / RUN_FILE).unlink(missing_ok=True)


def cannot_start(exc: Exception, uri: str | None) -> str:
    """The one line for a store MLflow refuses or cannot reach: which, why, and what works."""
    where = f"the tracking store {uri}" if uri else "MLflow's default tracking store"
    if "maintenance mode" in str(exc):  # MLflow 3 refuses a folder (file://, ./mlruns) as the store
        return (f"--track mlflow: MLflow {_version()} refuses {where}: a folder store is no longer written; "
                "set MLFLOW_TRACKING_URI=sqlite:///mlflow.db or a tracking server (http://HOST:5000)")
    return (f"--track mlflow: cannot start at {where} ({type(exc).__name__}: {first_line(exc, 200)}); "
            "check MLFLOW_TRACKING_URI: sqlite:///mlflow.db or a tracking server that answers")


def _version() -> str:
    import mlflow

    return mlflow.__version__


def _read_run_file(run_dir: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the run never reached MLflow: a new MLflow run starts
    return saved if isinstance(saved, dict) and isinstance(saved.get("run_id"), str) else None
