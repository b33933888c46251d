"""Ctrl-C into `mtl train --nproc 2` at random moments on a loaded machine: does every run stop cleanly?

    python benchmarks/interrupt_load.py --tries 30 --busy 3 --out benchmarks/results/interrupt-load.json

Starts --busy processes that spin on the CPU (three on two cores put the load average near 5), then
--tries times: a tiny random BERT trains 6 epochs of 120 rows with two processes (gloo), and once
epoch 1 is logged, SIGINT goes to the launcher's group (as Ctrl-C in a terminal sends it) after a
random wait of 0 to --spread seconds, so it lands in a batch, in validation, while last.pt or the
summary is written, or after the last epoch. A try is clean when the run

- exits 130, says once how to go on (`mtl train --resume RUN`) and `RUN` holds checkpoints/last.pt, or
- had already finished: exits 0 with all 6 epochs in summary.json,

and its output holds no traceback, no C++ abort ("terminate called ...") and no "error:" line.
Every failed try's output is kept beside the results.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 6


def tiny_model(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a vocabulary from the sample's words."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    with open(ROOT / "data" / "sample.csv", encoding="utf-8") as f:
        words = sorted({w.strip(string.punctuation).lower() for row in csv.DictReader(f) for w in row["sentence"].split()})
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *filter(None, words)]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(folder))
    return folder


def one_try(args: list[str], out: Path, wait: float, env: dict[str, str]) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "mtlcli", "train", *args, "--nproc", "2", "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(out.glob("*/metrics.jsonl")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(wait)
    sent = proc.poll() is None
    if sent:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return {"code": None, "clean": False, "why": "hung", "stderr": stderr}
    text = stdout + stderr
    problems = [p for p in ("Traceback", "terminate called", "error:") if p in text]
    runs = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()] if out.is_dir() else []
    summary = json.loads((runs[0] / "summary.json").read_text()) if runs and (runs[0] / "summary.json").is_file() else {}
    resumes = re.findall(r"mtl train --resume (\S+)", text)
    if proc.returncode == 130:
        resumable = len(resumes) == 1 and (Path(resumes[0]) / "checkpoints" / "last.pt").is_file()
        outcome, clean = "stopped", resumable and not problems
    else:
        whole = proc.returncode == 0 and summary.get("epochs_run") == EPOCHS and not summary.get("interrupted")
        outcome, clean = "finished", whole and not problems
    return {"code": proc.returncode, "outcome": outcome, "clean": clean, "signal_sent": sent,
            "wait_s": round(wait, 3), "problems": problems, "stderr": stderr}


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=30)
    parser.add_argument("--busy", type=int, default=3, help="CPU-bound processes to run beside the tries")
    parser.add_argument("--spread", type=float, default=1.5, help="the signal comes 0 to this many seconds after epoch 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (failed tries' output beside it)")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mtl-interrupt-"))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(opts.busy)]
    try:
        model = tiny_model(work / "tiny")
        rows = list(csv.reader(open(ROOT / "data" / "sample.csv", encoding="utf-8")))
        with open(work / "data.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows[:151])
        args = [str(work / "data.csv"), "--model", str(model), "--epochs", str(EPOCHS), "--patience", str(EPOCHS),
                "--batch-size", "12", "--val-split", "0.2", "--precision", "fp32", "--seed", "3", "--quiet"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
               "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        rng = random.Random(opts.seed)
        tries, loads = [], []
        for i in range(opts.tries):
            result = one_try(args, work / f"try{i}", rng.uniform(0, opts.spread), env)
            loads.append(load_average())
            tries.append(result)
            print(f"try {i + 1:2d}: exit {result['code']}, {result.get('outcome')}, "
                  f"{'clean' if result['clean'] else 'NOT CLEAN ' + ', '.join(result.get('problems', []))}, "
                  f"load {loads[-1]:.1f}", flush=True)
            shutil.rmtree(work / f"try{i}", ignore_errors=True)
    finally:
        for p in busy:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)
    clean = sum(t["clean"] for t in tries)
    report = {"tries": len(tries), "clean": clean, "stopped": sum(t.get("outcome") == "stopped" for t in tries),
              "finished_before_the_signal": sum(t.get("outcome") == "finished" for t in tries),
              "busy_processes": opts.busy, "cores": os.cpu_count(),
              "load_average_1min": {"min": round(min(loads), 2), "mean": round(sum(loads) / len(loads), 2),
                                    "max": round(max(loads), 2)},
              "failed": [{k: v for k, v in t.items()} for t in tries if not t["clean"]]}
    print(json.dumps({k: v for k, v in report.items() if k != "failed"}, indent=2))
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if clean == len(tries) else 1)


if __name__ == "__main__":
    main()
