"""`mtl tune` on the tiny model: trials as run folders, the best link, the command that repeats the best,
search-space errors, pruning, Ctrl-C and going on, and several processes on one study (SQLite, and a
PostgreSQL server started here)."""

from __future__ import annotations

import glob
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, sample_rows, write_csv

optuna = pytest.importorskip("optuna")

WAIT = 600  # seconds; no test waits this long when all is well
TASKS = ("class_label", "sentiment_label")


@pytest.fixture
def data(tmp_path) -> Path:
    return write_csv(tmp_path / "small.csv", sample_rows(160))


@pytest.fixture
def fixed(tiny_model) -> list[str]:
    """Settings every trial shares: the tiny model, fast."""
    return ["--model", tiny_model, "--epochs", "2", "--batch-size", "8", "--lr-backbone", "1e-3", "--precision",
            "fp32"]


def space_file(folder: Path, text: str, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def objective_of(run: Path) -> float:
    """The default objective, recomputed here: the mean of each task's validation macro-F1 at the best epoch."""
    best = json.loads((run / "summary.json").read_text())["best_metrics"]
    return sum(best[f"val_{t}_f1"] for t in TASKS) / len(TASKS)


def load_study(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url)


def states(study) -> dict[int, str]:
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtlcli", "tune", *map(str, args)], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- refused before the first trial: one line, exit 2, nothing written --------------------------


def test_without_optuna_the_command_says_what_to_install(cli, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the extra were not installed
    result = cli("tune", data, "--trials", "1")
    assert result.exit_code == 2, result.output
    assert 'mtl tune needs the Python package \'optuna\'' in result.output
    assert 'pip install "mtlcli[tune]"' in result.output and "Traceback" not in result.output
    assert not Path("runs").exists()


@pytest.mark.parametrize("text, message", [
    ("lr_bakbone: {low: 1e-5, high: 1e-4, log: true}\n",
     "space.yaml: unknown key 'lr_bakbone' (did you mean 'lr_backbone'?)"),
    ("lr_backbone: {low: 1e-3, high: 1e-5}\n", "space.yaml: key 'lr_backbone': low 0.001 is above high 1e-05"),
    ("batch_size: {choices: [16, 0]}\n", "space.yaml: key 'batch_size' must be at least 1, got 0"),
    ("warmup_ratio: {low: 0.0, high: 1.5}\n", "space.yaml: key 'warmup_ratio' "),
    ("pooling: {choices: [mean, avg]}\n", "space.yaml: key 'pooling': "),
    ("epochs: {low: 1}\n", "space.yaml: key 'epochs' needs both low and high (or choices)"),
    ("lr_heads: {low: 0, high: 0.1, log: true}\n", "space.yaml: key 'lr_heads': a log scale needs low above 0"),
    ("head_options.dropout: {lo: 0, high: 0.3}\n", "space.yaml: key 'head_options.dropout' has unknown entries (lo)"),
    ("out: {choices: [a, b]}\n", "space.yaml: key 'out' says where trials read or write"),
    ("lr: [1, 2\n", "space.yaml:2: not valid YAML"),
])
def test_a_bad_search_space_is_one_line_before_any_trial(cli, data, fixed, tmp_path, text, message):
    space = space_file(tmp_path, text)
    result = cli("tune", data, *fixed, "--space", space.name, "--trials", "1")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not Path("runs").exists()  # no study, no trial folder


def test_the_unknown_pooler_is_named_with_the_known_ones(cli, data, fixed, tmp_path):
    space = space_file(tmp_path, "pooling: {choices: [mean, avg]}\n")
    result = cli("tune", data, *fixed, "--space", space.name, "--trials", "1")
    assert result.exit_code == 2 and "avg" in result.output and "mean" in result.output, result.output


@pytest.mark.parametrize("args, message", [
    (["--metric", "topic"], "--metric topic: no task 'topic' (tasks: class_label, sentiment_label)"),
    (["--metric", "class_label=-1"], "--metric class_label=-1: the weight must be a number above 0"),
    (["--val-split", "0"], "--val-split 0: trials are compared on validation scores"),
    (["--name", "x"], "--name: each trial is named trial-N inside the study's folder"),
    (["--study", ".hidden"], "--study .hidden: a study name is letters"),
    (["--storage", "sqlite:////nonexistent/folder/study.db"], "cannot open the study"),
])
def test_bad_options_are_one_line(cli, data, fixed, args, message):
    result = cli("tune", data, *fixed, "--trials", "1", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not list(Path("runs").glob("*"))  # no study folder left


def test_flags_fix_their_keys_and_a_space_of_fixed_keys_is_refused(cli, data, fixed, tmp_path):
    space = space_file(tmp_path, "lr_backbone: {low: 1e-5, high: 1e-4, log: true}\n")
    result = cli("tune", data, *fixed, "--space", space.name, "--trials", "1")  # --lr-backbone is given
    assert result.exit_code == 2 and "every key of the search space is fixed (given as a flag or in --config)" in result.output
    config = space_file(tmp_path, "lr_heads: 0.002\n", "fixed.yaml")  # a --config file's keys are fixed too
    space = space_file(tmp_path, "lr_heads: {low: 1e-3, high: 1e-2}\n")
    result = cli("tune", data, "--config", config.name, "--space", space.name, "--trials", "1")
    assert result.exit_code == 2 and "every key of the search space is fixed (given as a flag or in --config)" in result.output


# ---- a study end to end ------------------------------------------------------------------------


@pytest.mark.slow
def test_tune_leaves_trial_runs_a_best_link_and_a_command_that_repeats_the_best(cli, data, fixed, tmp_path):
    space = space_file(tmp_path, "lr_heads: {low: 1e-3, high: 1e-2, log: true}\npooling: {choices: [mean, cls]}\n"
                                 "head_options.dropout: {low: 0.0, high: 0.2}\n")
    result = cli("tune", data, *fixed, "--space", space.name, "--trials", "4", "--pruner", "none")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "small"  # the study is named after the data file
    study = load_study(f"sqlite:///{folder / 'study.db'}", "small")
    assert states(study) == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "COMPLETE"}
    for t in study.trials:  # each trial is a run folder with its settings, scored as the study says
        run = folder / f"trial-{t.number}"
        config = (run / "config.yaml").read_text()
        assert f"pooling: {t.user_attrs['settings']['pooling']}" in config
        assert f"lr_heads: {t.user_attrs['settings']['lr_heads']}" in config
        assert math.isclose(t.value, objective_of(run), rel_tol=1e-9)
    # a new study starts from mtl train's own settings: its best is never below a run without the search
    assert study.trials[0].user_attrs["settings"] == {"lr_heads": 0.001, "pooling": "mean", "head_options.dropout": 0.0}
    plain = cli("train", data, *fixed, "--name", "plain", "--quiet")
    assert plain.exit_code == 0, plain.output
    assert math.isclose(objective_of(tmp_path / "runs" / "plain"), study.trials[0].value, rel_tol=1e-6)
    best = max(study.trials, key=lambda t: t.value)
    assert os.readlink(folder / "best") == f"trial-{best.number}"
    assert f"Best trial {best.number} of 4 finished: objective {best.value:.4f}" in result.output
    assert f"pooling: {best.user_attrs['settings']['pooling']}" in result.output

    # the printed command trains the best trial again, outside the study, to the same objective
    command = result.output.split("Repeat it with:\n", 1)[1].splitlines()[0].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["mtl", "train"] and "--trials" not in argv
    again = cli(*argv[1:], "--name", "again", "--quiet")
    assert again.exit_code == 0, again.output
    assert math.isclose(objective_of(tmp_path / "runs" / "again"), best.value, rel_tol=1e-6)

    # a trial is a run folder the other commands take as it is; the study reads side by side
    predicted = cli("predict", folder / "best", "The battery died after a day.")
    assert predicted.exit_code == 0 and "class_label" in predicted.output, predicted.output
    report = cli("report", folder, "-o", "report.html")
    assert report.exit_code == 0, report.output
    html = (tmp_path / "report.html").read_text()
    assert "Study small" in html and f"trial-{best.number}" in html
    found = json.loads((folder / "study.json").read_text())["importances"]  # which settings mattered
    assert set(found) == {"lr_heads", "pooling", "head_options.dropout"} and math.isclose(sum(found.values()), 1)
    mattered = html.split('id="study-importances"', 1)[1].split("</div>", 1)[0]
    assert all(key in mattered for key in found)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked for by hand here, not by optimize
def test_importances_wait_for_enough_complete_trials(tmp_path):
    from mtlcli.tuning.study import importances, open_study

    study = open_study("few", f"sqlite:///{tmp_path / 'study.db'}", "none", seed=1)
    for value in (0.1, 0.2, 0.3):
        trial = study.ask()
        trial.suggest_float("lr_heads", 1e-3, 1e-2, log=True)
        study.tell(trial, value)
    assert importances(study) == ({}, "importances need at least 4 complete trials; the study has 3")


@pytest.mark.slow
def test_a_pruned_trial_stops_early_and_its_folder_says_so(cli, data, fixed, tmp_path):
    space = space_file(tmp_path, "pooling: {choices: [mean]}\n")
    args = ["tune", data, *fixed, "--epochs", "3", "--space", space.name, "--study", "p", "--quiet"]
    for _ in range(2):  # two trials that learn: the median pruner's reference
        assert cli(*args, "--trials", str(_ + 1), "--lr-heads", "3e-3").exit_code == 0
    result = cli(*args, "--trials", "3", "--lr-heads", "1e-7", "--lr-backbone", "0")  # one that learns nothing
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "p" / "trial-2"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pruned"] is True and summary["pruned_reason"].startswith("pruned after validation 1")
    assert summary["epochs_run"] == 1 and len((run / "metrics.jsonl").read_text().splitlines()) == 1
    study = load_study(f"sqlite:///{tmp_path / 'runs' / 'p' / 'study.db'}", "p")
    assert states(study)[2] == "PRUNED"
    assert os.readlink(tmp_path / "runs" / "p" / "best") in ("trial-0", "trial-1")
    assert cli("report", run, "-o", "r.html").exit_code == 0
    assert "pruned after validation 1" in (tmp_path / "r.html").read_text()
    # the same trial with one epoch: its only validation is its last, which is never pruned
    one = ["tune", data, *fixed, "--epochs", "1", "--space", space.name, "--study", "p", "--quiet"]
    assert cli(*one, "--trials", "4", "--lr-heads", "1e-7", "--lr-backbone", "0").exit_code == 0
    assert states(load_study(f"sqlite:///{tmp_path / 'runs' / 'p' / 'study.db'}", "p"))[3] == "COMPLETE"


@pytest.mark.slow
def test_ctrl_c_fails_the_trial_and_the_same_command_goes_on(data, fixed, tmp_path):
    args = [data, *fixed, "--epochs", "6", "--patience", "6", "--batch-size", "4", "--trials", "3", "--pruner",
            "none", "--space", space_file(tmp_path, "pooling: {choices: [mean, cls]}\n")]
    folder = tmp_path / "runs" / "small"
    proc = start(args, tmp_path)
    deadline = time.monotonic() + WAIT
    log = folder / "trial-1" / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None and not (log.is_file() and log.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # in trial 1, after its first epoch
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, err
    assert "the interrupted trial is marked failed and not counted; the study keeps its 1 finished trials" in err
    assert "Traceback" not in err
    url = f"sqlite:///{folder / 'study.db'}"
    study = load_study(url, "small")
    assert states(study) == {0: "COMPLETE", 1: "FAIL"}
    assert "SIGINT" in study.trials[1].user_attrs["interrupted"]
    kept = (folder / "trial-0" / "summary.json").read_text()

    again = start(args, tmp_path)
    out, err = again.communicate(timeout=WAIT)
    assert again.returncode == 0, err
    study = load_study(url, "small")
    assert states(study) == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE"}  # 3 finished, 1 not counted
    assert (folder / "trial-0" / "summary.json").read_text() == kept  # a finished trial is never run again


# ---- several processes on one study ------------------------------------------------------------


def two_processes_finish_exactly(n: int, url: str | None, data: Path, fixed: list[str], tmp_path: Path) -> None:
    space = space_file(tmp_path, "lr_heads: {low: 1e-3, high: 1e-2, log: true}\n")
    args = [data, *fixed, "--trials", n, "--space", space, "--study", "shared", "--quiet"]
    args += ["--storage", url] if url else []
    procs = [start(args, tmp_path) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
    study = load_study(url or f"sqlite:///{tmp_path / 'runs' / 'shared' / 'study.db'}", "shared")
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n
    # every other trial was given back before it ran: no folder, nothing trained twice
    assert all(t.user_attrs.get("surplus") for t in trials if t not in finished)
    folders = {p.name for p in (tmp_path / "runs" / "shared").glob("trial-*")}
    assert folders == {f"trial-{t.number}" for t in finished}
    assert all((tmp_path / "runs" / "shared" / name / "summary.json").is_file() for name in folders)
    assert len({t.user_attrs["pid"] for t in finished}) == 2  # both processes ran trials of the one study


@pytest.mark.slow
def test_two_processes_on_one_sqlite_study_finish_exactly_n_trials(data, fixed, tmp_path):
    two_processes_finish_exactly(4, None, data, fixed, tmp_path)


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1 in a temporary folder, as the 'postgres' user when run as root
    (the server refuses to run as root); its URL."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)")
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="mtl-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: PostgreSQL refuses to run as root")
        try:
            import pwd

            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = folder / "data"
    subprocess.run([*as_user, initdb, "-D", str(data_dir), "-U", "mtl", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data_dir), "-l", str(folder / "log"), "-w", "start", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://mtl@127.0.0.1:{port}/postgres"  # the driver the test extra installs
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_processes_on_one_postgresql_study_finish_exactly_n_trials(postgres, data, fixed, tmp_path):
    two_processes_finish_exactly(4, postgres, data, fixed, tmp_path)


# ---- the pieces a trial is judged by -----------------------------------------------------------


def test_the_objective_is_the_weighted_mean_of_each_types_main_metric_lower_is_better_negated():
    from mtlcli.tasks.base import Task
    from mtlcli.tuning.objective import objective_for

    tasks = {"topic": Task("topic", "classification", ["a", "b"], {}), "price": Task("price", "regression", [], {})}
    row = {"val_topic_f1": 0.8, "val_topic_acc": 0.9, "val_price_rmse": 0.5, "val_price_r2": 0.7}
    assert math.isclose(objective_for([], tasks).value(row), (0.8 - 0.5) / 2)
    assert math.isclose(objective_for(["topic=3", "price"], tasks).value(row), (3 * 0.8 - 0.5) / 4)
    assert objective_for(["topic"], tasks).describe() == "validation macro-F1 of topic"


def test_pruning_stops_where_the_judge_says_and_keeps_early_stoppings_best():
    from mtlcli.training.policies import EarlyStopping, Pruning

    seen = []
    policy = Pruning(EarlyStopping(patience=5), lambda row: seen.append(row["x"]) or ("weak" if row["x"] < 0 else None))
    for epoch, (loss, x) in enumerate([(1.0, 1), (0.5, 2), (0.7, -1), (0.2, 5)], 1):
        policy.update(epoch, loss)
        policy.observe({"x": x})
        if policy.should_stop:
            break
    assert (epoch, policy.reason, seen) == (3, "weak", [1, 2, -1])
    assert (policy.best_epoch, policy.best, policy.bad_epochs) == (2, 0.5, 1)
    assert policy.state_dict() == EarlyStopping(5).state_dict() | {"best": 0.5, "best_epoch": 2, "bad_epochs": 1}


@pytest.mark.slow
def test_a_trial_of_a_killed_process_is_failed_once_its_heartbeat_stops(data, fixed, tmp_path):
    from mtlcli.tuning.study import GRACE_S, HEARTBEAT_S

    args = [data, *fixed, "--trials", "2", "--pruner", "none", "--quiet",
            "--space", space_file(tmp_path, "pooling: {choices: [mean, cls]}\n")]
    proc = start(args, tmp_path)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and proc.poll() is None and not (tmp_path / "runs/small/trial-0").is_dir():
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs, the trial stays RUNNING in the storage
    proc.communicate(timeout=WAIT)
    url = f"sqlite:///{tmp_path / 'runs/small/study.db'}"
    assert states(load_study(url, "small")) == {0: "RUNNING"}
    time.sleep(GRACE_S + HEARTBEAT_S)  # the heartbeat is over its grace period: the trial is stale
    again = start(args, tmp_path)
    out, err = again.communicate(timeout=WAIT)
    assert again.returncode == 0, err
    assert states(load_study(url, "small")) == {0: "FAIL", 1: "COMPLETE", 2: "COMPLETE"}


def test_help_leaves_out_the_refused_name_option(cli):
    result = cli("tune", "--help")
    assert result.exit_code == 0 and "--study" in result.output and "--name" not in result.output
    assert "--name" in cli("train", "--help").output
