"""`webhook` against a real local HTTP server: body, signature (checked independently), headers,
and the retry classification of every kind of answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from keyrouter.handlers.webhook import handle, params_problem, retry_after
from keyrouter.retries import PermanentError, RetryLater

from .support import IDEMPOTENCY_KEY, NUMBER, match

pytestmark = pytest.mark.anyio

SECRET = "whsec-Tz9-very-secret-value"
SECRET_ENV = "KR_TEST_WEBHOOK_SECRET"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1: records raw requests, answers from a script."""

    received: list[Received] = field(default_factory=list)
    #: (status, headers, delay in seconds) per request; when empty: 200.
    script: list[tuple[int, dict[str, str], float]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def answer(self, status: int, headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        self.script.append((status, headers or {}, delay))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.received.append(Received(self.command, self.path, dict(self.headers), raw))
            status, headers, delay = state.script.pop(0) if state.script else (200, {}, 0.0)
            if delay and state.stopping.wait(delay):
                return
            payload = b'{"ok": true}'
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/sms"
    try:
        yield state
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def secret(monkeypatch) -> str:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET


def params(receiver: Receiver, **extra: object) -> dict[str, object]:
    return {"url": receiver.url, "secret_env": SECRET_ENV, **extra}


async def test_the_body_headers_and_signature(receiver, secret, make_message, make_context) -> None:
    message = make_message("ANKET B {x} %s", id="id-7", normalized="anket b x s")
    await handle(message, match("survey", None, choice="b"), make_context(params(receiver), rule="survey"))
    [got] = receiver.received
    assert (got.method, got.path) == ("POST", "/hooks/sms")
    # the signature, verified independently over the raw bytes the server received
    expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["X-Keyrouter-Signature"], expected)
    assert got.headers["Idempotency-Key"] == IDEMPOTENCY_KEY
    assert got.headers["Content-Type"] == "application/json"
    assert json.loads(got.body.decode("utf-8")) == {
        "message": {
            "id": "id-7",
            "received_at": message.received_at.isoformat(),
            "sender": NUMBER,
            "sender_e164": NUMBER,
            "receiver": "7889",
            "text": "ANKET B {x} %s",
            "normalized": "anket b x s",
        },
        "match": {"rule": "survey", "keyword": None, "captures": {"choice": "b"}, "fuzzy": False},
        "idempotency_key": IDEMPOTENCY_KEY,
    }
    assert secret.encode() not in got.body and SECRET_ENV.encode() not in got.body


async def test_a_tampered_body_does_not_verify(receiver, secret, make_message, make_context) -> None:
    await handle(make_message("Çok güzel ✓"), None, make_context(params(receiver)))
    [got] = receiver.received
    assert "Çok güzel ✓".encode() in got.body  # UTF-8, not \u escapes
    tampered = got.body.replace(b"7889", b"7888")
    forged = "sha256=" + hmac.new(secret.encode(), tampered, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(got.headers["X-Keyrouter-Signature"], forged)
    assert json.loads(got.body)["match"] is None


async def test_the_key_is_the_same_on_a_retry(receiver, secret, make_message, make_context) -> None:
    receiver.answer(503)
    context = make_context(params(receiver), key="kr-stable")
    message = make_message()
    with pytest.raises(RetryLater):
        await handle(message, None, context)
    await handle(message, None, context)
    first, second = receiver.received
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "kr-stable"
    assert first.body == second.body


async def test_unsigned_without_secret_env(receiver, make_message, make_context) -> None:
    await handle(make_message(), None, make_context({"url": receiver.url}))
    [got] = receiver.received
    assert "X-Keyrouter-Signature" not in got.headers
    assert got.headers["Idempotency-Key"] == IDEMPOTENCY_KEY


async def test_a_missing_secret_names_the_variable(receiver, monkeypatch, make_message, make_context) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(PermanentError, match=SECRET_ENV):
        await handle(make_message(), None, make_context(params(receiver)))
    monkeypatch.setenv(SECRET_ENV, "")
    with pytest.raises(PermanentError, match=SECRET_ENV):
        await handle(make_message(), None, make_context(params(receiver)))
    assert receiver.received == []


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_passing_failures_are_retryable(status, receiver, secret, make_message, make_context) -> None:
    receiver.answer(status)
    with pytest.raises(RetryLater) as caught:
        await handle(make_message(), None, make_context(params(receiver)))
    assert not isinstance(caught.value, PermanentError)
    assert caught.value.retry_after is None
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_is_surfaced(status, receiver, secret, make_message, make_context) -> None:
    receiver.answer(status, {"Retry-After": "120"})
    with pytest.raises(RetryLater) as caught:
        await handle(make_message(), None, make_context(params(receiver)))
    assert caught.value.retry_after == 120.0
    copy = pickle.loads(pickle.dumps(caught.value))  # crosses process boundaries intact
    assert (type(copy), copy.retry_after, str(copy)) == (RetryLater, 120.0, str(caught.value))


async def test_retry_after_as_an_http_date(receiver, secret, make_message, make_context) -> None:
    receiver.answer(503, {"Retry-After": formatdate(time.time() + 90, usegmt=True)})
    with pytest.raises(RetryLater) as caught:
        await handle(make_message(), None, make_context(params(receiver)))
    assert caught.value.retry_after is not None and 85 <= caught.value.retry_after <= 91


def test_retry_after_parsing() -> None:
    assert retry_after(None) is None
    assert retry_after("") is None
    assert retry_after("soon") is None
    assert retry_after(" 5 ") == 5.0
    assert retry_after("-3") == 0.0
    assert retry_after("nan") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 413, 422, 301, 302])
