"""GET /metrics: the service's counters in Prometheus' text format (0.0.4), written by hand.

Counters only grow from the start of the process; a histogram counts each observation into every
bucket at or above it (``le``, cumulative, as Prometheus reads them). One lock guards every
update and the rendering, so a scrape sees one consistent state whichever thread records.
"""

from __future__ import annotations

import threading
from collections import Counter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # Prometheus' defaults, seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # texts per forward pass
# any other path is counted as "other": a client probing paths cannot grow the number of series
PATHS = ("/predict", "/health", "/info", "/metrics")


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # cumulative: counts[i] observations were <= buckets[i]
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{_number(b)}"}} {n}' for b, n in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {_number(self.sum)}", f"{name}_count{braces} {self.count}"]
        return out


class Metrics:
    """What the service has done since it started: requests, errors, texts, batches, latency."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # (path, code) -> requests answered
        self.errors: Counter = Counter()  # code -> requests answered with a 4xx or 5xx
        self.texts = 0
        self.batches = Histogram(BATCH_BUCKETS)
        self.latency: dict[str, Histogram] = {}  # path -> seconds per request

    def request(self, path: str, code: int, seconds: float) -> None:
        path = path if path in PATHS else "other"
        with self.lock:
            self.requests[path, code] += 1
            if code >= 400:
                self.errors[code] += 1
            self.latency.setdefault(path, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def predicted(self, texts: int) -> None:
        with self.lock:
            self.texts += texts

    def batch(self, texts: int) -> None:
        with self.lock:
            self.batches.observe(texts)

    def render(self) -> str:
        with self.lock:
            out = ["# HELP mtl_serve_requests_total HTTP requests answered, by path and status code.",
                   "# TYPE mtl_serve_requests_total counter"]
            out += [f'mtl_serve_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(self.requests.items())]
            out += ["# HELP mtl_serve_errors_total Requests answered with an error status (4xx or 5xx), by code.",
                    "# TYPE mtl_serve_errors_total counter"]
            out += [f'mtl_serve_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())]
            out += ["# HELP mtl_serve_texts_predicted_total Texts answered with predictions.",
                    "# TYPE mtl_serve_texts_predicted_total counter", f"mtl_serve_texts_predicted_total {self.texts}"]
            out += ["# HELP mtl_serve_batch_size Texts per forward pass of the model (requests batched together).",
                    "# TYPE mtl_serve_batch_size histogram", *self.batches.lines("mtl_serve_batch_size")]
            out += ["# HELP mtl_serve_request_duration_seconds Time from a request's arrival to its answer, by path.",
                    "# TYPE mtl_serve_request_duration_seconds histogram"]
            for path, histogram in sorted(self.latency.items()):
                out += histogram.lines("mtl_serve_request_duration_seconds", f'path="{path}"')
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    """Prometheus reads Go's float syntax; whole numbers are written without a fraction (le="64")."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
