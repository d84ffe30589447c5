"""The operator's HTTP listener: GET /metrics, /healthz and /readyz on one port.

A `ThreadingHTTPServer` in a daemon thread (standard library only: the worker's install stays
lean, no web extra).  It answers even while the worker's event loop is blocked, which is what lets
/healthz say so.  The exposition is prometheus_client's `generate_latest`; the health answers are
one line of plain text without secrets or personal data.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keyrouter.ops.metrics import Metrics

_ADDR = re.compile(r"^(?:(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]*)):)?(?P<port>\d{1,5})$")


def parse_addr(text: str, where: str = "KEYROUTER_METRICS_ADDR") -> tuple[str, int]:
    """`HOST:PORT`, `[::1]:PORT`, or `:PORT` / `PORT` (every interface) -> (host, port)."""
    m = _ADDR.match(text.strip())
    port = int(m.group("port")) if m else -1
    if m is None or not 0 < port < 65536:
        raise ValueError(f"{where}={text!r}: give HOST:PORT, e.g. 127.0.0.1:9464 or :9464")
    host = m.group("v6") or m.group("host") or "0.0.0.0"
    return host, port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    metrics: Metrics

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a scraper that hung up
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        metrics = self.server.metrics
        if path == "/metrics":
            self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, why = metrics.health() if path == "/healthz" else metrics.readiness()
            self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: scrapes every few seconds are no news."""


class Listener:
    """Start with `start()`; `address` is (host, port) once bound (port 0 picks a free one)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.wanted = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _Handler, bind_and_activate=False)
        self._server.metrics = metrics
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> Listener:
        """Raises OSError (address in use, no permission) before any thread starts."""
        try:
            self._server.server_bind()
            self._server.server_activate()
        except OSError:
            self._server.server_close()
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="keyrouter-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(OSError):
            self._server.server_close()
