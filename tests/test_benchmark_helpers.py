"""The benchmark's own arithmetic and bookkeeping (the benchmark itself is run by hand, not timed here)."""

from __future__ import annotations

import csv
import json
import random
import sys

import pytest

from conftest import ROOT, sample_rows, write_csv

sys.path.insert(0, str(ROOT / "benchmarks"))

import hardware_limit  # noqa: E402
import run_benchmark  # noqa: E402
from children import run_child  # noqa: E402


def test_backbone_cost_counts_the_linear_weights_every_token_meets(tiny_model):
    cost = hardware_limit.backbone_cost(tiny_model)
    # 2 layers x (Q, K, V, output: 4 x 32x32, feed-forward: 32x64 + 64x32); embeddings and pooler left out
    assert cost.linear_params == 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert (cost.layers, cost.hidden) == (2, 32)
    assert cost.forward_flops(10) == 2 * 16384 * 10 + 2 * 4 * 10 * 10 * 32
    assert cost.train_flops(10) == 3 * cost.forward_flops(10)


def test_peer_split_gives_mtl_the_rows_the_peer_scripts_validate_on(tmp_path):
    rows = sample_rows()
    data = write_csv(tmp_path / "data.csv", rows)
    train, val, tasks, texts = run_benchmark.peer_split(data, tmp_path)

    shuffled = list(rows)  # what seed_loop.py and hf_trainer_peer.py do
    random.seed(0)
    random.shuffle(shuffled)
    n_val = int(len(rows) * 0.2)
    read = lambda p: list(csv.reader(p.open(encoding="utf-8")))  # noqa: E731
    assert read(val)[1:] == shuffled[:n_val]
    assert read(train)[1:] == shuffled[n_val:]
    assert tasks == ["class_label", "sentiment_label"]
    assert len(texts) == len(rows)


def test_write_texts_repeats_the_texts_to_the_number_of_lines(tmp_path):
    path = run_benchmark.write_texts(["a b", "c"], 5, tmp_path / "t.txt")
    assert path.read_text(encoding="utf-8").splitlines() == ["a b", "c", "a b", "c", "a b"]


def test_run_child_reports_the_childs_own_peak_memory():
    # both live past the first poll; this test process (with torch loaded) is larger than the small one
    big = run_child([sys.executable, "-c", "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)"])
    small = run_child([sys.executable, "-c", "import time; print('hi'); time.sleep(0.5)"])
    assert big.returncode == 0 and small.stdout.strip() == "hi"
    assert big.max_rss_mb > 300 > small.max_rss_mb  # per child, not the largest child so far


def test_quality_scores_baselines_of_every_task_type_on_the_test_rows(tmp_path):
    pytest.importorskip("sklearn")
    import quality

    words = ["good", "bad", "fine", "poor", "great", "awful"]
    rng = random.Random(0)

    def rows(n):
        out = []
        for _ in range(n):
            picked = rng.sample(words, 2)
            good = sum(w in ("good", "fine", "great") for w in picked)
            out.append([" ".join(picked), "|".join(sorted(picked)), f"{good + rng.random():.2f}",
                        "up" if good else "down"])
        return out

    header = ["text", "words", "score", "mood"]
    data, val, test = (write_csv(tmp_path / f"{n}.csv", rows(k), header)
                       for n, k in (("train", 120), ("val", 40), ("test", 40)))
    result = quality.typed_baselines(data, val, test, "text", [], {"score": "regression"})
    tasks = result["tasks"]
    assert {t: v["type"] for t, v in tasks.items()} == {"words": "multilabel", "score": "regression",
                                                         "mood": "classification"}
    assert (result["train_rows"], result["val_rows"], result["test_rows"]) == (120, 40, 40)
    assert tasks["words"]["tfidf_tuned"]["macro_f1"] > tasks["words"]["constant"]["macro_f1"]
    assert tasks["score"]["tfidf"]["rmse"] < tasks["score"]["constant"]["rmse"]
    assert tasks["mood"]["tfidf"]["accuracy"] > tasks["mood"]["constant"]["accuracy"]
    assert "| score | regression | rmse |" in quality.typed_table({"baseline": result, "mtl": {}})


def test_the_tables_give_whole_process_figures_beside_the_compute_ones(tmp_path, capsys):
    peer = run_benchmark.Row("seed_loop (plain loop)", 50.0, 40.0, "fp32", {"class_label": 0.9}, wall_s=100.0)
    mtl = run_benchmark.Row("mtl train (default)", 150.0, 120.0, "bf16", {"class_label": 0.92}, wall_s=33.3,
                            first_s=4.25)
    st = run_benchmark.Row("SentenceTransformer.encode", 300.0, 200.0, "fp32")
    cli = run_benchmark.Row("mtl predict (CLI, end to end)", None, 500.0, "bf16", first_s=1.5)
    results = {"setup": "setup line", "matmul_gflops": {"fp32": 100.0, "bf16": 400.0}, "mean_tokens": 17.0,
               "forward_gflop": 0.5, "train_gflop": 1.0, "import_torch_s": 1.25,
               "train": [peer.__dict__, mtl.__dict__], "predict": [st.__dict__, cli.__dict__], "memory": []}
    run_benchmark.report(results, tmp_path / "bench.md")
    tables = (tmp_path / "bench.md").read_text()
    training = next(line for line in tables.splitlines() if line.startswith("| mtl train (default)"))
    # compute 150 against 50: 3.00x; whole process 120 against 40: 3.00x; 33.3 s; first step 4.25 s
    assert "| 150.0 | 3.00x | 38% | 120.0 | 3.00x | 33.3 | 4.25 |" in training
    predicting = next(line for line in tables.splitlines() if line.startswith("| mtl predict (CLI"))
    assert "| 500.0 | 2.50x | 1.50 |" in predicting
    assert '`python -c "import torch"`: 1.25 s' in tables
    assert json.loads((tmp_path / "bench.json").read_text())["train"][1]["first_s"] == 4.25
