"""Does a task's type change training speed? One task of each type on the same texts, same batches.

    python benchmarks/task_type_speed.py --data ../shared/data/goemotions_train.csv --rows 2048 \
        --rounds 3 --out benchmarks/results/task-type-speed-cpu.json

From the first --rows texts of --data (GoEmotions' layout: text, emotions, ekman) it writes one
table with three task columns: `single` (classification: the first Ekman label of each row),
`multi` (multi-label: the row's emotions) and `number` (regression: the text's word count). Then
`mtl train` runs once per type (--task that column, its --task-type, --epochs 1, default settings
otherwise, the same --val rows), one type after another, --rounds times over; each run's training
sentences/s is the loop's own figure (metrics.jsonl: training batches only, not start-up or
validation), and the CPU seconds of the whole process (start-up and validation are the same for
every type, so on a machine shared with other work, where wall times swing, the differences in CPU
seconds show what the type costs). The same texts and seed give the same batches, so only the head
and loss differ:
a linear head of 7, 28 or 1 outputs on the same 384-wide pooled vector, and cross-entropy, binary
cross-entropy or squared error. Interleaving the types round by round spreads a shared machine's
load changes over all three, each type leading a round in turn.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TYPES = {"classification": "single", "multilabel": "multi", "regression": "number"}


def write_table(data: Path, rows: int, val_rows: int, work: Path) -> tuple[Path, Path]:
    with open(data, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))[:rows + val_rows]
    table = [[r["text"], r["ekman"].split("|")[0], r["emotions"], f"{len(r['text'].split())}.0"] for r in records]
    seen = {label for r in table[:rows] for label in [r[1], *r[2].split("|")]}
    val = [r for r in table[rows:] if {r[1], *r[2].split("|")} <= seen]  # labels the training rows hold
    paths = work / "speed_train.csv", work / "speed_val.csv"
    for path, part in zip(paths, (table[:rows], val)):
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text", *TYPES.values()], *part])
    return paths


def train_speed(train: Path, val: Path, task_type: str, flags: list[str], work: Path, name: str) -> dict:
    column = TYPES[task_type]
    argv = [sys.executable, "-m", "mtlcli", "train", str(train), "--val", str(val), "--text-column", "text",
            "--task", column, "--task-type", f"{column}={task_type}", "--epochs", "1", *flags,
            "--out", str(work), "--name", name, "--quiet"]
    t0, cpu0 = time.perf_counter(), children_cpu_s()
    done = subprocess.run(argv, capture_output=True, text=True)
    cpu = children_cpu_s() - cpu0
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-3:]}
    row = json.loads((work / name / "metrics.jsonl").read_text().splitlines()[0])
    return {"train_sentences_per_s": row["train_sentences_per_s"], "train_seconds": row["train_seconds"],
            "whole_process_s": round(time.perf_counter() - t0, 1), "whole_process_cpu_s": round(cpu, 1)}


def children_cpu_s() -> float:
    """CPU seconds (user and system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a CSV with text, emotions and ekman columns")
    parser.add_argument("--rows", type=int, default=2048, help="training rows (batches of 32 by default)")
    parser.add_argument("--val-rows", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flags", default="", help="extra flags for mtl train")
    parser.add_argument("--out", type=Path, default=Path("task-type-speed.json"))
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {t: [] for t in TYPES}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, val = write_table(args.data, args.rows, args.val_rows, work)
        order = list(TYPES)
        for round_ in range(args.rounds):
            for task_type in order[round_ % 3:] + order[:round_ % 3]:  # each type leads a round in turn
                result = train_speed(train, val, task_type, args.flags.split(), work, f"{task_type}-{round_}")
                runs[task_type].append(result)
                print(json.dumps({"round": round_, "type": task_type, **result}), file=sys.stderr, flush=True)
    ok = {t: [r for r in rs if "train_sentences_per_s" in r] for t, rs in runs.items()}
    speed = {t: statistics.median(r["train_sentences_per_s"] for r in rs) for t, rs in ok.items() if rs}
    cpu = {t: statistics.median(r["whole_process_cpu_s"] for r in rs) for t, rs in ok.items() if rs}
    base = "classification" if "classification" in speed else None
    summary = {t: {"median_sentences_per_s": speed[t], "min": min(r["train_sentences_per_s"] for r in ok[t]),
                   "max": max(r["train_sentences_per_s"] for r in ok[t]), "median_cpu_s": cpu[t],
                   "vs_classification": round(speed[t] / speed[base], 3) if base else None,
                   "cpu_vs_classification": round(cpu[t] / cpu[base], 3) if base else None}
               for t in speed}
    args.out.write_text(json.dumps({"data": args.data.name, "rows": args.rows, "rounds": args.rounds,
                                    "flags": args.flags, "summary": summary, "runs": runs}, indent=2))
    print("| task type | training sentences/s, median (min-max) | vs classification | CPU s, whole process | vs "
          "classification |\n|---|---|---|---|---|")
    for t, s in summary.items():
        print(f"| {t} | {s['median_sentences_per_s']:.1f} ({s['min']:.1f}-{s['max']:.1f}) | {s['vs_classification']} "
              f"| {s['median_cpu_s']:.1f} | {s['cpu_vs_classification']} |")


if __name__ == "__main__":
    main()
