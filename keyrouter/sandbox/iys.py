"""A real local stand-in for İYS: token endpoint, consents, consent status, scripted failures.

`FakeIys` is an HTTP server on 127.0.0.1 (not a mock): the `iys` handler runs its real client
against it, in tests and in `keyrouter replay --sandbox`.  It keeps İYS's shapes as public clients
show them (docs/compliance.md, "İYS"): `POST /oauth2/token` (password and refresh_token grants),
`POST /sps/{iysCode}/brands/{brandCode}/consents` (200 with `transactionId`) and `.../consents/status`
(the latest record, 404 when none), errors as `{"errors": [{"code", "message"}]}`.  The codes
İYS documents are İYS's own (docs/ordering-and-masking.md): a recipient's first record cannot be
RET (400, H175: no consent to withdraw); a record with the status already held is refused (400,
H174); an unknown service provider code is 404 H001 and an unknown brand code 404 H353, on every
brand path.  The other codes and texts (a status query for a recipient with no record,
malformed bodies) are stand-ins.  Tokens expire after
`token_ttl` seconds of `clock`.  `fail_next(endpoint, kind)` scripts failures: a status code
(with `retry_after` for 429/503), 401 (once, the token stays good), "expired" (every token issued
so far stops working), "no_record", "duplicate", "reset" or "hang" (the record is applied, then no
answer comes until the fake stops: a process killed while waiting has "lost" a success).
`no_record` and `duplicate` answer İYS's H175 and H174.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from keyrouter import timefmt
from keyrouter.sandbox.wire import LocalServer

__all__ = ["ENDPOINTS", "FakeIys", "IysRequest"]

ENDPOINTS = ("token", "consents", "status")
_SPS = re.compile(r"/sps/([^/]+)/brands/([^/]+)/consents(/status)?/?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_E164 = re.compile(r"\+[1-9]\d{6,13}")
_SOURCES = frozenset({"HS_MESAJ", "HS_WEB", "HS_MOBIL", "HS_CAGRI_MERKEZI", "HS_FIZIKSEL_ORTAM",
                      "HS_ISLAK_IMZA", "HS_EPOSTA", "HS_SOSYAL_MEDYA", "HS_EORTAM", "HS_ETKINLIK",
                      "HS_ATM", "HS_2015", "HS_KARAR"})


class IysRequest(NamedTuple):
    endpoint: str  # token | consents | status, or the raw path
    body: Any
    authorization: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeIys

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up are normal here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_PUT = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class FakeIys(LocalServer):
    """İYS on 127.0.0.1.  `records` (accepted consents, with transactionId), `requests` and
    `token_requests` are plain containers the server changes under `lock`."""

    def __init__(self, username: str = "iys-user", password: str = "iys-secret-pass", *,
                 iys_code: str = "700001", brand_code: str = "700001", token_ttl: float = 7200.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(_Server, _Handler)
        self.username, self.password = username, password
        self.iys_code, self.brand_code = iys_code, brand_code
        self.token_ttl = token_ttl
        self.clock = clock
        self.records: list[dict[str, Any]] = []
        self.requests: list[IysRequest] = []
        self.token_requests: list[str] = []  # the grant type of each token request
        self._tokens: dict[str, float] = {}  # access token -> expiry (clock)
        self._refresh: dict[str, float] = {}
        self._faults: defaultdict[str, deque[tuple[Any, ...]]] = defaultdict(deque)
        self._tx = itertools.count(1)

    def settings(self) -> dict[str, str]:
        """Settings fields pointing keyrouter at this fake."""
        return {"iys_username": self.username, "iys_password": self.password,
                "iys_code": self.iys_code, "iys_brand_code": self.brand_code,
                "iys_base_url": self.base_url}

    # -- test controls ------------------------------------------------------------------------

    def fail_next(self, endpoint: str, kind: int | str, times: int = 1, *,
                  retry_after: str | None = None) -> None:
        """Script the next `times` calls to `endpoint` (token, consents, status)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        if not (isinstance(kind, int) or kind in ("expired", "no_record", "duplicate", "reset", "hang")):
            raise ValueError(f"unknown fault {kind!r}")
        with self.lock:
            self._faults[endpoint].extend([(kind, retry_after)] * times)

    def clear_faults(self, endpoint: str | None = None) -> None:
        """Drop the faults still queued for `endpoint` (all endpoints when None): an outage ends."""
        with self.lock:
            for name in [endpoint] if endpoint else list(self._faults):
                self._faults[name].clear()

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working now (revoked or expired early)."""
        with self.lock:
            self._tokens = dict.fromkeys(self._tokens, float("-inf"))

    def add_record(self, recipient: str, status: str = "ONAY", *, type: str = "MESAJ",
                   recipient_type: str = "BIREYSEL", consent_date: str = "2026-01-01 10:00:00",
                   source: str = "HS_WEB") -> None:
        """A record İYS already holds (received through another channel)."""
        with self.lock:
            self.records.append({"recipient": recipient, "type": type, "source": source,
                                 "status": status, "consentDate": consent_date,
                                 "recipientType": recipient_type, "transactionId": self._next_tx()})

    def held(self, recipient: str, type: str = "MESAJ", recipient_type: str = "BIREYSEL"
             ) -> dict[str, Any] | None:
        """The latest record for a recipient and channel, or None."""
        with self.lock:
            found = [r for r in self.records if (r["recipient"], r["type"], r["recipientType"])
                     == (recipient, type, recipient_type)]
        return found[-1] if found else None

    # -- serving ------------------------------------------------------------------------------

    def _next_tx(self) -> str:
        return f"fake-{next(self._tx):06d}-{secrets.token_hex(4)}"

    def _serve(self, handler: _Handler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = handler.headers.get("Authorization")
        m = _SPS.fullmatch(handler.path)
        endpoint = "token" if handler.path.rstrip("/") == "/oauth2/token" else \
            ("status" if m.group(3) else "consents") if m else handler.path
        with self.lock:
            self.requests.append(IysRequest(endpoint, body, auth))
            faults = self._faults.get(endpoint)
            fault = faults.popleft() if faults else None
        if handler.command != "POST":
            return _json(handler, 405, _errors("H405", "Yalnızca POST"))
        if fault is not None:
            return self._fault(handler, fault, endpoint, m is not None, auth, body)
        return self._answer(handler, endpoint, m, auth, body)

    def _fault(self, handler: _Handler, fault: tuple[Any, str | None], endpoint: str,
               known_path: bool, auth: str | None, body: Any) -> None:
        """A scripted failure instead of the answer (fail_next)."""
        kind, retry_after = fault
        if kind == "hang":  # the record is made, the answer never comes
            if endpoint == "consents" and known_path and self._authorized(auth):
                self._consent(body)
            self._stopping.wait(120)
            handler.close_connection = True
            return None
        if kind == "reset":
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.close()
            return None
        if kind == "expired":
            self.expire_tokens()
            return _json(handler, 401, {"error": "invalid_token", "message": "Token süresi doldu"})
        if kind == 401:
            return _json(handler, 401, {"error": "invalid_token", "message": "Yetkisiz"})
        if kind == "no_record":
            return _json(handler, 400, _errors(*_FIRST_RET))
        if kind == "duplicate":
            return _json(handler, 400, _errors(*_same_status("RET")))
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return _json(handler, int(kind), _errors(f"H{kind}", "Geçici hata"), headers)

    def _answer(self, handler: _Handler, endpoint: str, m: re.Match[str] | None,
                auth: str | None, body: Any) -> None:
        """İYS's answer: a token, or a consent or status query under the right codes."""
        if endpoint == "token":
            return _json(handler, *self._token(body))
        if m is None:  # an unknown path: a web server's 404, without İYS's error body
            return _json(handler, 404, {"error": "Not Found"})
        if not self._authorized(auth):
            return _json(handler, 401, {"error": "invalid_token", "message": "Yetkisiz"})
        if m.group(1) != self.iys_code:
            return _json(handler, 404, _errors("H001", f"Hizmet Sağlayıcı:{m.group(1)} bulunamadı."))
        if m.group(2) != self.brand_code:
            return _json(handler, 404, _errors(
                "H353", "brandCode, kullanıcı izinleriyle eşleştirilemiyor"))
        if endpoint == "status":
            return _json(handler, *self._status(body))
        return _json(handler, *self._consent(body))

    def _token(self, body: Any) -> tuple[int, dict[str, Any]]:
        body = body if isinstance(body, dict) else {}
        grant = body.get("grant_type")
        now = self.clock()
        with self.lock:
            self.token_requests.append(str(grant))
            if grant == "password":
                ok = body.get("username") == self.username and body.get("password") == self.password
            elif grant == "refresh_token":
                ok = self._refresh.get(str(body.get("refresh_token")), float("-inf")) > now
            else:
                return 400, {"error": "unsupported_grant_type", "error_description": "grant_type"}
            if not ok:
                return 401, {"error": "invalid_grant", "error_description": "Kullanıcı adı veya şifre hatalı"}
            access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
            self._tokens[access] = now + self.token_ttl
            self._refresh[refresh] = now + 2 * self.token_ttl
        return 200, {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                     "expires_in": int(self.token_ttl), "refresh_expires_in": int(2 * self.token_ttl)}

    def _authorized(self, auth: str | None) -> bool:
        if not auth or not auth.startswith("Bearer "):
            return False
        with self.lock:
            return self._tokens.get(auth[7:], float("-inf")) > self.clock()

    def _status(self, body: Any) -> tuple[int, dict[str, Any]]:
        body = body if isinstance(body, dict) else {}
        held = self.held(str(body.get("recipient")), str(body.get("type")),
                         str(body.get("recipientType", "BIREYSEL")))
        if held is None:
            return 404, _errors("H_NOT_FOUND", "Alıcıya ait izin bulunamadı")
        return 200, {k: v for k, v in held.items() if k != "transactionId"}

    def _consent(self, body: Any) -> tuple[int, dict[str, Any]]:
        problem = _invalid(body)
        if problem:
            return 400, _errors("H_INVALID", problem)
        with self.lock:
            held = self.held(body["recipient"], body["type"], body["recipientType"])
            if held is None and body["status"] == "RET":
                return 400, _errors(*_FIRST_RET)
            if held is not None and held["status"] == body["status"]:
                return 400, _errors(*_same_status(body["status"]))
            record = {**body, "transactionId": self._next_tx()}
            self.records.append(record)
        created = timefmt.iys(self.clock())
        return 200, {"transactionId": record["transactionId"], "creationDate": created}


