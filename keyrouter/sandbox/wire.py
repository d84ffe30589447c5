"""The fake provider's HTTP layer (keyrouter.testing): a threaded loopback server whose handler
hands every request to the fake, raw answers that survive a client that gave up, TCP resets, and the
faults `fail_next` accepts.  Kept apart from what the provider answers (keyrouter.testing)."""

from __future__ import annotations

import contextlib
import http
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol, Self

HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


class LocalServer:
    """What both fakes share: a threaded HTTP server on a free port of `host`, started in a
    daemon thread, stopped promptly (slow answers abandoned, kept-alive connections cut), and
    usable as a context manager.  Subclasses answer requests; their server class gives the
    handler a `fake` to call."""

    def __init__(self, server_class: type[ThreadingHTTPServer], handler_class: type[BaseHTTPRequestHandler],
                 host: str = "127.0.0.1") -> None:
        self._server_class, self._handler_class, self._host = server_class, handler_class, host
        self.lock = threading.RLock()
        #: TCP connections accepted so far (connection reuse shows as fewer than requests).
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._stopping.clear()
        self._server = self._server_class((self._host, 0), self._handler_class)
        self._server.fake = self  # type: ignore[attr-defined]  # each server class declares it
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # bounds how long stop() waits
            name=f"{type(self).__name__}:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: slow answers are abandoned and kept-alive connections are cut."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self.lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _opened(self, sock: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            self._open.add(sock)

    def _closed(self, sock: socket.socket) -> None:
        with self.lock:
            self._open.discard(sock)


class Served(Protocol):
    """What `FakeHandler` calls on the fake provider (keyrouter.sandbox.provider): a
    `LocalServer` that answers requests and may skew its clock."""

    date_skew: float

    def _opened(self, sock: socket.socket) -> None: ...

    def _closed(self, sock: socket.socket) -> None: ...

    def _serve(self, handler: FakeHandler) -> None: ...


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for slow answers or idle keep-alive clients
    fake: Served

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, stop()) are normal here, not worth a traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients' connection reuse is exercised
    timeout = 30  # idle keep-alive connections end on their own
    server: FakeServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle adds ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._closed(self.connection)

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header, off by the fake's `date_skew` seconds (for clock checks)."""
        when = time.time() if timestamp is None else timestamp
        return super().date_time_string(when + self.server.fake.date_skew)

    do_GET = do_PUT = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: test output is no place for access logs."""


def parse_fault(kind: int | str) -> tuple[Any, ...]:
    if isinstance(kind, int) and not isinstance(kind, bool):
        if not 100 <= kind <= 999 or kind == 200:
            raise ValueError(f"fault status code must be a 3-digit error code, not {kind}")
        return ("code", kind)
    if kind in ("html502", "truncated", "reset"):
        return (kind,)
    if isinstance(kind, str) and kind.startswith("slow:"):
        try:
            return ("slow", float(kind.removeprefix("slow:")))
        except ValueError:
            pass
    raise ValueError(
        f"unknown fault {kind!r}: use a status code, 'html502', 'truncated', 'reset' or 'slow:S'"
    )


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def send(handler: FakeHandler, code: int, body: bytes, content_type: str) -> None:
    try:
        reason = http.HTTPStatus(code).phrase
    except ValueError:
        reason = "Provider Error"
    try:
        handler.send_response(code, reason)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:  # the client gave up (its timeout); nothing to answer to
        handler.close_connection = True


def reset(handler: FakeHandler) -> None:
    """Drop the connection with a TCP RST, as a crashed proxy or a flaky network does."""
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.rfile.close()  # drop the file's reference, so close() really closes the socket
        handler.connection.close()
