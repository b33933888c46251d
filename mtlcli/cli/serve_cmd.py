"""mtl serve: predictions over HTTP, from a run folder or an export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated


from mtlcli.cli.common import (argument, device_option, handles_errors, option, precision_option, print_note,
                               number_option, whole_number_option)



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
    precision: Annotated[str, precision_option("run: as the run trained, as mtl predict and mtl eval; an ONNX export runs in fp32.")] = "run",
) -> None:
    """Serve RUN over HTTP: POST /predict {"texts": [...]}, GET /health, GET /info. SIGTERM drains, then exits 0."""
    from mtlcli.extras import require

    require("starlette", "serve", "mtl serve")
    require("uvicorn", "serve", "mtl serve")
    from mtlcli.api import Model
    from mtlcli.serve import app as serve_app
    from mtlcli.serve import server

    sock = server.bind(host, port)  # before the slow load: a taken port fails at once
    model = Model.load(run, device, precision)
    limits = serve_app.Limits(batch_size, max_wait_ms, max_texts, max_body_bytes)
    app = serve_app.create_app(model, limits)
    bound_host, bound_port = sock.getsockname()[:2]
    print_note(f"serving {model.path} ({model.kind}, {model.device}, {model.precision}) on "
               f"http://{bound_host}:{bound_port}: POST /predict, GET /health, GET /info")
    server.run(app, sock)
