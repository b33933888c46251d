"""--model with a Hugging Face id and no network: a cached model loads from the cache; any other is
one line at once, not a minute of download retries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import sample_rows, write_csv

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def mtl_without_network(*args, hf_home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`mtl ...` in a fresh Python, not in offline mode, whose Hub endpoint cannot be reached."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update({"HF_HOME": str(hf_home), "HF_ENDPOINT": UNREACHABLE, "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "mtlcli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def cache_as_hub_model(folder: str, hf_home: Path, repo_id: str) -> None:
    """Put a model folder in the Hugging Face cache as huggingface_hub lays out a download of repo_id."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_an_unknown_hub_id_without_network_is_one_line(tmp_path):
    data = write_csv(tmp_path / "train.csv", sample_rows(40))
    result = mtl_without_network("train", data, "--model", "made-up/no-such-model", "--epochs", "1",
                                 hf_home=tmp_path / "hf", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no retry chatter before the error
    assert lines[0].startswith("error: model 'made-up/no-such-model': not a local folder and not in the "
                               "Hugging Face cache") and UNREACHABLE in lines[0]
    assert "Retry" not in result.stderr and "Traceback" not in result.stderr


def test_a_cached_hub_model_trains_without_network(tiny_model, tmp_path):
    cache_as_hub_model(tiny_model, tmp_path / "hf", "some-org/tiny-bert")
    data = write_csv(tmp_path / "train.csv", sample_rows(60))
    result = mtl_without_network("train", data, "--model", "some-org/tiny-bert", "--epochs", "1", "--batch-size", "16",
                                 "--precision", "fp32", "--name", "cached", "--quiet",
                                 hf_home=tmp_path / "hf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Retry" not in result.stderr
    assert (tmp_path / "runs" / "cached" / "config.yaml").read_text().count("model: some-org/tiny-bert") == 1
