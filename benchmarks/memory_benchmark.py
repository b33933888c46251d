"""Memory and time of `mtl train`'s data stage, and of `mtl predict`, on large generated inputs.

    python benchmarks/memory_benchmark.py --rows 100000 1000000
    python benchmarks/memory_benchmark.py --rows 100000 1000000 --predict runs/latest

For each size: a CSV of that many short generated sentences with two label columns, then, in a
fresh child process, exactly what `mtl train` does before its first step with the data: read and
check the CSV, split it, choose --max-length auto, tokenize both parts. The child reports its
resident memory (VmRSS) after imports (the baseline), after reading and splitting, and after
tokenizing, its peak (VmHWM) at the end of the data stage (read + split) and at the end, and the
seconds each stage took. ``--skip-tokenize`` measures the data stage alone.

``--predict RUN`` measures `mtl predict RUN --input lines.txt --output out.csv` instead, on a text
file of that many generated sentences, one per line: the peak resident memory of that process
(its own VmHWM, as benchmarks/children.py measures it), whole-process seconds, and lines per second.

``--train DATA`` measures one epoch of `mtl train` instead, on the first ``--train-rows`` rows of DATA
(validated on the next 500), once as it is and once with --gradient-checkpointing: each process's
peak resident memory, whole-process and training seconds, sentences per second, and the validation
loss (which should agree: checkpointing changes the memory, not the numbers).

    OMP_NUM_THREADS=1 python benchmarks/memory_benchmark.py --train ../shared/data/womens_clothing_reviews.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from children import run_child  # noqa: E402

WORDS = ("battery screen soup waiter hotel flight price delivery service quality room staff food phone "
         "laptop beach city train late early broken great terrible fine cold warm slow fast cheap").split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))).capitalize() + "."


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "class_label", "sentiment_label"])
        for _ in range(rows):
            writer.writerow([sentence(rng), rng.choice(("a", "b", "c")), rng.choice(("neg", "neu", "pos"))])


def write_lines(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as f:
        f.writelines(sentence(rng) + "\n" for _ in range(rows))


def measure_predict(run: str, rows: int, tmp: Path) -> None:
    """One `mtl predict` process on ``rows`` generated lines: its peak RSS and whole-process time."""
    lines, out = tmp / f"{rows}.txt", tmp / f"{rows}.csv"
    write_lines(lines, rows)
    done = run_child([sys.executable, "-m", "mtlcli", "predict", run, "--input", str(lines), "--output", str(out)])
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
        return
    with out.open(encoding="utf-8") as f:
        written = sum(1 for _ in f) - 1
    print(f"| {rows:,} | {written:,} | {done.max_rss_mb:.0f} | {done.wall_s:.1f} | {written / done.wall_s:.0f} |",
          flush=True)


def measure_training(data: Path, rows: int, extra: list[str], tmp: Path, parallel: bool = False) -> None:
    """One epoch of `mtl train` on ``rows`` rows of ``data``, without and with gradient checkpointing."""
    with data.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        kept = [row for _, row in zip(range(rows + 500), reader)]
    train, val = tmp / "train.csv", tmp / "val.csv"
    for path, part in ((train, kept[:rows]), (val, kept[rows:])):
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *part])
    print("| training | peak RSS MB | whole process s | train s | train sents/s | val_loss |")
    print("|---|---|---|---|---|---|")
    modes = (("as it is", []), ("--gradient-checkpointing", ["--gradient-checkpointing"]))

    def measure(mode: tuple[str, list[str]]):
        name, flags = mode
        run = re.sub(r"\W+", "-", name).strip("-")
        return name, run, run_child([sys.executable, "-m", "mtlcli", "train", str(train), "--val", str(val),
                                     "--epochs", "1", "--out", str(tmp / "runs"), "--name", run, "--quiet",
                                     *flags, *extra])

    # --parallel: both at once, each its own process (peak memory is per process; the seconds then share the cores)
    with ThreadPoolExecutor(len(modes) if parallel else 1) as pool:
        measured = list(pool.map(measure, modes))
    for name, run, done in measured:
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            continue
        (row,) = [json.loads(line) for line in (tmp / "runs" / run / "metrics.jsonl").read_text().splitlines()]
        print(f"| {name} | {done.max_rss_mb:.0f} | {done.wall_s:.0f} | {row['train_seconds']:.0f} | "
              f"{row['train_sentences_per_s']:.1f} | {row['val_loss']:.4f} |", flush=True)


def child(path: str, tokenize: bool) -> None:
    def rss() -> dict[str, float]:
        found = {}
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) / 1024
        return found

    from mtlcli.data.batching import choose_max_length, encode
    from mtlcli.model.network import default_model_path, load_tokenizer
    from mtlcli.tasks.columns import encode_targets, load_train_val

    tokenizer = load_tokenizer(default_model_path())
    out = {"baseline_mb": rss()["VmRSS"]}
    t0 = time.perf_counter()
    train, val, tasks, _ = load_train_val(path, None, "sentence", [], 0.2, 42)
    after_read = rss()
    out.update(read_split_s=time.perf_counter() - t0, after_read_mb=after_read["VmRSS"], read_peak_mb=after_read["VmHWM"],
               rows=len(train) + len(val))
    if not tokenize:
        print(json.dumps(out))
        return
    t1 = time.perf_counter()
    max_length = choose_max_length(tokenizer, train.texts, 512, 42)
    train_set = encode(tokenizer, train.texts, encode_targets(train, tasks), max_length)
    val_set = encode(tokenizer, val.texts, encode_targets(val, tasks), max_length)
    out["tokenize_s"], out["after_tokenize_mb"] = time.perf_counter() - t1, rss()["VmRSS"]
    out.update(peak_mb=rss()["VmHWM"], tokens=int(train_set.lengths.sum() + val_set.lengths.sum()),
               token_bytes=int(train_set.ids.nbytes + val_set.ids.nbytes), max_length=max_length)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--skip-tokenize", action="store_true", help="measure reading and splitting only")
    parser.add_argument("--predict", metavar="RUN", help="measure `mtl predict RUN` on that many lines instead")
    parser.add_argument("--train", metavar="DATA", type=Path,
                        help="measure one epoch of `mtl train` on DATA with and without --gradient-checkpointing")
    parser.add_argument("--train-rows", type=int, default=6000, help="training rows of DATA for --train")
    parser.add_argument("--parallel", action="store_true", help="with --train: run both epochs at once")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()  # with --train, the rest goes to `mtl train` (--batch-size 64, ...)
    if extra and not args.train:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.train:
        with tempfile.TemporaryDirectory() as tmp:
            measure_training(args.train, args.train_rows, extra, Path(tmp), args.parallel)
        return
    if args.child:
        child(args.child, not args.skip_tokenize)
        return
    if args.predict:
        print("| lines | predictions written | peak RSS MB | whole process s | lines/s |")
        print("|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for rows in args.rows:
                measure_predict(args.predict, rows, Path(tmp))
        return
    print("| rows | tokens | baseline MB | after read + split | data-stage peak - baseline | after tokenizing | peak MB | "
          "peak - baseline | token ids MB | read s | tokenize s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"{rows}.csv"
            write_csv(path, rows)
            command = [sys.executable, __file__, "--child", str(path)] + (["--skip-tokenize"] if args.skip_tokenize else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            data_peak = r["read_peak_mb"] - r["baseline_mb"]
            if args.skip_tokenize:
                print(f"| {rows:,} | - | {r['baseline_mb']:.0f} | {r['after_read_mb']:.0f} | {data_peak:.0f} | - | "
                      f"{r['read_peak_mb']:.0f} | - | - | {r['read_split_s']:.1f} | - |", flush=True)
                continue
            print(f"| {rows:,} | {r['tokens']:,} | {r['baseline_mb']:.0f} | {r['after_read_mb']:.0f} | {data_peak:.0f} | "
                  f"{r['after_tokenize_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['baseline_mb']:.0f} | "
                  f"{r['token_bytes'] / 2**20:.0f} | {r['read_split_s']:.1f} | {r['tokenize_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
