"""Shared fixtures: a tiny random BERT saved to disk (no network), small CSVs, a CLI runner."""

from __future__ import annotations

import csv
import os
import signal
import string
from pathlib import Path

import pytest

from mtlcli.training.reporter import Reporter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample.csv"
SHARED_DATA = ROOT.parent / "shared" / "data"


def _vocab(words: list[str]) -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return special + chars + [f"##{c}" for c in chars] + sorted(set(words) - set(chars))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with random weights and a small WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    with SAMPLE.open(encoding="utf-8") as f:
        words = [w.strip(string.punctuation).lower() for row in csv.DictReader(f) for w in row["sentence"].split()]
    vocab = _vocab([w for w in words if w])
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # positional: the keyword is vocab_file in transformers 4 and vocab in 5, and an unknown one is ignored
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True)
    assert tokenizer.vocab_size == len(vocab), "the tiny tokenizer lost its vocabulary: every word would be [UNK]"
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertModel(config).save_pretrained(str(folder))
    return str(folder)


def write_csv(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header or ["sentence", "class_label", "sentiment_label"])
        writer.writerows(rows)
    return path


def runs_in(out: Path) -> list[Path]:
    """The run folders in a folder of runs, as a listing shows them: without ``latest`` and the token cache (.cache)."""
    return sorted(p for p in out.iterdir() if not p.is_symlink() and not p.name.startswith("."))


def assert_same_run(first: Path, second: Path, checkpoint: str = "best_epoch_1.pt") -> None:
    """Two runs logged the same metrics (their times aside) and saved the same weights, to the bit."""
    import json

    import torch

    from mtlcli import vocabulary as vocab
    from mtlcli.model.checkpoint import load_checkpoint

    times = (vocab.SECONDS, vocab.TRAIN_SECONDS, vocab.TRAIN_SPEED)
    rows = [[{k: v for k, v in json.loads(line).items() if k not in times}
             for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (first, second)]
    assert rows[0] == rows[1]
    weights = [load_checkpoint(run / "checkpoints" / checkpoint)["model"] for run in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def sample_rows(n: int | None = None) -> list[list[str]]:
    with SAMPLE.open(encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return rows[:n] if n else rows


@pytest.fixture
def small_csv(tmp_path) -> Path:
    """120 rows of the sample data."""
    return write_csv(tmp_path / "small.csv", sample_rows(120))


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture
def cli(runner, tmp_path, monkeypatch):
    """Invoke `mtl ...` in a temporary working folder; returns the Click result."""
    from mtlcli.cli.app import app

    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture
def train_args(tiny_model):
    """Fast training flags for the tiny model."""
    return ["--model", tiny_model, "--epochs", "2", "--batch-size", "16", "--lr-backbone", "1e-3",
            "--lr-heads", "3e-3", "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="session")
def trained_run(tiny_model, tmp_path_factory):
    """One tiny run shared by the eval, predict and plot tests (read it, never change it):
    (run folder, its validation CSV). Trained on 120 sample rows, validated on the next 60."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("trained")
    rows = sample_rows()
    train_csv = write_csv(folder / "train.csv", rows[:120])
    val_csv = write_csv(folder / "val.csv", rows[120:180])
    result = CliRunner().invoke(app, [
        "train", str(train_csv), "--val", str(val_csv), "--out", str(folder / "runs"), "--name", "tiny",
        "--model", tiny_model, "--epochs", "2", "--batch-size", "16", "--lr-backbone", "1e-3",
        "--lr-heads", "3e-3", "--precision", "fp32", "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "runs" / "tiny", val_csv


@pytest.fixture(scope="session")
def onnx_export(trained_run, tmp_path_factory):
    """The trained_run fixture exported to ONNX with `mtl export` (read it, never change it)."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    out = tmp_path_factory.mktemp("exports") / "onnx"
    result = CliRunner().invoke(app, ["export", str(trained_run[0]), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ONNX Runtime matches PyTorch within" in result.output
    return out


class SignalAt(Reporter):
    """Sends SIGINT to this process when the loop reaches (epoch, batch): after that optimizer step,
    or with batch 0 as validation starts. Used by the resume tests to stop a run where they choose."""

    def __init__(self, epoch: int, batch: int):
        self.at = (epoch, batch)

    def batch_end(self, epoch, step, steps, loss, sentences_per_s):
        if (epoch, step) == self.at:
            os.kill(os.getpid(), signal.SIGINT)

    def validation_start(self, epoch):
        if (epoch, 0) == self.at:
            os.kill(os.getpid(), signal.SIGINT)
