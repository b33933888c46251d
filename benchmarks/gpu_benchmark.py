"""mtl on one CUDA GPU against the usual ways, in one command, with no network.

    python benchmarks/gpu_benchmark.py --model MODEL_DIR --data womens_clothing_reviews.csv \
        --peers ../shared/bench/gpu --out gpu-bench.json

Runs one after the other, each as its own process and timed whole (start-up, imports, model load):
  1. the plain loop (peer_loop.py, bf16 autocast) and Hugging Face Trainer (hf_peer.py, bf16=True),
     one epoch at batch 32;
  2. `mtl train`, one epoch at batch 32 with default settings, on the peers' own train/validation split,
     and again with --no-cuda-graphs (what recording the steps as CUDA graphs gives);
  3. `SentenceTransformer.encode` (st_encode.py, fp16) and `mtl predict` on the data's texts repeated
     --predict-copies times (5 x the reviews: 112,510 texts).
Prints a table with whole-process times, sentences/s, validation accuracies and the ratios, and
writes every figure to --out. Takes about 3 minutes on an H200.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from children import run_child  # noqa: E402
from run_benchmark import peer_split, write_texts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def figures(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}


def run(name: str, argv: list[str], results: dict) -> dict | None:
    print(f"-- {name}", file=sys.stderr, flush=True)
    child = run_child(argv)
    entry = {"wall_s": round(child.wall_s, 2), "returncode": child.returncode}
    if child.returncode != 0:
        entry["error"] = (child.stderr or child.stdout).strip().splitlines()[-12:]
        print("\n".join(entry["error"]), file=sys.stderr)
    else:
        lines = child.stdout.strip().splitlines()
        entry.update(figures(lines[-1]) if lines else {})
    results[name] = entry
    return entry if child.returncode == 0 else None


def mtl_train(name: str, train: Path, val: Path, work: Path, args, results: dict, extra: list[str]) -> None:
    argv = [sys.executable, "-m", "mtlcli", "train", str(train), "--val", str(val), "--epochs", "1",
            "--batch-size", "32", "--model", args.model, "--out", str(work / "runs"), "--name", name, "--quiet", *extra]
    entry = run(name, argv, results)
    if entry is None:
        return
    folder = work / "runs" / name
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = rows[-1]
    entry.update({"train_sents_per_s": last["train_sentences_per_s"], "train_seconds": last["train_seconds"],
                  "epoch_seconds": last["seconds"],
                  "val_acc_class": last.get("val_class_label_acc"), "val_acc_sentiment": last.get("val_sentiment_label_acc"),
                  "run": str(folder)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (all-MiniLM-L6-v2), no download")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--peers", required=True, type=Path, help="folder with peer_loop.py, hf_peer.py, st_encode.py")
    parser.add_argument("--predict-copies", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("gpu-bench.json"))
    parser.add_argument("--work", type=Path, help="keep the runs and texts here (default: a temporary folder)")
    args = parser.parse_args()

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        train, val, tasks, texts = peer_split(args.data, work)
        run("peer_loop_bf16", [sys.executable, str(args.peers / "peer_loop.py"), str(args.data), args.model, "1", "bf16"], results)
        run("hf_trainer_bf16", [sys.executable, str(args.peers / "hf_peer.py"), str(args.data), args.model, "1"], results)
        mtl_train("mtl_train", train, val, work, args, results, [])
        mtl_train("mtl_train_no_graphs", train, val, work, args, results, ["--no-cuda-graphs"])
        corpus = write_texts(texts, len(texts) * args.predict_copies, work / "texts.txt")
        n = len(texts) * args.predict_copies
        run("st_encode_fp16", [sys.executable, str(args.peers / "st_encode.py"), str(corpus), args.model, "fp16"], results)
        if "run" in results.get("mtl_train", {}):
            out = work / "pred.csv"
            entry = run("mtl_predict", [sys.executable, "-m", "mtlcli", "predict", results["mtl_train"]["run"],
                                        "--input", str(corpus), "--output", str(out), "--format", "csv"], results)
            if entry is not None:
                entry["sents_per_s_whole"] = round(n / entry["wall_s"], 1)
        results["st_encode_fp16"]["sents_per_s_whole"] = round(n / results["st_encode_fp16"]["wall_s"], 1)
        results["predict_texts"] = n
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))


def table(r: dict) -> str:
    def get(name, key):
        v = r.get(name, {}).get(key)
        return "" if v is None else (f"{v:.4f}" if isinstance(v, float) and v < 1 else f"{v:,.1f}" if isinstance(v, float) else str(v))

    lines = ["| program | train sent/s | val acc class / sentiment | whole process s |", "|---|---|---|---|"]
    for name in ("peer_loop_bf16", "hf_trainer_bf16", "mtl_train", "mtl_train_no_graphs"):
        lines.append(f"| {name} | {get(name, 'train_sents_per_s')} | {get(name, 'val_acc_class')} / "
                     f"{get(name, 'val_acc_sentiment')} | {get(name, 'wall_s')} |")
    hf, mtl = r.get("hf_trainer_bf16", {}).get("train_sents_per_s"), r.get("mtl_train", {}).get("train_sents_per_s")
    if hf and mtl:
        lines.append(f"\nmtl train / HF Trainer: {mtl / hf:.2f}x training sentences/s")
    lines += ["", f"| prediction ({r.get('predict_texts')} texts) | whole process s | sent/s whole |", "|---|---|---|"]
    for name in ("st_encode_fp16", "mtl_predict"):
        lines.append(f"| {name} | {get(name, 'wall_s')} | {get(name, 'sents_per_s_whole')} |")
    st, mp = r.get("st_encode_fp16", {}).get("wall_s"), r.get("mtl_predict", {}).get("wall_s")
    if st and mp and r.get("mtl_predict", {}).get("returncode") == 0:
        lines.append(f"\nmtl predict / SentenceTransformer.encode: {st / mp:.2f}x (whole-process time)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
