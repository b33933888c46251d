"""ONNX Runtime against PyTorch for prediction on the CPU, and the ONNX export's agreement with `mtl predict`.

    python benchmarks/onnx_benchmark.py RUN --data ../shared/data/sentiment_labelled_sentences.csv [--out onnx.json]

Exports RUN to ONNX (into a temporary folder unless --export DIR is given), then in this one
process, one after the other on the same texts (the CSV's text column) and batch size: PyTorch
fp32, PyTorch at the default precision (bf16 where the CPU runs it natively), and ONNX Runtime
(fp32). Each predictor runs 256 texts untimed, then --repeats timed passes over all; the best pass
counts. Where the default precision is fp32 (no native bf16), the default is not run twice. Then
it compares the ONNX labels and probabilities with PyTorch fp32 on every text, and times
`mtl predict --input` end to end (a new process each) on the run and on the export.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def read_texts(path: str, column: str) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [row[column].strip() for row in csv.DictReader(f) if row[column].strip()]


def timed(model, texts: list[str], batch_size: int, repeats: int) -> tuple[float, dict]:
    model.probs(texts[:256], batch_size)  # warm-up: allocator, ONNX Runtime's first-run set-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.probs(texts, batch_size)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best, out


def cli_seconds(folder: str, texts_file: str, precision: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mtlcli", "predict", folder, "--input", texts_file, "--format", "jsonl",
                    "--output", os.devnull, "--precision", precision], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--data", required=True)
    parser.add_argument("--export", help="an existing ONNX export of RUN (default: export to a temporary folder)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="also write the figures here as JSON")
    args = parser.parse_args()

    import numpy as np
    import torch

    from mtlcli import Model, export

    tmp = tempfile.TemporaryDirectory()
    folder = args.export or str(Path(tmp.name) / "onnx")
    if not args.export:
        t0 = time.perf_counter()
        export.export(args.run, "onnx", folder)
        print(f"exported to ONNX in {time.perf_counter() - t0:.1f} s", flush=True)
    fp32 = Model.load(args.run, device="cpu", precision="fp32")
    texts = read_texts(args.data, fp32.config.get("text_column", "sentence"))
    figures: dict = {"texts": len(texts), "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
                     "load1_before": os.getloadavg()[0], "sents_per_s": {}}
    results = {}
    from mtlcli.runtime.hardware import resolve_precision

    default = resolve_precision("auto", torch.device("cpu"))
    for name, load in [("pytorch fp32", lambda: fp32),
                       ("pytorch default", lambda: Model.load(args.run, device="cpu")),
                       ("onnxruntime fp32", lambda: Model.load(folder, device="cpu"))]:
        if name == "pytorch default" and default == "fp32":
            continue
        model = load()
        speed, results[name] = timed(model, texts, args.batch_size, args.repeats)
        figures["sents_per_s"][f"{name} ({model.precision})"] = round(speed, 1)
        print(f"{name:18s} {model.precision:5s} {speed:8.1f} sentences/s", flush=True)
    ref, got = results["pytorch fp32"], results["onnxruntime fp32"]
    figures["agreement_with_pytorch_fp32"] = {
        task: {"labels_equal": int((ref[task].argmax(1) == got[task].argmax(1)).sum()), "of": len(texts),
               "max_abs_prob_diff": float(np.abs(ref[task] - got[task]).max())} for task in fp32.tasks}
    print(json.dumps(figures["agreement_with_pytorch_fp32"]), flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    figures["mtl_predict_end_to_end_s"] = {f"run, default precision ({default})": round(cli_seconds(args.run, f.name, "auto"), 1)}
    if default != "fp32":
        figures["mtl_predict_end_to_end_s"]["run, fp32"] = round(cli_seconds(args.run, f.name, "fp32"), 1)
    figures["mtl_predict_end_to_end_s"]["onnx export"] = round(cli_seconds(folder, f.name, "auto"), 1)
    os.unlink(f.name)
    figures["load1_after"] = os.getloadavg()[0]
    print(json.dumps(figures["mtl_predict_end_to_end_s"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
