"""One predict measurement in its own process, so its peak memory is its own.

    python benchmarks/predict_worker.py mtl RUN_DIR TEXTS.txt [--batch-size 64] [--precision int8]
    python benchmarks/predict_worker.py st MODEL_DIR TEXTS.txt [--batch-size 64] [--max-length 128]

TEXTS.txt has one text per line. ``mtl`` streams the file through ``mtlcli.inference.loaded_run.predict_batches``
in chunks, as ``mtl predict`` does (so memory stays bounded on any length); ``st`` runs
``SentenceTransformer.encode`` on all the texts. Prints one JSON line: rows, load_s, predict_s,
sents_per_s (model loading excluded).
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import islice

CHUNK = 4096  # texts per predict_batches call, as `mtl predict` reads them


def read_chunks(path: str, size: int):
    with open(path, encoding="utf-8") as f:
        lines = (line.rstrip("\n") for line in f)
        while chunk := list(islice(lines, size)):
            yield chunk


def run_mtl(run_dir: str, texts_path: str, batch_size: int, precision: str = "auto") -> dict:
    from mtlcli.inference.loaded_run import load_run, predict_batches

    t0 = time.perf_counter()
    loaded = load_run(run_dir, precision=precision)
    t1 = time.perf_counter()
    rows = 0
    for chunk in read_chunks(texts_path, CHUNK):
        out = predict_batches(loaded, chunk, batch_size)
        rows += len(next(iter(out.values())))
    t2 = time.perf_counter()
    return {"rows": rows, "load_s": t1 - t0, "predict_s": t2 - t1, "precision": loaded.precision}


def run_st(model_dir: str, texts_path: str, batch_size: int, max_length: int) -> dict:
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = max_length
    with open(texts_path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    t1 = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    t2 = time.perf_counter()
    return {"rows": len(vectors), "load_s": t1 - t0, "predict_s": t2 - t1, "precision": "fp32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["mtl", "st"])
    parser.add_argument("model", help="run folder (mtl) or model folder (st)")
    parser.add_argument("texts", help="one text per line")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128, help="st only; mtl uses the run's max_length")
    parser.add_argument("--precision", default="auto", help="mtl only: as `mtl predict --precision` (auto: bf16 where native)")
    args = parser.parse_args()
    if args.kind == "mtl":
        result = run_mtl(args.model, args.texts, args.batch_size, args.precision)
    else:
        result = run_st(args.model, args.texts, args.batch_size, args.max_length)
    result["sents_per_s"] = result["rows"] / result["predict_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
