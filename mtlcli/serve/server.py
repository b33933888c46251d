"""Run the app on uvicorn: bind first (a taken port is a one-line error), stop cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from typing import Any

from mtlcli.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # from here connections wait in the backlog until uvicorn accepts them
    except (OSError, OverflowError) as exc:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({getattr(exc, 'strerror', None) or exc})") from None
    sock.set_inheritable(True)
    return sock


def run(app: Any, sock: socket.socket) -> None:
    """Serve until SIGTERM or Ctrl-C; both finish the requests in flight and return (exit code 0)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises the signal after its graceful shutdown, so the process would die
            # by SIGTERM; a clean stop after draining is exit code 0 here. A second signal forces it.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, access_log=False, log_level="warning", lifespan="on", timeout_keep_alive=5)
    Server(config).run(sockets=[sock])
    print("stopped: every request in flight was answered", file=sys.stderr, flush=True)
