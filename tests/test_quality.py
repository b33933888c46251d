"""Good models by default: --max-length auto, class weights, label smoothing, the majority-class check."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from conftest import sample_rows, write_csv
from mtlcli.data.batching import choose_max_length, tokenize
from mtlcli.model.checkpoint import load_checkpoint
from mtlcli.data.tables import MISSING
from mtlcli.model.losses import Objective, task_losses
from mtlcli.model.network import load_tokenizer
from mtlcli.scoring.quality import check_task
from mtlcli.tasks.base import Task
from mtlcli.tasks.columns import load_train_val, task_type

CLASSES = task_type("classification")


def test_auto_max_length_covers_95_percent_of_texts_rounded_up_to_8(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    texts = [" ".join(["a"] * n) for n in range(1, 101)]  # 3 to 102 tokens with [CLS] and [SEP]
    _, lengths = tokenize(tokenizer, texts, 512)
    chosen = choose_max_length(tokenizer, texts, 256, seed=0)
    assert chosen % 8 == 0
    assert np.mean(lengths <= chosen) >= 0.95
    assert np.mean(lengths <= chosen - 8) < 0.95  # the smallest such multiple of 8
    assert choose_max_length(tokenizer, texts, 40, seed=0) == 40  # never beyond the model's limit


def test_train_resolves_auto_prints_it_and_eval_cuts_texts_alike(cli, small_csv, train_args, tmp_path):
    args = [a for a in train_args if a != "--quiet"]
    result = cli("train", small_csv, *args, "--name", "auto")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "auto"
    summary = json.loads((run / "summary.json").read_text())
    chosen = summary["max_length"]
    assert isinstance(chosen, int) and chosen % 8 == 0 and chosen < 128
    assert f"Max length {chosen} tokens (auto" in result.output
    assert "max_length: auto" in (run / "config.yaml").read_text()  # repeats as auto elsewhere
    ckpt = load_checkpoint(run / summary["best_checkpoint"])
    assert ckpt["config"]["max_length"] == chosen  # what eval and predict cut texts to

    fixed = cli("train", small_csv, *train_args, "--name", "fixed", "--max-length", "24")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads((tmp_path / "runs" / "fixed" / "summary.json").read_text())["max_length"] == 24
    bad = cli("train", small_csv, *train_args, "--max-length", "long")
    assert bad.exit_code == 2 and "--max-length long: expected a number of tokens or auto" in bad.output


def test_balanced_weights_follow_the_training_rows():
    y = np.array([0, 0, 0, 1, MISSING, 2, 2, 0])
    w = CLASSES.class_weights(Task("t", "classification", ["a", "b", "c"]), y)
    assert w == pytest.approx([7 / (3 * 4), 7 / (3 * 1), 7 / (3 * 2)])
    counts = np.bincount(y[y != MISSING])
    assert float(np.dot(counts, w)) == pytest.approx(len(y[y != MISSING]))  # average weight over rows is 1


def test_class_weights_and_label_smoothing_change_the_loss():
    logits = {"t": torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])}
    labels = {"t": torch.tensor([0, 1, MISSING])}
    tasks = {"t": Task("t", "classification", ["a", "b"])}
    plain = task_losses(logits, labels, tasks)["t"][0]
    expected = torch.nn.functional.cross_entropy(logits["t"][:2], labels["t"][:2], reduction="sum")
    assert plain == pytest.approx(float(expected))
    weighted = task_losses(logits, labels, tasks, Objective({"t": [1.0, 3.0]}))["t"][0]
    each = torch.nn.functional.cross_entropy(logits["t"][:2], labels["t"][:2], reduction="none")
    assert weighted == pytest.approx(float(each[0] + 3 * each[1]))
    smoothed = task_losses(logits, labels, tasks, Objective(label_smoothing=0.2))["t"][0]
    assert smoothed > plain


def test_class_weight_is_saved_with_the_run_and_eval_scores_with_it(cli, tmp_path, train_args):
    rows = sample_rows(150)
    rows = [r for r in rows if r[2] != "neutral"] + [r for r in rows if r[2] == "neutral"][:6]  # a rare label
    data = write_csv(tmp_path / "rare.csv", rows)
    result = cli("train", data, *train_args, "--name", "cw", "--class-weight", "sentiment_label=balanced",
                 "--label-smoothing", "0.1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "cw"
    summary = json.loads((run / "summary.json").read_text())
    weights = summary["class_weights"]
    assert list(weights) == ["sentiment_label"]
    neutral = json.loads((run / "labels.json").read_text())["sentiment_label"].index("neutral")
    assert weights["sentiment_label"][neutral] == max(weights["sentiment_label"]) > 3
    ckpt = load_checkpoint(run / summary["best_checkpoint"])
    assert ckpt["objective"] == {"class_weights": weights, "label_smoothing": 0.1}
    # eval on the run's own validation rows repeats the logged validation loss: same objective
    train_t, val_t, _, _ = load_train_val(str(data), None, "sentence", [], 0.2, 42)
    val_csv = write_csv(tmp_path / "val.csv", [[t, c, s] for t, c, s in zip(val_t.texts, *val_t.labels.values())])
    scored = cli("eval", run, val_csv, "--json")
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.stdout)
    best = summary["best_metrics"]
    assert report["tasks"]["sentiment_label"]["loss"] == pytest.approx(best["val_sentiment_label_loss"], rel=1e-5)

    every = cli("train", data, *train_args, "--name", "cw-all", "--class-weight", "balanced")
    assert every.exit_code == 0, every.output
    assert set(json.loads((tmp_path / "runs" / "cw-all" / "summary.json").read_text())["class_weights"]) == {
        "class_label", "sentiment_label"}
    bad = cli("train", data, *train_args, "--class-weight", "sentiment_label=heavy")
    assert bad.exit_code == 2 and "--class-weight sentiment_label=heavy: must be auto or none or balanced" in bad.output
    missing = cli("train", data, *train_args, "--class-weight", "mood=balanced")
    assert missing.exit_code == 2 and "--class-weight mood=...: no task 'mood'" in missing.output


def test_majority_baseline_and_the_learned_check():
    y = np.array([0] * 8 + [1] * 2)
    task = Task("t", "classification", ["a", "b"])
    base = CLASSES.baseline(task, y)
    assert base["label"] == 0 and base["accuracy"] == 0.8
    assert base["macro_f1"] == pytest.approx((2 * 0.8 / 1.8) / 2)
    stuck = check_task(task, {"accuracy": 0.8, "macro_f1": base["macro_f1"]}, y)
    assert not stuck["learned"] and "task 't' has not clearly learned" in stuck["warning"]
    assert "always answering 'a'" in stuck["warning"] and "--class-weight t=balanced" in stuck["warning"]
    assert base["chance_macro_f1"] == 0.5
    guessing = check_task(task, {"accuracy": 0.8, "macro_f1": 0.55}, y)  # beats the constant answer's F1, not random guessing's
    assert not guessing["learned"] and "random guesses a macro-F1 of 0.500" in guessing["warning"]
    good = check_task(task, {"accuracy": 0.95, "macro_f1": 0.9}, y)
    assert good["learned"] and "warning" not in good


def test_a_task_that_learns_nothing_is_named_in_a_warning(cli, tmp_path, train_args):
    """Real training: 'noise' is a label drawn at random for each row, so nothing can be learned.
    (That a task which has learned gets no warning is checked on the numbers in the test above.)"""
    rng = random.Random(0)
    rows = [[text, topic, rng.choice(["x", "y", "z"])] for text, topic, _ in sample_rows(240)]
    data = write_csv(tmp_path / "noise.csv", rows, ["sentence", "class_label", "noise"])
    args = [a for a in train_args if a != "--quiet"]
    result = cli("train", data, *args, "--name", "noise", "--max-length", "32")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "noise" / "summary.json").read_text())
    noise = summary["task_checks"]["noise"]
    assert not noise["learned"] and noise["majority_label"] in ("x", "y", "z")
    assert noise["macro_f1"] < noise["majority_macro_f1"] + 0.10 or noise["accuracy"] < noise["majority_accuracy"]
    assert [w for w in summary["warnings"] if "'noise'" in w] == [noise["warning"]]
    assert "task 'noise' has not clearly learned" in noise["warning"]
    assert "warning: task 'noise' has not clearly learned" in " ".join(result.output.split())
    # new rows with new random labels: eval names the task too
    held_out = [[text, topic, rng.choice(["x", "y", "z"])] for text, topic, _ in sample_rows()[240:]]
    scored = cli("eval", tmp_path / "runs" / "noise", write_csv(tmp_path / "new.csv", held_out,
                                                                ["sentence", "class_label", "noise"]))
    assert scored.exit_code == 0
    assert "warning: task 'noise'" in " ".join(scored.stderr.split())


def test_a_label_only_in_the_held_out_rows_goes_back_to_training(tmp_path):
    from mtlcli.data.tables import read_table, stratified_split

    rows = sample_rows(100)
    rows[7][2] = "furious"  # one row of a label no other row has (file line 9)
    data = write_csv(tmp_path / "rare.csv", rows)
    seed = next(s for s in range(50) if 9 in stratified_split(read_table(data, "sentence", []), 0.5, s)[1].lines)
    train, val, tasks, _ = load_train_val(str(data), None, "sentence", [], 0.5, seed)
    assert "furious" in tasks["sentiment_label"].labels
    assert "furious" in train.labels["sentiment_label"] and "furious" not in val.labels["sentiment_label"]
    assert len(train) + len(val) == 100 and train.lines.tolist() == sorted(train.lines.tolist())