def _invalid(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "İstek gövdesi JSON nesnesi olmalı"
    expected = {"recipient", "type", "source", "status", "consentDate", "recipientType"}
    if set(body) != expected:
        return f"Alanlar hatalı: {sorted(set(body) ^ expected)}"
    if not isinstance(body["recipient"], str) or not (
            _E164.fullmatch(body["recipient"]) or "@" in body["recipient"]):
        return "recipient E.164 telefon numarası veya e-posta olmalı"
    if body["type"] not in ("MESAJ", "ARAMA", "EPOSTA"):
        return "type hatalı"
    if body["source"] not in _SOURCES:
        return "source hatalı"
    if body["status"] not in ("ONAY", "RET"):
        return "status ONAY veya RET olmalı"
    if not isinstance(body["consentDate"], str) or not _DATE.fullmatch(body["consentDate"]):
        return "consentDate YYYY-MM-DD HH:mm:ss olmalı"
    if body["recipientType"] not in ("BIREYSEL", "TACIR"):
        return "recipientType hatalı"
    return None


#: İYS's own answers (its API document): no consent to withdraw, and the status already held.
_FIRST_RET = ("H175", "İlk defa kaydedilen bir iznin durum (status) bilgisi RET olmamalıdır.")


def _same_status(status: str) -> tuple[str, str]:
    return ("H174", "İzin durumu (status) güncellemesi için farklı bir durum girilmelidir. "
            f"İzin durumu: {status}")


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _json(handler: _Handler, code: int, document: dict[str, Any],
          headers: dict[str, str] | None = None) -> None:
    data = json.dumps(document, ensure_ascii=False).encode()
    try:
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    except OSError:
        handler.close_connection = True
