"""mtl serve: the real server in its own process, spoken to over HTTP on 127.0.0.1 with the standard library."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mtlcli import Model

TEXTS = ["The laptop is excellent.", "The soup was a huge disappointment. Never again.", "An average hotel."]


class Server:
    """`mtl serve RUN --port 0 ...` in a subprocess; its standard error goes to a file (the log)."""

    def __init__(self, run: Path, log: Path, *args: str, env: dict | None = None):
        self.log = log
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "mtlcli", "serve", str(run), "--port", "0",
                                      "--device", "cpu", "--precision", "fp32", *args],
                                     stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
        deadline = time.monotonic() + 180  # a busy machine loads torch slowly
        while time.monotonic() < deadline and self.proc.poll() is None:
            if m := re.search(r"on http://[\d.]+:(\d+)", self.text()):
                self.port = int(m.group(1))
                return
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the server did not start:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def raw(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
        """(status, headers with lower-case names, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
        status, _, data = self.raw(method, path, body, headers)
        return status, json.loads(data)

    def predict(self, texts, headers: dict | None = None, **extra):
        return self.request("POST", "/predict", json.dumps({"texts": texts, **extra}),
                            {"Content-Type": "application/json", **(headers or {})})

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    s = Server(trained_run[0], log, "--max-texts", "8", "--max-body-bytes", "4096", "--max-wait-ms", "50")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def expected(trained_run):
    return Model.load(trained_run[0], device="cpu", precision="fp32")


def same_predictions(got: list[dict], want: list[dict]) -> None:
    assert [r["text"] for r in got] == [r["text"] for r in want]
    for a, b in zip(got, want):
        for task in ("class_label", "sentiment_label"):
            assert a[task]["label"] == b[task]["label"]
            assert [x[0] for x in a[task]["top"]] == [x[0] for x in b[task]["top"]]
            assert a[task]["score"] == pytest.approx(b[task]["score"], abs=1e-5)


def test_predict_health_and_info(server, expected, trained_run):
    assert server.request("GET", "/health") == (200, {"status": "ok", "in_flight": 0})
    status, body = server.predict(TEXTS, top_k=2)
    assert status == 200 and set(body) == {"predictions"}
    same_predictions(body["predictions"], expected.predict(TEXTS, top_k=2))
    status, body = server.predict(TEXTS, min_score=0.99)  # as mtl predict --min-score: no label below it
    assert status == 200 and all(p[task]["label"] is None for p in body["predictions"]
               for task in ("class_label", "sentiment_label"))
    same_predictions(body["predictions"], expected.predict(TEXTS, min_score=0.99))
    assert server.predict([]) == (200, {"predictions": []})
    status, info = server.request("GET", "/info")
    assert status == 200 and info["tasks"] == json.loads((trained_run[0] / "labels.json").read_text())
    assert info["path"] == "tiny" and str(trained_run[0].parent) not in json.dumps(info)  # the folder's name only
    assert info["kind"] == "run" and info["validation"]["val_loss"] == pytest.approx(expected.info()["validation"]["val_loss"])
    assert info["limits"] == {"batch_size": 64, "max_wait_ms": 50.0, "max_texts": 8, "max_body_bytes": 4096}
    assert re.search(r"127\.0\.0\.1 POST /predict 200 [\d.]+ ms 3 texts, batch of \d+", server.text())


def test_concurrent_clients_are_answered_and_batched_together(server, expected):
    texts = [f"{TEXTS[i % 3]} Number {i}." for i in range(64)]
    want = {r["text"]: r for r in expected.predict(texts)}
    start = threading.Barrier(16)
    results: list = []

    def client(n: int) -> None:
        start.wait()  # all 16 send their first request together
        for i in range(n, 64, 16):  # 4 requests each, of 1 text
            results.append(server.predict([texts[i]]))

    before = server.text().count("POST /predict 200")
    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 64 and {status for status, _ in results} == {200}
    for _, body in results:
        same_predictions(body["predictions"], [want[body["predictions"][0]["text"]]])
    log = server.text()
    assert log.count("POST /predict 200") - before == 64  # one log line per request
    batches = [int(n) for n in re.findall(r"1 texts, batch of (\d+)", log)]
    assert max(batches) > 1  # requests that came together went through the model together


@pytest.mark.parametrize("method, path, body, status, message", [
    ("POST", "/predict", b'{"texts": ["a"', 400, "malformed JSON"),
    ("POST", "/predict", b'{"texts": ["a', 400, "malformed JSON: Unterminated string starting at line 1 column 12"),
    ("POST", "/predict", b'{"texts": ["a", ""]}', 422, "texts[1] is empty; every text needs words"),
    ("POST", "/predict", b'{"texts": [" \\t\\n "]}', 422, "texts[0] is empty (only whitespace); every text needs words"),
    ("POST", "/predict", b"\xff\xfe", 400, "not UTF-8"),
    ("POST", "/predict", b'["a", "b"]', 422, "must be a JSON object"),
    ("POST", "/predict", b'{"text": ["a"]}', 422, "unknown key 'text'"),
    ("POST", "/predict", b'{"texts": "a"}', 422, "'texts' must be a list of strings, not a string"),
    ("POST", "/predict", b'{"texts": ["a", 3]}', 422, "texts[1] must be a string, not a number"),
    ("POST", "/predict", b'{"texts": ["a"], "top_k": 0}', 422, "'top_k' must be a whole number"),
    ("POST", "/predict", b'{"texts": ["a"], "min_score": 1.5}', 422, "'min_score' must be a number from 0 to 1, not 1.5"),
    ("POST", "/predict", json.dumps({"texts": ["a"] * 9}).encode(), 413, "9 texts in one request; the limit is 8"),
    ("POST", "/predict", json.dumps({"texts": ["a" * 5000]}).encode(), 413, "the limit is 4096"),
    ("GET", "/predict", None, 405, "GET is not allowed on /predict"),
    ("GET", "/nope", None, 404, "no such endpoint /nope"),
])
def test_bad_requests_get_a_4xx_json_error_and_the_server_keeps_serving(server, expected, method, path, body,
                                                                         status, message):
    got_status, got = server.request(method, path, body)
    assert got_status == status and message in got["error"]
    status, body = server.predict(TEXTS[:1])
    assert status == 200
    same_predictions(body["predictions"], expected.predict(TEXTS[:1]))


def test_an_oversize_chunked_body_is_cut_off(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        parts = iter([b'{"texts": ["', b"a" * 3000, b"a" * 3000, b'"]}'])
        conn.request("POST", "/predict", body=parts, encode_chunked=True)  # no Content-Length
        response = conn.getresponse()
        assert response.status == 413 and "more than 4096 bytes" in json.loads(response.read())["error"]
    finally:
        conn.close()
    assert server.predict(TEXTS[:1])[0] == 200


@pytest.mark.slow  # a server process of its own, and a 3-second batching wait
def test_sigterm_answers_the_requests_in_flight_then_exits_0(trained_run, expected, tmp_path):
    # a long batching wait keeps the request in flight while the signal arrives
    s = Server(trained_run[0], tmp_path / "server.log", "--max-wait-ms", "3000")
    answer: list = []
    thread = threading.Thread(target=lambda: answer.append(s.predict(TEXTS)))
    thread.start()
    deadline = time.monotonic() + 60
    while s.request("GET", "/health")[1]["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    s.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=120)
    assert s.proc.wait(timeout=60) == 0
    assert answer and answer[0][0] == 200
    same_predictions(answer[0][1]["predictions"], expected.predict(TEXTS))
    assert "stopped: every request in flight was answered" in s.text()
    assert "Traceback" not in s.text()


def test_command_line_errors_are_one_line(cli, trained_run, server, monkeypatch):
    result = cli("serve", trained_run[0], "--port", str(server.port))  # taken
    assert result.exit_code == 2 and f"--port {server.port}: cannot listen there" in result.output
    result = cli("serve", "nope", "--port", "0")
    assert result.exit_code == 2 and "nope: no such run folder or export" in result.output
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    result = cli("serve", trained_run[0])
    assert result.exit_code == 2 and 'pip install "mtlcli[serve]"' in result.output and "Traceback" not in result.output


# ---- the API key and /metrics ----------------------------------------------------------------

KEY = "k3y-for-tests_only"


@pytest.fixture(scope="module")
def keyed(trained_run, tmp_path_factory):
    """A server on every interface with an API key, read from the environment variable MTL_TEST_KEY."""
    log = tmp_path_factory.mktemp("serve-keyed") / "server.log"
    s = Server(trained_run[0], log, "--host", "0.0.0.0", "--api-key-env", "MTL_TEST_KEY", env={"MTL_TEST_KEY": KEY})
    yield s
    assert s.stop() == 0


def with_key(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers, message", [
    ({}, "no API key: send the header Authorization: Bearer <key>"),
    (with_key("k3y-for-tests_onlx"), "wrong API key"),
    (with_key("k3y"), "wrong API key"),
    ({"Authorization": KEY}, "the Authorization header must be: Bearer <key>"),
    ({"Authorization": f"Basic {KEY}"}, "the Authorization header must be: Bearer <key>"),
])
def test_without_the_right_key_every_path_but_health_is_401(keyed, headers, message):
    for method, path, body in (("POST", "/predict", json.dumps({"texts": TEXTS})), ("GET", "/info", None),
                               ("GET", "/metrics", None), ("GET", "/nope", None)):
        status, sent, data = keyed.raw(method, path, body, headers)
        assert (status, json.loads(data)) == (401, {"error": message}), path
        assert sent["www-authenticate"] == "Bearer"
    assert keyed.request("GET", "/health", headers=headers) == (200, {"status": "ok", "in_flight": 0})
    assert re.search(r"127\.0\.0\.1 POST /predict 401 [\d.]+ ms", keyed.text())  # logged like any request


def test_with_the_key_the_api_answers(keyed, expected):
    status, body = keyed.predict(TEXTS, headers=with_key(), top_k=2)
    assert status == 200
    same_predictions(body["predictions"], expected.predict(TEXTS, top_k=2))
    assert keyed.request("GET", "/info", headers=with_key())[0] == 200
    assert keyed.request("GET", "/nope", headers=with_key())[0] == 404
    assert "every path but /health needs the API key" in keyed.text()
    assert "warning" not in keyed.text()  # every interface, but behind a key
    assert KEY not in keyed.text()


def scrape(server: Server) -> dict[str, float]:
    """Every sample of GET /metrics: 'name{labels}' -> value; the HELP and TYPE lines checked on the way."""
    status, headers, data = server.raw("GET", "/metrics", headers=with_key())
    assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples, typed = {}, {}
    for line in data.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            typed[name] = kind
        elif not line.startswith("# HELP "):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    assert typed == {"mtl_serve_requests_total": "counter", "mtl_serve_errors_total": "counter",
                     "mtl_serve_texts_predicted_total": "counter", "mtl_serve_batch_size": "histogram",
                     "mtl_serve_request_duration_seconds": "histogram"}
    return samples


def test_metrics_count_requests_errors_texts_batches_and_latency(keyed):
    before = scrape(keyed)
    assert keyed.predict(TEXTS, headers=with_key())[0] == 200
    assert keyed.predict(TEXTS[:2], headers=with_key())[0] == 200
    assert keyed.predict(["  "], headers=with_key())[0] == 422
    assert keyed.predict(TEXTS)[0] == 401  # no key
    assert keyed.request("GET", "/health")[0] == 200
    after = scrape(keyed)

    def moved(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert moved('mtl_serve_requests_total{path="/predict",code="200"}') == 2
    assert moved('mtl_serve_requests_total{path="/predict",code="422"}') == 1
    assert moved('mtl_serve_requests_total{path="/predict",code="401"}') == 1
    assert moved('mtl_serve_requests_total{path="/health",code="200"}') == 1
    assert moved('mtl_serve_requests_total{path="/metrics",code="200"}') == 1  # the first scrape; this one comes next
    assert moved('mtl_serve_errors_total{code="422"}') == 1 and moved('mtl_serve_errors_total{code="401"}') == 1
    assert moved("mtl_serve_texts_predicted_total") == 5
    assert moved("mtl_serve_batch_size_sum") == 5 and moved("mtl_serve_batch_size_count") in (1, 2)
    assert moved('mtl_serve_request_duration_seconds_count{path="/predict"}') == 4
    assert moved('mtl_serve_request_duration_seconds_sum{path="/predict"}') > 0
    # histogram buckets are cumulative and end with +Inf, which equals the count
    bounds = ["1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "+Inf"]
    counts = [after[f'mtl_serve_batch_size_bucket{{le="{b}"}}'] for b in bounds]
    assert counts == sorted(counts) and counts[-1] == after["mtl_serve_batch_size_count"]
    assert counts[2] - counts[1] >= 1  # the batch of 3 texts (or of 5) lies above 2
    latency = [after[f'mtl_serve_request_duration_seconds_bucket{{path="/predict",le="{b}"}}'] for b in
               ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")]
    assert latency == sorted(latency) and latency[-1] == after['mtl_serve_request_duration_seconds_count{path="/predict"}']


def test_unknown_paths_are_counted_as_other(keyed):
    for path in ("/a", "/b", "/c"):
        assert keyed.request("GET", path, headers=with_key())[0] == 404
    samples = scrape(keyed)
    assert samples['mtl_serve_requests_total{path="other",code="404"}'] >= 3
    assert not [key for key in samples if '"/a"' in key or '"/b"' in key]


@pytest.mark.slow  # a server process of its own
def test_every_interface_without_a_key_is_warned_about(trained_run, tmp_path):
    s = Server(trained_run[0], tmp_path / "server.log", "--host", "0.0.0.0")
    try:
        assert s.request("GET", "/health")[0] == 200 and s.raw("GET", "/metrics")[0] == 200  # no key asked
        warnings = [line for line in s.text().splitlines() if line.startswith("warning:")]
        assert warnings == ["warning: --host 0.0.0.0 without --api-key-env: anyone who can reach this port can use "
                            "the model"]
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("value, problem", [
    (None, "--api-key-env MTL_TEST_KEY: the environment variable MTL_TEST_KEY is not set; export MTL_TEST_KEY=<key> "
           "before mtl serve"),
    ("", "--api-key-env MTL_TEST_KEY: the environment variable MTL_TEST_KEY is empty; set it to the key"),
    ("  \n", "--api-key-env MTL_TEST_KEY: the environment variable MTL_TEST_KEY is empty; set it to the key"),
])
def test_an_unset_or_empty_key_variable_is_one_line(cli, trained_run, monkeypatch, value, problem):
    if value is None:
        monkeypatch.delenv("MTL_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("MTL_TEST_KEY", value)
    result = cli("serve", trained_run[0], "--port", "0", "--api-key-env", "MTL_TEST_KEY")
    assert result.exit_code == 2 and result.output.strip() == f"error: {problem}"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                            ("::1", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
                                            ("example.org", False)])
def test_which_hosts_are_only_this_machine(host, loopback):
    from mtlcli.cli.serve_cmd import is_loopback

    assert is_loopback(host) is loopback


@pytest.mark.slow  # 20 seconds of load on a server of its own
def test_soak_benchmark_a_short_run_has_no_5xx_and_answers_every_good_request(trained_run, tmp_path):
    out = tmp_path / "soak.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "serve_soak.py"),
                           str(trained_run[0]), "--seconds", "20", "--clients", "4", "--out", str(out), "--",
                           "--device", "cpu", "--precision", "fp32"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["5xx"] == 0 and result["unexpected"] == {}
    assert result["good_sent"] > 0 and result["good_answered_200"] == result["good_sent"]
    assert {kind: set(codes) for kind, codes in result["codes_by_kind"].items()} == {
        "good": {"200"}, "empty text": {"422"}, "wrong JSON": {"400"}, "missing key": {"401"}}
    assert result["server_counted"]["requests"] == result["requests"]  # /metrics saw every request sent
    assert result["server_exit_code"] == 0 and result["server_tracebacks"] == 0
    assert result["rss_mb"]["samples"] > 0 and result["rss_mb"]["end"] > 0
