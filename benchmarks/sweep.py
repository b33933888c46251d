"""Train one setting after another on several data sets and tabulate the validation scores.

    python benchmarks/sweep.py --data ../shared/data/sentiment_labelled_sentences.csv data/slurp.csv \
        --setting "old=--lr-backbone 1e-5 --lr-heads 1e-4 --max-length 128 --epochs 3" \
        --setting "5e-5/1e-3=--lr-backbone 5e-5 --lr-heads 1e-3 --epochs 3" --out sweep.jsonl

Each (data set, setting) is one `mtl train` process with default settings plus the setting's flags,
on the data set's own validation split. One JSON line per run is appended to --out as soon as it
ends (so a long sweep loses nothing when stopped): the best epoch's validation accuracy and macro-F1
per task, epochs run, whole-process wall time. --jobs N runs N at a time. --table prints the Markdown table of a results file.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def train(data: Path, flags: list[str], work: Path, name: str) -> dict:
    argv = [sys.executable, "-m", "mtlcli", "train", str(data), *flags, "--out", str(work), "--name", name, "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-3:], "wall_s": round(wall, 1)}
    summary = json.loads((work / name / "summary.json").read_text())
    best = summary["best_metrics"]
    tasks = sorted({k[4:-4] for k in best if k.startswith("val_") and k.endswith("_acc")})
    return {"wall_s": round(wall, 1), "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
            "max_length": summary.get("max_length"), "warnings": summary.get("warnings", []),
            "tasks": {t: {"acc": round(best[f"val_{t}_acc"], 4), "f1": round(best[f"val_{t}_f1"], 4)} for t in tasks},
            "sentences_per_s": best.get("train_sentences_per_s")}


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    order = {name: i for i, name in enumerate(dict.fromkeys(r["setting"] for r in rows))}
    rows.sort(key=lambda r: (r["data"], order[r["setting"]], r.get("seed", 0)))  # runs end in any order
    lines = ["| data set | setting | " + "task: acc / macro-F1 | " * 3 + "epochs (best) | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{t}: {v['acc']:.3f} / {v['f1']:.3f}" for t, v in r.get("tasks", {}).items()]
        cells += [""] * (3 - len(cells))
        if "error" in r:
            cells = ["error: " + " ".join(r["error"])[:80], "", ""]
        lines.append(f"| {r['data']} | {r['setting']} | " + " | ".join(cells[:3])
                     + f" | {r.get('epochs_run', '')} ({r.get('best_epoch', '')}) | {r['wall_s']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=Path, default=[])
    parser.add_argument("--setting", action="append", default=[], help="NAME=FLAGS (repeatable)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--out", type=Path, default=Path("sweep.jsonl"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (wall times then overlap: a GPU "
                        "shared by several small runs; leave 1 for timings)")
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if args.table:
        print(table(args.out))
        return
    jobs = [(data, *setting.partition("=")[::2], seed) for data in args.data for setting in args.setting
            for seed in args.seeds]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:

        def one(i: int) -> None:
            data, name, flags, seed = jobs[i]
            result = train(data, [*shlex.split(flags), "--seed", str(seed)], Path(tmp), f"{data.stem}-{i}")
            result = {"data": data.name, "setting": name, "seed": seed, **result}
            with lock, args.out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
            print(json.dumps(result), file=sys.stderr, flush=True)

        lock = threading.Lock()
        list(pool.map(one, range(len(jobs))))
    print(table(args.out))


if __name__ == "__main__":
    main()
