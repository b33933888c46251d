"""mtl serve: predictions over HTTP, from a run folder or an export."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

from mtlcli.cli.common import (argument, device_option, handles_errors, option, precision_option, print_note,
                               print_warning, number_option, whole_number_option)
from mtlcli.errors import UserError


@handles_errors
def serve(
    run: Annotated[Path, argument("RUN", "Run folder (e.g. runs/latest) or a folder written by mtl export.")],
    host: Annotated[str, option("--host", metavar="ADDRESS", help="Address to listen on; 0.0.0.0 for every interface.", default="127.0.0.1")] = "127.0.0.1",
    port: Annotated[int, whole_number_option("--port", help="Port to listen on; 0 picks a free one.", default="8000", low=0, high=65535)] = 8000,
    batch_size: Annotated[int, whole_number_option("--batch-size", help="Texts per forward pass; concurrent requests fill a batch together.", default="64", low=1)] = 64,
    max_wait_ms: Annotated[float, number_option("--max-wait-ms", help="How long a request waits for others to batch with.", default="5.0", low=0)] = 5.0,
    max_texts: Annotated[int, whole_number_option("--max-texts", help="Most texts in one request (more: 413).", default="256", low=1)] = 256,
    max_body_bytes: Annotated[int, whole_number_option("--max-body-bytes", help="Largest request body in bytes (more: 413).", default="1048576", low=1)] = 1_048_576,
    device: Annotated[str, device_option()] = "auto",
    precision: Annotated[str, precision_option("run: as the run trained, as mtl predict and mtl eval; int8: CPU only, quantized backbone; an ONNX export runs as exported.")] = "run",
    api_key_env: Annotated[str | None, option("--api-key-env", metavar="NAME", help="Require the header Authorization: Bearer KEY on every path but /health, KEY read from the environment variable NAME (never from the command line, where ps shows it).")] = None,
) -> None:
    """Serve RUN over HTTP: POST /predict {"texts": [...]}, GET /health, GET /info, GET /metrics. SIGTERM drains, then exits 0."""
    from mtlcli.extras import require

    require("starlette", "serve", "mtl serve")
    require("uvicorn", "serve", "mtl serve")
    from mtlcli.api import Model
    from mtlcli.serve import app as serve_app
    from mtlcli.serve import server

    api_key = read_api_key(api_key_env)
    sock = server.bind(host, port)  # before the slow load: a taken port fails at once
    if api_key is None and not is_loopback(host):
        print_warning(f"--host {host} without --api-key-env: anyone who can reach this port can use the model")
    model = Model.load(run, device, precision)
    limits = serve_app.Limits(batch_size, max_wait_ms, max_texts, max_body_bytes)
    app = serve_app.create_app(model, limits, api_key=api_key)
    bound_host, bound_port = sock.getsockname()[:2]
    print_note(f"serving {model.path} ({model.kind}, {model.device}, {model.precision}) on "
               f"http://{bound_host}:{bound_port}: POST /predict, GET /health, GET /info, GET /metrics"
               f"{'; every path but /health needs the API key' if api_key else ''}")
    server.run(app, sock)


def read_api_key(name: str | None) -> str | None:
    """The key in the environment variable ``name``; one that is unset or blank is an error, not no key."""
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise UserError(f"--api-key-env {name}: the environment variable {name} is not set; "
                        f"export {name}=<key> before mtl serve")
    if not value.strip():
        raise UserError(f"--api-key-env {name}: the environment variable {name} is empty; set it to the key")
    return value.strip()


def is_loopback(host: str) -> bool:
    """Whether ``host`` can only be reached from this machine (127.0.0.1, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False
