"""Memory: the estimate before training, and a real failed allocation during training and predict.

The failures are real: tests/crash_driver.py lowers the process's address-space limit (RLIMIT_AS)
when training (or prediction) starts, so the first large batch cannot be allocated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import sample_rows, write_csv
from mtlcli.runtime.heap import HeapTrimmer, _malloc_trim, _resident_bytes
from mtlcli.training.memory import activation_bytes

DRIVER = Path(__file__).with_name("crash_driver.py")
LONG = 256  # tokens: the tiny model's longest


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "MALLOC_ARENA_MAX": "1"}


def long_rows(n: int) -> list[list[str]]:
    """n sample rows whose texts run past 256 tokens: every batch is as long as --max-length."""
    rows = sample_rows()
    return [[" ".join([rows[i % len(rows)][0]] * 40), *rows[i % len(rows)][1:]] for i in range(n)]


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_the_estimate_of_minilm_matches_the_issue_report():
    # all-MiniLM-L6-v2 (6 layers, 384 wide, 12 heads), 2,399 texts of 128 tokens in one fp32 batch:
    # far beyond the 24 GB that such a run filled before it was killed
    from transformers import BertConfig

    config = BertConfig(hidden_size=384, num_attention_heads=12, num_hidden_layers=6)
    need = activation_bytes(config, 2399, 128, "fp32")
    assert 60e9 < need < 90e9
    assert activation_bytes(config, 2399, 128, "bf16") == need // 2
    assert activation_bytes(config, 32, 128, "fp32") < 2e9  # the default batch is modest


def square_saved_for_backward(backbone, seq: int) -> int:
    """Elements of the length x length tensors one training forward pass keeps for backward."""
    kept = []

    def pack(t):
        if t.dim() == 4 and t.shape[-2:] == (seq, seq):  # batch x heads x length x length
            kept.append(t.numel())
        return t

    ids = torch.randint(5, backbone.config.vocab_size, (4, seq))
    mask = torch.ones(4, seq, dtype=torch.bool)
    mask[:2, seq // 2:] = False  # padded rows: the mask the model passes reaches the kernel
    backbone.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        backbone(input_ids=ids, attention_mask=mask[:, None, None, :]).last_hidden_state.sum().backward()
    return sum(kept)


def test_without_attention_dropout_wide_batches_keep_no_length_squared_weights(tiny_model):
    # what halves a CPU training step's memory on wide batches: PyTorch's fused CPU attention kernel,
    # which takes no dropout; batches up to MATH_UP_TO tokens train with the plain kernel, which keeps them
    from mtlcli.model.network import load_pretrained_backbone
    from mtlcli.runtime.attention import MATH_UP_TO, training_attention
    from mtlcli.training.memory import fused_attention

    cpu = torch.device("cpu")
    wide, narrow = MATH_UP_TO + 8, 48
    fused = load_pretrained_backbone(tiny_model, attention_dropout=0.0)
    assert fused.config.attention_probs_dropout_prob == 0.0 and fused_attention(fused, cpu, wide)
    with training_attention(cpu, wide):
        assert square_saved_for_backward(fused, wide) == 0
    assert not fused_attention(fused, cpu, narrow)
    with training_attention(cpu, narrow):
        assert square_saved_for_backward(fused, narrow) > 0

    dropped = load_pretrained_backbone(tiny_model, attention_dropout=0.1)
    assert dropped.config.attention_probs_dropout_prob == 0.1 and not fused_attention(dropped, cpu, wide)
    layers, heads = dropped.config.num_hidden_layers, dropped.config.num_attention_heads
    assert square_saved_for_backward(dropped, 48) >= layers * 2 * 4 * heads * 48 * 48  # softmax and dropped, per layer

    config = dropped.config
    assert activation_bytes(config, 32, 128, "fp32", fused_attention=True) < activation_bytes(config, 32, 128, "fp32")


def test_a_batch_that_cannot_fit_is_refused_before_a_run_folder_exists(cli, tiny_model, tmp_path):
    # the tiny model with 32 attention heads and attention dropout (so no fused kernel on a CPU): the
    # s^2 attention term makes a batch of 1,500 texts of 256 tokens need ~60 GB
    wide = tmp_path / "wide"
    shutil.copytree(tiny_model, wide)
    config = json.loads((wide / "config.json").read_text())
    config["num_attention_heads"] = 32
    (wide / "config.json").write_text(json.dumps(config))
    data = write_csv(tmp_path / "long.csv", long_rows(1500))
    result = cli("train", data, "--model", wide, "--batch-size", "100000", "--max-length", str(LONG),
                 "--precision", "fp32", "--attention-dropout", "0.1", "--name", "big", "--quiet")
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert "a training batch needs about" in line and "1200 texts of up to 256 tokens" in line
    assert "lower --batch-size (now 100000) or --max-length (now 256)" in line
    assert "warning: --batch-size 100000 is larger than the training set (1200 rows)" in result.output
    assert not (tmp_path / "runs" / "big").exists()


@pytest.mark.slow  # training and prediction processes
def test_running_out_of_memory_in_training_and_predict_is_one_line(tiny_model, tmp_path):
    data = write_csv(tmp_path / "long.csv", long_rows(300))
    common = ["--model", tiny_model, "--batch-size", "240", "--max-length", str(LONG), "--precision", "fp32",
              "--out", str(tmp_path / "runs"), "--name", "r", "--quiet"]
    first = subprocess.run([sys.executable, "-m", "mtlcli", "train", str(data), *common, "--epochs", "1",
                            "--keep-optimizer"],
                           env=env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "r"
    last = run / "checkpoints" / "last.pt"
    saved = last.read_bytes()

    # epoch 2, resumed with 32 MB left to map: the first batch of 240 x 256 tokens does not fit
    more = subprocess.run([sys.executable, str(DRIVER), "memory:mtlcli.training.run.fit:32", "--", "train", "--resume",
                           str(run), "--epochs", "2", "--quiet"], env=env(), capture_output=True, text=True, timeout=600)
    assert more.returncode == 1, more.stderr
    (line,) = error_lines(more.stderr)
    assert line == ("error: out of memory during training: lower --batch-size (now 240) or --max-length (now 256); "
                    "the run folder keeps its last complete checkpoint")
    assert last.read_bytes() == saved  # last.pt of epoch 1, untouched
    assert torch.load(last, weights_only=True)["resume"]["epoch"] == 2

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(row[0] for row in long_rows(240)) + "\n")
    predicted = subprocess.run([sys.executable, str(DRIVER), "memory:mtlcli.inference.predict_io.predict_chunks:32", "--",
                                "predict", str(run), "--input", str(texts), "--batch-size", "240",
                                "--precision", "fp32", "--output", str(tmp_path / "out.csv")],
                               env=env(), capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 1, predicted.stderr
    (line,) = error_lines(predicted.stderr)
    assert line == ("error: out of memory during prediction: lower --batch-size (now 240); texts are cut at 256 "
                    "tokens, the run's --max-length")


def _grow_and_free_300_mb() -> list[torch.Tensor]:
    """300 MB of 2 KB blocks from glibc's heap, then freed but for every 16th, which stays alive so
    the freed pages are not all at the top of the heap."""
    blocks = [torch.ones(512) for _ in range(150_000)]
    return blocks[::16]


@pytest.mark.skipif(_malloc_trim() is None, reason="malloc_trim is glibc's")
def test_freed_heap_memory_goes_back_when_a_trimmer_is_made_and_when_the_process_grew_past_the_slack():
    kept = _grow_and_free_300_mb()
    freed = _resident_bytes()
    trimmer = HeapTrimmer(torch.device("cpu"), slack=64 << 20)  # as validation's, made after training freed
    assert _resident_bytes() < freed - (200 << 20)  # what was freed before it went back at once
    assert trimmer.base is None
    trimmer()  # the first batch: the mark the growth counts from
    assert trimmer.base == pytest.approx(_resident_bytes(), abs=16 << 20)
    kept += _grow_and_free_300_mb()
    grown = _resident_bytes()
    trimmer()
    assert _resident_bytes() < grown - (200 << 20)  # grown past the slack: the free pages went back
    assert trimmer.base is None  # the next call marks where the growth counts from
    kept += _grow_and_free_300_mb()  # the next batch takes those pages again
    regrown = _resident_bytes()
    trimmer()
    assert _resident_bytes() > regrown - (16 << 20)  # not given back: what a batch needs is the new mark
    assert trimmer.base == pytest.approx(regrown, abs=16 << 20)
    del kept


LARGE_BLOCKS_CHILD = """
import sys, torch
from mtlcli.runtime.heap import _resident_bytes, free_large_blocks_at_once
if sys.argv[1] == "fixed":
    assert free_large_blocks_at_once()
big = torch.ones(4 << 20)  # 16 MB, mapped; once freed, glibc's own rule serves blocks up to 16 MB from its heap
del big
block = torch.ones(2 << 20)  # 8 MB
held = _resident_bytes()
del block
print((held - _resident_bytes()) >> 20)
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="mallopt's limit is glibc's")
def test_after_free_large_blocks_at_once_a_freed_tensor_leaves_the_process_at_once():
    def released_mb(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", LARGE_BLOCKS_CHILD, mode], capture_output=True, text=True,
                              check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return int(done.stdout)

    assert released_mb("default") < 2  # the freed 8 MB stays resident in the heap
    assert released_mb("fixed") >= 7  # its own mapping: unmapped when freed


def test_the_heap_is_left_alone_on_a_gpu():
    assert HeapTrimmer(torch.device("cuda")).trim is None
