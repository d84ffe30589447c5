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
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyrouter.sandbox.provider import FakeIletiMerkezi  # only for types: it imports this module

HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for slow answers or idle keep-alive clients
    fake: FakeIletiMerkezi

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
