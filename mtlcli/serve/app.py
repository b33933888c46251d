"""The HTTP API: POST /predict, GET /health, GET /info, GET /metrics; every error is a JSON object
with a 4xx code.

    POST /predict  {"texts": ["...", ...], "top_k": 1, "min_score": 0.5}  ->  {"predictions": [{as mtl predict --format jsonl}, ...]}

With an API key, every path but /health needs ``Authorization: Bearer <key>`` (``auth``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mtlcli.errors import json_problem
from mtlcli.inference import predict_io
from mtlcli.serve import metrics as metrics_mod
from mtlcli.serve.auth import RequireKey
from mtlcli.serve.batcher import MicroBatcher


@dataclass
class Limits:
    batch_size: int = 64  # texts per forward pass; concurrent requests fill a batch together
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_texts: int = 256  # texts per request
    max_body_bytes: int = 1_048_576  # bytes per request body


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(model: Any, limits: Limits, log: TextIO = sys.stderr, api_key: str | None = None) -> Any:
    """The ASGI app for ``model`` (a ``mtlcli.Model``), wrapped in one log line per request, and
    behind ``api_key`` when one is given."""
    metrics = metrics_mod.Metrics()
    batcher = MicroBatcher(model, limits.batch_size, limits.max_wait_ms / 1000, on_batch=metrics.batch)
    in_flight = [0]  # /predict requests being answered
    # the folder's name, not its absolute path: a client has no business knowing the server's file layout
    folder_name = Path(model.path).resolve().name

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "in_flight": in_flight[0]})

    async def info(request: Request) -> JSONResponse:
        return JSONResponse({**model.info(), "path": folder_name, "limits": asdict(limits)})

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics_mod.CONTENT_TYPE)

    async def predict(request: Request) -> JSONResponse:
        in_flight[0] += 1
        try:
            return await _predict(request)
        finally:
            in_flight[0] -= 1

    async def _predict(request: Request) -> JSONResponse:
        payload = _parse_json(await _read_body(request, limits.max_body_bytes))
        texts, top_k, min_score = _parse_predict(payload, limits.max_texts)
        note = request.scope.get("mtl.log")
        if not texts:
            return JSONResponse({"predictions": []})
        probs, batched = await batcher.predict(texts)
        if note is not None:
            note["note"] = f"{len(texts)} texts, batch of {batched}"
        chunk = predict_io.Chunk(texts, None, probs, None)
        answer = JSONResponse({"predictions": list(predict_io.records(chunk, model.tasks, top_k, min_score))})
        metrics.predicted(len(texts))
        return answer

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:  # after uvicorn has finished the requests in flight
            await batcher.stop()

    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = {404: f"no such endpoint {request.url.path}; use POST /predict, GET /health, GET /info "
                        "or GET /metrics",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        print(f"error: {request.method} {request.url.path}: {type(exc).__name__}: {exc}", file=log, flush=True)
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    app = Starlette(
        routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health, methods=["GET"]),
                Route("/info", info, methods=["GET"]), Route("/metrics", metrics_text, methods=["GET"])],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    return RequestLog(RequireKey(app, api_key) if api_key else app, log, metrics)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body has {int(declared)} bytes; the limit is {limit} (--max-body-bytes)")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:  # no Content-Length (chunked): stop reading at the limit
            raise ApiError(413, f"the body has more than {limit} bytes, the limit (--max-body-bytes)")
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {json_problem(exc)}") from None


def _parse_predict(payload: Any, max_texts: int) -> tuple[list[str], int]:
    if not isinstance(payload, dict):
        raise ApiError(422, 'the body must be a JSON object like {"texts": ["..."]}')
    unknown = sorted(set(payload) - {"texts", "top_k", "min_score"})
    if unknown:
        raise ApiError(422, f"unknown key '{unknown[0]}'; the keys are texts, top_k and min_score")
    texts = payload.get("texts")
    if not isinstance(texts, list):
        raise ApiError(422, f"'texts' must be a list of strings, not {_json_type(texts)}")
    if len(texts) > max_texts:
        raise ApiError(413, f"{len(texts)} texts in one request; the limit is {max_texts} (--max-texts)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ApiError(422, f"texts[{i}] must be a string, not {_json_type(t)}")
        if problem := predict_io.empty_text(i, t):
            raise ApiError(422, problem)
    top_k = payload.get("top_k", 1)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ApiError(422, f"'top_k' must be a whole number of at least 1, not {json.dumps(top_k)}")
    min_score = payload.get("min_score")  # as mtl predict --min-score: a class label below it is null
    if min_score is not None and (not isinstance(min_score, (int, float)) or isinstance(min_score, bool)
                                  or not 0 <= min_score <= 1):
        raise ApiError(422, f"'min_score' must be a number from 0 to 1, not {json.dumps(min_score)}")
    return texts, top_k, min_score


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


class RequestLog:
    """ASGI middleware: one line per request on ``log``: time, client, method, path, status, texts,
    duration; the same request counted in ``metrics``."""

    def __init__(self, app: Any, log: TextIO, metrics: metrics_mod.Metrics):
        self.app, self.log, self.metrics = app, log, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, note, logged = time.perf_counter(), [500], {}, [False]
        scope["mtl.log"] = note  # the handler adds what it did

        def write_line() -> None:
            logged[0] = True
            client = scope.get("client") or ("-", 0)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            seconds = time.perf_counter() - start
            ms = seconds * 1000
            self.metrics.request(scope["path"], status[0], seconds)
            extra = f" {note['note']}" if "note" in note else ""
            print(f"{stamp} {client[0]} {scope['method']} {scope['path']} {status[0]} {ms:.1f} ms{extra}",
                  file=self.log, flush=True)

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                write_line()  # before the last byte leaves: a client that has its answer finds the line
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not logged[0]:  # no complete response went out
                write_line()
