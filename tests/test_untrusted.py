"""Files from someone else never run code: checkpoints, config files, run names.

Each crafted file would create a marker file if its code ran; the tests check it never appears.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from mtlcli.model.checkpoint import load_checkpoint, save_checkpoint
from mtlcli.errors import UserError
from mtlcli.inference.loaded_run import load_run


class Payload:
    """Pickles to a call of exec(): loading it with plain pickle runs the code."""

    def __init__(self, marker):
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self):
        return exec, (self.code,)


def evil_checkpoint(path, marker, legacy=False):
    body = {"format": "mtl-checkpoint", "format_version": 1, "config": {}, "labels": {}, "model": Payload(marker)}
    if legacy:  # the old, non-zip format: one plain pickle stream
        with open(path, "wb") as f:
            pickle.dump(body, f)
    else:
        torch.save(body, path)


@pytest.fixture
def trained(cli, small_csv, train_args, tmp_path):
    # its optimizer state kept: the tests resume it with last.pt as a hostile sender would craft it
    assert cli("train", small_csv, *train_args, "--epochs", "1", "--name", "r", "--keep-optimizer").exit_code == 0
    return tmp_path / "runs" / "r"


def test_the_crafted_checkpoint_really_runs_code_when_unpickled_unsafely(tmp_path):
    # the control: without weights_only, loading it would have created the marker
    marker = tmp_path / "ran"
    evil_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, trained, legacy):
    marker = tmp_path / "ran"
    best = trained / "checkpoints" / "best_epoch_1.pt"
    evil_checkpoint(best, marker, legacy)
    with pytest.raises(UserError) as err:
        load_run(trained, device="cpu")  # what eval and predict call
    assert "refused to load: the checkpoint holds more than weights and plain data" in str(err.value)
    assert "weights_only" not in str(err.value)  # never the advice to switch the check off
    if not legacy:
        assert "it would import or call exec" in str(err.value)
    assert not marker.exists()


def test_resume_refuses_a_last_checkpoint_that_would_run_code(cli, tmp_path, trained):
    marker = tmp_path / "ran"
    evil_checkpoint(trained / "checkpoints" / "last.pt", marker)
    result = cli("train", "--resume", trained, "--epochs", "2")
    assert result.exit_code == 2
    assert "last.pt: refused to load" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_a_checkpoint_cannot_point_resume_at_files_outside_the_run(cli, tmp_path, trained):
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"precious")
    last = trained / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    ckpt["resume"]["best_checkpoint"] = {"name": "../../../victim.pt"}  # plain data, but a hostile path
    save_checkpoint(last, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    result = cli("train", "--resume", trained, "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:builtins.exec [\"open('{marker}', 'w').close()\"]",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
])
def test_a_config_with_python_tags_is_refused(cli, small_csv, tmp_path, tag):
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"pooling: mean\nhead: {tag.format(marker=marker)}\n", encoding="utf-8")
    result = cli("train", small_csv, "--config", config)
    assert result.exit_code == 2
    assert "evil.yaml:2: not valid YAML" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_a_run_config_with_python_tags_is_refused_on_resume(cli, tmp_path, trained):
    marker = tmp_path / "ran"
    config = trained / "config.yaml"
    config.write_text(config.read_text() + f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    result = cli("train", "--resume", trained, "--epochs", "2")
    assert result.exit_code == 2 and "config.yaml" in result.output and "not valid YAML" in result.output
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", "/tmp/x", "x\n", ".hidden", "latest", "x" * 101])
def test_a_run_name_cannot_leave_the_output_folder(cli, small_csv, train_args, tmp_path, name):
    result = cli("train", small_csv, *train_args, "--name", name)
    assert result.exit_code == 2
    assert result.output.startswith("error: --name ") and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.csv"]  # refused before anything was created


def test_checkpoints_are_written_without_crc32s_and_load_back_exactly(tmp_path):
    import zipfile

    weights = {"w": torch.randn(64, 32), "b": torch.arange(5)}
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"config": {}, "labels": {}, "model": weights})
    assert all(info.CRC == 0 for info in zipfile.ZipFile(path).infolist())  # none computed: torch.load checks none
    assert torch.serialization.get_crc32_options()  # the setting is torch's own again for other writers
    loaded = load_checkpoint(path)["model"]
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
