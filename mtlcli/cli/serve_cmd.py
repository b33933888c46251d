"""mtl serve: predictions over HTTP, from a run folder or an export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtlcli.cli.common import err_console, handles_errors

Opt = typer.Option


@handles_errors
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder (e.g. runs/latest) or a folder written by mtl export.", show_default=False)],
    host: Annotated[str, Opt(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, Opt(help="Port to listen on; 0 picks a free one.", min=0, max=65535)] = 8000,
    batch_size: Annotated[int, Opt(help="Texts per forward pass; concurrent requests fill a batch together.", min=1)] = 64,
    max_wait_ms: Annotated[float, Opt(help="How long a request waits for others to batch with.", min=0)] = 5.0,
    max_texts: Annotated[int, Opt(help="Most texts in one request (more: 413).", min=1)] = 256,
    max_body_bytes: Annotated[int, Opt(help="Largest request body in bytes (more: 413).", min=1)] = 1_048_576,
    device: Annotated[str, Opt(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, Opt(help="run (as the run trained, as mtl predict and mtl eval), auto, fp32, bf16 or fp16 (an ONNX export runs in fp32).")] = "run",
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
    err_console.print(f"serving {model.path} ({model.kind}, {model.device}, {model.precision}) on "
                      f"http://{bound_host}:{bound_port}: POST /predict, GET /health, GET /info",
                      soft_wrap=True, markup=False, highlight=False)
    server.run(app, sock)
