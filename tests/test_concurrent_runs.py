"""Several `mtl train` processes at once with the same --out: real processes on the tiny model.

Started in the same second they would name their run folders alike; each must get a folder of its
own (created atomically, with a suffix on a collision), and `<out>/latest` must end as a link to one
complete run. tests/crash_driver.py pins the clock those processes read for the folder name, so the
collision happens however loaded the machine is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import runs_in, sample_rows, write_csv
from mtlcli.data.token_cache import read_entry

pytestmark = pytest.mark.slow  # several training processes at once

DRIVER = Path(__file__).with_name("crash_driver.py")
STAMP = "20260101-120000"
PROCESSES = 3


def test_runs_started_in_the_same_second_get_a_folder_each(tmp_path, tiny_model):
    data = write_csv(tmp_path / "data.csv", sample_rows(60))
    out = tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(DRIVER), f"clock:{STAMP}", "--", "train", str(data), "--model",
                               tiny_model, "--epochs", "1", "--batch-size", "16", "--precision", "fp32", "--out",
                               str(out), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(PROCESSES)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err

    runs = [p.name for p in runs_in(out)]
    assert runs == [STAMP] + [f"{STAMP}-{n}" for n in range(2, PROCESSES + 1)]
    for name in runs:  # each complete, written by one process only
        run = out / name
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
        summary = json.loads((run / "summary.json").read_text())
        assert summary["epochs_run"] == 1 and summary["best_checkpoint"] == "checkpoints/best_epoch_1.pt"
        # finished: the optimizer state (last.pt) is dropped, the best checkpoint loads
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best_epoch_1.pt"]
        assert summary["optimizer_state"] == "dropped" and summary["last_checkpoint"] is None
        torch.load(run / "checkpoints" / "best_epoch_1.pt", weights_only=True)
    latest = out / "latest"
    assert latest.is_symlink() and os.readlink(latest) in runs
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".cache"]  # no temporary link left behind
    # the runs wrote the same token cache entries at once: each is whole, no temporary file is left
    entries = list((out / ".cache" / "tokens").iterdir())
    assert entries and all(p.suffix == ".npz" and read_entry(p) is not None for p in entries), entries
