"""Soak test for `mtl serve`: many clients, good and bad requests, for a long time; errors and memory.

    python benchmarks/serve_soak.py RUN [--seconds 600] [--clients 16] [--out soak.json] [-- MTL SERVE OPTIONS]

Starts `mtl serve RUN` on 127.0.0.1 (a free port) behind an API key (a random one, handed over in
an environment variable), then --clients threads, each on its own keep-alive connection, send
requests until --seconds have passed. Each request is drawn (seeded) from a mix:

    good         {"texts": [1-4 texts of --data]} with the key    -> 200
    empty text   {"texts": ["  "]} with the key                   -> 422
    wrong JSON   a body cut in the middle, with the key           -> 400
    missing key  a good body without the Authorization header     -> 401

Every second the server's resident memory is sampled (psutil when installed, else VmRSS of
/proc/PID/status). Reports requests, status codes by kind, 5xx, answers that were not the
expected code, memory after --warmup seconds and at the end, its growth, p50/p99 latency of the
good requests, and what the server's own /metrics counted. Clients and server share the machine.
Exits 1 when a request got a 5xx or an unexpected code, or the server did not stop cleanly.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "MTL_SOAK_API_KEY"
KINDS = {"good": 200, "empty text": 422, "wrong JSON": 400, "missing key": 401}
MIX = (("good", 0.7), ("empty text", 0.1), ("wrong JSON", 0.1), ("missing key", 0.1))


def read_texts(path: Path, column: str) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [row[column].strip() for row in csv.DictReader(f) if row[column].strip()]


def start_server(run: str, log: Path, key: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, KEY_ENV: key}
    proc = subprocess.Popen([sys.executable, "-m", "mtlcli", "serve", run, "--host", "127.0.0.1", "--port", "0",
                             "--api-key-env", KEY_ENV, *extra],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
    while proc.poll() is None:
        if m := re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text()):
            return proc, int(m.group(1))
        time.sleep(0.1)
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def rss_bytes(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
    return psutil.Process(pid).memory_info().rss


def request_for(kind: str, texts: list[str], rng: random.Random, key: str) -> tuple[bytes, dict]:
    auth = {"Authorization": f"Bearer {key}"}
    json_type = {"Content-Type": "application/json"}
    good = json.dumps({"texts": rng.sample(texts, rng.randint(1, 4))}).encode()
    if kind == "good":
        return good, {**json_type, **auth}
    if kind == "empty text":
        return json.dumps({"texts": [texts[0], "  "]}).encode(), {**json_type, **auth}
    if kind == "wrong JSON":
        return good[: len(good) // 2], {**json_type, **auth}
    return good, json_type  # missing key


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.codes: dict[str, Counter] = {kind: Counter() for kind in KINDS}
        self.latencies: list[float] = []  # seconds, good requests answered 200
        self.failures: Counter = Counter()  # connection errors, by exception type

    def add(self, kind: str, code: int | str, seconds: float) -> None:
        with self.lock:
            self.codes[kind][str(code)] += 1
            if kind == "good" and code == 200:
                self.latencies.append(seconds)


def client(port: int, texts: list[str], key: str, seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        body, headers = request_for(kind, texts, rng, key)
        start = time.perf_counter()
        try:
            conn.request("POST", "/predict", body, headers)
            response = conn.getresponse()
            response.read()
            tally.add(kind, response.status, time.perf_counter() - start)
            if response.will_close:  # the server closed this connection after answering
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        except (OSError, http.client.HTTPException) as exc:
            tally.add(kind, f"connection error ({type(exc).__name__})", time.perf_counter() - start)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.close()


def sample_memory(pid: int, stop: threading.Event, samples: list[tuple[float, int]], t0: float) -> None:
    while not stop.wait(1.0):
        try:
            samples.append((time.monotonic() - t0, rss_bytes(pid)))
        except (OSError, RuntimeError):
            return  # the server is gone


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scrape(port: int, key: str) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = lambda name: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()  # noqa: E731
                             if line.startswith(name) and not line.startswith("#"))
    return {"requests": total('mtl_serve_requests_total{path="/predict"'),
            "texts_predicted": total("mtl_serve_texts_predicted_total"),
            "batches": total("mtl_serve_batch_size_count")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder or export to serve")
    parser.add_argument("--seconds", type=float, default=600, help="how long the clients send requests")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, one connection each")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before the memory baseline is taken (default: a tenth of --seconds, at most 60)")
    parser.add_argument("--data", default=str(ROOT / "data" / "sample.csv"), help="CSV whose texts are sent")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON result to this file")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)  # after --: more mtl serve options
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1:]
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 10)
    texts = read_texts(Path(args.data), args.text_column)
    key = secrets.token_urlsafe(24)

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc, port = start_server(args.run, log, key, extra)
        try:
            tally, samples, stop = Tally(), [], threading.Event()
            t0 = time.monotonic()
            sampler = threading.Thread(target=sample_memory, args=(proc.pid, stop, samples, t0), daemon=True)
            sampler.start()
            deadline = t0 + args.seconds
            threads = [threading.Thread(target=client, args=(port, texts, key, args.seed * 1000 + n, deadline, tally))
                       for n in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t0
            stop.set()
            sampler.join()
            end_rss = rss_bytes(proc.pid)
            counted = scrape(port, key)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=120)
        server_log = log.read_text(errors="replace")

    codes = Counter()
    for kind_codes in tally.codes.values():
        codes.update(kind_codes)
    unexpected = {kind: {c: n for c, n in kind_codes.items() if c != str(KINDS[kind])}
                  for kind, kind_codes in tally.codes.items()}
    after_warmup = next((rss for t, rss in samples if t >= warmup), samples[-1][1] if samples else end_rss)
    mb = lambda b: round(b / 2**20, 1)  # noqa: E731
    result = {
        "run": args.run, "seconds": round(elapsed, 1), "clients": args.clients, "warmup_s": warmup,
        "requests": sum(codes.values()),
        "requests_per_s": round(sum(codes.values()) / elapsed, 1),
        "codes_by_kind": {kind: dict(sorted(c.items())) for kind, c in tally.codes.items()},
        "errors_by_code": {c: n for c, n in sorted(codes.items()) if c != "200"},
        "5xx": sum(n for c, n in codes.items() if c.startswith("5")),
        "unexpected": {kind: u for kind, u in unexpected.items() if u},
        "good_answered_200": tally.codes["good"]["200"], "good_sent": sum(tally.codes["good"].values()),
        "latency_ms_good": {"p50": _ms(percentile(tally.latencies, 0.50)), "p99": _ms(percentile(tally.latencies, 0.99))},
        "rss_mb": {"after_warmup": mb(after_warmup), "end": mb(end_rss), "growth": mb(end_rss - after_warmup),
                   "max": mb(max([rss for _, rss in samples] + [end_rss])), "samples": len(samples)},
        "server_counted": counted,
        "server_exit_code": exit_code,
        "server_tracebacks": server_log.count("Traceback"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    clean = not result["5xx"] and not result["unexpected"] and exit_code == 0 and not result["server_tracebacks"]
    return 0 if clean else 1


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


if __name__ == "__main__":
    sys.exit(main())
