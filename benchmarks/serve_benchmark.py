"""Load benchmark for `mtl serve`: throughput and latency for concurrent clients, against `mtl predict`.

    python benchmarks/serve_benchmark.py RUN --data ../shared/data/sentiment_labelled_sentences.csv [--out serve.json]

Starts `mtl serve RUN` on 127.0.0.1 (a free port), then for each --texts-per-request K (default
1 and 32): --clients threads (default 16), each on its own keep-alive connection, send requests of
K texts (the CSV's texts in order, cycled) until --requests (per K) are answered. Reports requests/s,
texts/s, p50/p99 latency and errors; checks every label against `mtl predict` on the same texts
(same precision), and times `mtl predict --input` end to end on exactly the texts that were sent.
Clients and server share the machine.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def read_texts(path: str, column: str) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [row[column].strip() for row in csv.DictReader(f) if row[column].strip()]


def start_server(run: str, log: Path, args) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "mtlcli", "serve", run, "--port", "0", "--precision", args.precision,
                             "--batch-size", str(args.batch_size), "--max-texts", "1024"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    while proc.poll() is None:
        if m := re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text()):
            return proc, int(m.group(1))
        time.sleep(0.1)
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def load(port: int, texts: list[str], k: int, requests: int, clients: int) -> dict:
    jobs = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    labels: dict[int, list[dict]] = {}
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                i = next(jobs, None)
            if i is None:
                break
            batch = [texts[(i * k + j) % len(texts)] for j in range(k)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", json.dumps({"texts": batch}), {"Content-Type": "application/json"})
                response = conn.getresponse()
                body = json.loads(response.read())
                ok = response.status == 200
            except (OSError, http.client.HTTPException) as exc:
                ok, body = False, {"error": repr(exc)}
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            elapsed = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(elapsed)
                    labels[i] = body["predictions"]
                else:
                    errors.append(str(body.get("error")))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"texts_per_request": k, "requests": requests, "answered": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 1),
            "texts_per_s": round(len(latencies) * k / wall, 1), "p50_ms": round(pct(0.50), 1),
            "p99_ms": round(pct(0.99), 1), "_predictions": labels}


def mtl_predict(run: str, texts: list[str], precision: str, batch_size: int) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mtlcli", "predict", run, "--input", str(Path(tmp) / "texts.txt"),
                        "--output", str(Path(tmp) / "out.jsonl"), "--precision", precision,
                        "--batch-size", str(batch_size)], check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        lines = (Path(tmp) / "out.jsonl").read_text(encoding="utf-8").splitlines()
    return seconds, [json.loads(line) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder or export")
    parser.add_argument("--data", required=True)
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--texts-per-request", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, nargs="+", default=[2000, 500], help="per --texts-per-request")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out")
    args = parser.parse_args()

    texts = read_texts(args.data, args.text_column)
    results = {"clients": args.clients, "load1_before": os.getloadavg()[0], "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc, port = start_server(args.run, log, args)
        try:
            for k, n in zip(args.texts_per_request, args.requests):
                print(f"{args.clients} clients x {n} requests of {k} texts ...", flush=True)
                row = load(port, texts, k, n, args.clients)
                results["runs"].append(row)
        finally:
            proc.send_signal(signal.SIGTERM)
            results["server_exit_code"] = proc.wait(timeout=120)
            server_log = log.read_text()
    results["log_lines"] = server_log.count(" POST /predict ")
    for row in results["runs"]:  # the texts in the model call each request went through, on average
        batches = [int(b) for b in re.findall(rf" {row['texts_per_request']} texts, batch of (\d+)", server_log)]
        row["mean_texts_per_model_call"] = round(sum(batches) / max(1, len(batches)), 1)
    for row in results["runs"]:
        k = row["texts_per_request"]
        sent = [texts[(i * k + j) % len(texts)] for i in range(row["requests"]) for j in range(k)]
        seconds, want = mtl_predict(args.run, sent, args.precision, args.batch_size)
        row["mtl_predict_s"] = round(seconds, 2)
        row["mtl_predict_texts_per_s"] = round(len(sent) / seconds, 1)
        compared = mismatched = 0
        worst = 0.0
        for i, records in row.pop("_predictions").items():
            for j, got in enumerate(records):
                ref = want[i * k + j]
                assert got["text"] == ref["text"]
                for task in ref:
                    if task == "text":
                        continue
                    compared += 1
                    mismatched += got[task]["label"] != ref[task]["label"]
                    worst = max(worst, abs(got[task]["score"] - ref[task]["score"]))
        row.update(labels_compared=compared, label_mismatches=mismatched, max_abs_score_diff=round(worst, 6))
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