async def test_other_answers_are_permanent(status, receiver, secret, make_message, make_context) -> None:
    receiver.answer(status, {"Location": "http://elsewhere.example/"} if status < 400 else {})
    with pytest.raises(PermanentError, match=f"HTTP {status}"):
        await handle(make_message(), None, make_context(params(receiver)))
    assert len(receiver.received) == 1  # no redirect followed


async def test_a_slow_receiver_times_out_as_retryable(receiver, secret, make_message, make_context) -> None:
    receiver.answer(200, delay=5.0)
    started = time.monotonic()
    with pytest.raises(RetryLater, match=r"no answer within 0\.3s") as caught:
        await handle(make_message(), None, make_context(params(receiver, timeout=0.3)))
    assert time.monotonic() - started < 2.0
    assert not isinstance(caught.value, PermanentError)
    assert caught.value.__context__ is None and caught.value.__cause__ is None


async def test_a_refused_connection_is_retryable(secret, make_message, make_context) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = make_context({"url": f"http://127.0.0.1:{port}/x", "secret_env": SECRET_ENV, "timeout": "2s"})
    with pytest.raises(RetryLater, match="connection failed") as caught:
        await handle(make_message(), None, context)
    assert not isinstance(caught.value, PermanentError)


async def test_errors_show_no_secret_and_no_url_credentials(
    receiver, secret, make_message, make_context
) -> None:
    url = receiver.url.replace("http://", "http://user:pa55word@") + "?token=tok-123"
    for status in (500, 400):
        receiver.answer(status)
        with pytest.raises(Exception) as caught:
            await handle(make_message(), None, make_context({"url": url, "secret_env": SECRET_ENV}))
        shown = f"{caught.value} {caught.value!r}"
        for leak in (SECRET, "pa55word", "tok-123", "user"):
            assert leak not in shown
        assert "/hooks/sms" in shown
    assert receiver.received[0].path == "/hooks/sms?token=tok-123"  # the full URL was used


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({}, "url param is required"),
        ({"url": "ftp://x/y"}, "http:// or https://"),
        ({"url": "https://"}, "http:// or https://"),
        ({"url": "https://exa mple.com/"}, "space"),
        ({"url": "https://x", "secret_env": "NOT A NAME"}, "secret_env must be the NAME"),
        ({"url": "https://x", "timeout": 0}, "timeout"),
        ({"url": "https://x", "timeout": "soon"}, "timeout"),
        ({"url": "https://x", "timeout": True}, "timeout"),
        ({"url": "https://x", "secret": "abc"}, "unknown param(s) secret"),
    ],
)
async def test_bad_params_are_permanent(bad, needle, make_message, make_context) -> None:
    assert needle in (params_problem(bad) or "")
    with pytest.raises(PermanentError, match="webhook"):
        await handle(make_message(), None, make_context(bad))


def test_good_params() -> None:
    assert params_problem({"url": "https://crm.example/sms", "secret_env": "X_1", "timeout": "30s"}) is None
    assert params_problem({"url": "http://127.0.0.1:8080/", "timeout": 2.5}) is None
