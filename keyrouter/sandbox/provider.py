"""A real local stand-in for iletiMerkezi (re-exported by keyrouter.testing), for testing rules,
handlers and workers end to end, and behind `replay --sandbox`.

`FakeIletiMerkezi` is an HTTP server on 127.0.0.1, not a mock: the code under test runs its real
client, timeouts and JSON parsing, and worker subprocesses reach it through `base_url`.  It keeps
the provider's JSON shapes and quirks (codes mirrored in the HTTP status, `receipents`, 451, 474)
and can inject the faults a real network shows.

Faults (`fail_next`) replace the answer.  A status code, "html502" and "reset" are answered before
the request is applied; "truncated" applies it and cuts the answer (the provider did the work, the
answer was lost); "slow:S" waits S seconds, then applies and answers normally, so a client that
timed out meanwhile has "lost" a successful answer too.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from keyrouter.message import TURKEY, to_e164
from keyrouter.sandbox.blacklist import Listing, blacklist_page
from keyrouter.sandbox.wire import (
    HTML_502,
    FakeHandler,
    FakeServer,
    LocalServer,
    parse_fault,
    parse_json,
    reset,
    send,
)

__all__ = [
    "ENDPOINTS",
    "FakeIletiMerkezi",
    "RecordedRequest",
    "SentSms",
    "inbox_response",
]

ENDPOINTS = ("get-inbox", "add-blacklist", "delete-blacklist", "get-blacklist", "send-sms",
             "get-balance", "get-sender")
#: How get-inbox treats `page`/`rowCount` (undocumented): ignore them, honour them, or answer 400.
PAGING = ("ignored", "honoured", "refused")

#: Only 200, 401 and 474 are quoted from the provider; the other texts are stand-ins.
MESSAGES = {
    200: "İşlem başarılı",
    400: "İstek çözümlenemedi",
    401: "Üyelik bilgileri hatalı",
    402: "Bakiye yetersiz",
    404: "Geçersiz istek",
    422: "Geçersiz alan",
    450: "Gönderici adı onaylı değil",
    451: "Tekrar eden gönderim",
    452: "Alıcı numaraları hatalı",
    453: "Mesaj metni çok uzun",
    454: "Mesaj metni boş",
    459: "Gönderici adı boş",
    460: "Gönderici adı hatalı",
    466: "Geçersiz numara",
    468: "İYS alanı eksik",
    469: "İYS listesi hatalı",
    474: "Bu numara üzerindeki engelleme kaldırılamaz",
    503: "Servis geçici olarak kullanılamıyor",
}
_TURKISH_LETTERS = frozenset("çğıöşüÇĞİÖŞÜ")
_MAX_TEXT = 7 * 153  # seven concatenated GSM-7 parts: a rough stand-in for the provider's check
_PATH = re.compile(r"/v1/([a-z-]+)/json/?")
class RecordedRequest(NamedTuple):
    """What the fake received: the endpoint (or the raw path) and the parsed body (or None)."""

    endpoint: str
    body: Any


@dataclass(frozen=True, slots=True)
class SentSms:
    """One accepted send-sms order, numbers in E.164."""

    id: str
    sender: str
    text: str
    numbers: tuple[str, ...]
    iys: str
    iys_list: str | None
    at: float


def inbox_response(
    rows: Iterable[dict[str, Any]], total_rows: int | str | None = None
) -> dict[str, Any]:
    """A get-inbox 200 body as the provider writes it (totalRows a string), e.g. for saved files."""
    rows = list(rows)
    total = len(rows) if total_rows is None else total_rows
    return _document(200, orders={"totalRows": str(total), "order": rows})


def _document(code: int | str, **extra: Any) -> dict[str, Any]:
    message = MESSAGES.get(int(code), "Hata")
    return {"response": {"status": {"code": code, "message": message}, **extra}}


class FakeIletiMerkezi(LocalServer):
    """The provider on 127.0.0.1, with state tests can read and change while it serves.

    `inbox` (rows), `blacklist` (E.164 numbers), `sent` and `requests` are plain containers; the
    server changes them under `lock`, and so should tests that do more than one step at a time.
    """

    def __init__(
        self,
        key: str = "test-key",
        hash: str = "test-hash",  # the provider's own name for it
        *,
        inbox: Iterable[dict[str, Any]] = (),
        blacklist: Iterable[str] = (),
        total_rows: int | str | None = None,
        approved_senders: Iterable[str] | None = None,
        code_as_string: bool = False,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(FakeServer, FakeHandler, host)
        self.key = key
        self.hash = hash
        self.inbox: list[dict[str, Any]] = list(inbox)
        self.blacklist: set[str] = {to_e164(n) or str(n) for n in blacklist}
        #: When each number joined the blacklist (epoch seconds), for get-blacklist's date filter;
        #: a number without one (put in `blacklist` directly) counts as added at start-up.
        self.blacklist_dates: dict[str, float] = {}
        self._listing = Listing(clock())
        self._blacklist_version = 0
        self.sent: list[SentSms] = []
        self.requests: list[RecordedRequest] = []
        #: get-inbox's totalRows when set (sent as a string); None: the number of rows.
        self.total_rows = total_rows
        #: None accepts any well-formed sender; a set answers 450 for the others.
        self.approved_senders = None if approved_senders is None else set(approved_senders)
        #: The provider sends status codes as numbers or strings; True sends strings.
        self.code_as_string = code_as_string
        self.duplicate_window = 600.0
        #: get-balance's answer (amount in TL, SMS credits), as strings like the provider's.
        self.balance = {"amount": "100.50", "sms": "1000"}
        #: Seconds added to the `Date` header of every answer (a provider clock ahead of ours).
        self.date_skew = 0.0
        #: One of PAGING: what get-inbox does with `page` and `rowCount`.
        self.inbox_paging = "ignored"
        self.clock = clock
        self._faults: defaultdict[str, deque[tuple[Any, ...]]] = defaultdict(deque)
        self._ids = itertools.count(1)
        self._order_ids = itertools.count(100001)

    # --- test controls -------------------------------------------------------------------

    def fail_next(self, endpoint: str, kind: int | str, times: int = 1) -> None:
        """Make the next `times` calls to `endpoint` fail: a status code (provider JSON error),
        "html502", "truncated", "reset" (socket closed, no answer) or "slow:SECONDS"."""
        self._check_endpoint(endpoint)
        fault = parse_fault(kind)
        with self.lock:
            self._faults[endpoint].extend([fault] * times)

    def clear_faults(self, endpoint: str | None = None) -> None:
        """Drop the faults still queued for `endpoint` (all endpoints when None): an outage ends."""
        with self.lock:
            for name in [endpoint] if endpoint else list(self._faults):
                self._faults[name].clear()

    def reply_next(
        self, endpoint: str, body: dict[str, Any] | str, *, status: int = 200, times: int = 1
    ) -> None:
        """Answer the next `times` calls with this exact body, to reproduce a drifted shape.

        A dict is sent as JSON, a str as an HTML page (what proxies and error pages send).
        """
        self._check_endpoint(endpoint)
        with self.lock:
            self._faults[endpoint].extend([("reply", status, copy.deepcopy(body))] * times)

    def add_message(
        self,
        text: str,
        *,
        sender: str = "+905551234567",
        number: str = "+908505550000",
        id: str | None = None,
        date: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Append an inbound row shaped like the provider's, and return it.

        Ids count up from 1; pass `id` for your own (opaque, like the provider's).
        """
        when = date or datetime.now(TURKEY)
        if isinstance(when, datetime) and when.tzinfo is not None:
            when = when.astimezone(TURKEY)  # the provider writes Turkey time without an offset
        row = {
            "id": id or str(next(self._ids)),
            "date": when if isinstance(when, str) else when.strftime("%Y-%m-%d %H:%M:%S"),
            "sender": sender,
            "number": number,
            "text": text,
        }
        with self.lock:
            self.inbox.append(row)
        return row

    # --- serving -------------------------------------------------------------------------

    def _serve(self, handler: FakeHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        match = _PATH.fullmatch(handler.path)
        endpoint = match.group(1) if match and handler.command == "POST" else None
        body = parse_json(raw)
        with self.lock:
            self.requests.append(RecordedRequest(endpoint or handler.path, body))
            faults = self._faults.get(endpoint or "")
            fault: tuple[Any, ...] = faults.popleft() if faults else ()
        kind = fault[0] if fault else None
        if kind == "reset":
            return reset(handler)
        if kind == "slow" and self._stopping.wait(fault[1]):
            return reset(handler)
        if kind == "html502":
            return send(handler, 502, HTML_502, "text/html; charset=utf-8")
        if kind == "reply" and isinstance(fault[2], str):
            return send(handler, fault[1], fault[2].encode(), "text/html; charset=utf-8")
        if kind == "reply":
            return self._send_json(handler, fault[1], fault[2])
        code, document = (
            (fault[1], self._status(fault[1])) if kind == "code" else self._answer(endpoint, body)
        )
        if kind == "truncated":
            encoded = json.dumps(document, ensure_ascii=False).encode()
            return send(handler, code, encoded[: len(encoded) // 2], "application/json")
        return self._send_json(handler, code, document)

    def _send_json(self, handler: FakeHandler, code: int, document: dict[str, Any]) -> None:
        try:
            encoded = json.dumps(document, ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate in a row (half an emoji): as a \u escape,
            encoded = json.dumps(document).encode()  # the only way JSON can carry it
        send(handler, code, encoded, "application/json; charset=utf-8")

    def _status(self, code: int, **extra: Any) -> dict[str, Any]:
        return _document(str(code) if self.code_as_string else code, **extra)

    def _answer(self, endpoint: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        if endpoint not in ENDPOINTS:
            return 404, self._status(404)
        request = body.get("request") if isinstance(body, dict) else None
        if not isinstance(request, dict):
            return 400, self._status(400)
        auth = request.get("authentication")
        if not isinstance(auth, dict) or (auth.get("key"), auth.get("hash")) != (
            self.key,
            self.hash,
        ):
            return 401, self._status(401)
        code, extra = getattr(self, "_" + endpoint.replace("-", "_"))(request)
        return code, self._status(code, **extra)

    # --- endpoints: (code, extra response fields) ----------------------------------------

    def _get_inbox(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            rows = copy.deepcopy(self.inbox)
            total = self.total_rows
        if ("page" in request or "rowCount" in request) and self.inbox_paging != "ignored":
            if self.inbox_paging == "refused":
                return 400, {}
            page = max(1, _int(request.get("page"), 1))
            size = max(1, _int(request.get("rowCount"), 1000))
            total = len(rows) if total is None else total
            rows = rows[(page - 1) * size : page * size]
        return 200, {"orders": inbox_response(rows, total)["response"]["orders"]}

    def _add_blacklist(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        number = _blacklist_number(request)
        if number is None:
            return 466, {}
        with self.lock:
            if number not in self.blacklist:
                self.blacklist_dates[number] = self.clock()
                self._blacklist_version += 1
            self.blacklist.add(number)
        return 200, {}

    def add_from_panel(self, *numbers: str, at: float | None = None) -> None:
        """Numbers blacklisted outside the API (a click on the iim.to opt-out link, a RET the
        panel handled, a person in the panel): on the list, with no inbox row.  `at`: when, in
        epoch seconds (default now)."""
        when = self.clock() if at is None else at
        with self.lock:
            for raw in numbers:
                number = to_e164(raw) or str(raw)
                self.blacklist.add(number)
                self.blacklist_dates[number] = when
            self._blacklist_version += 1

    def _delete_blacklist(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        number = _blacklist_number(request)
        if number is None:
            return 466, {}
        with self.lock:
            if number not in self.blacklist:
                return 474, {}
            self.blacklist.discard(number)
            self.blacklist_dates.pop(number, None)
            self._blacklist_version += 1
        return 200, {}

    def _get_blacklist(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            listing = self._listing.rows(self.blacklist, self.blacklist_dates, self._blacklist_version)
        return blacklist_page(listing, request)

    def _get_balance(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"balance": dict(self.balance)}

    def _get_sender(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The approved sender names (none when `approved_senders` is None: any is accepted)."""
        return 200, {"senders": {"sender": sorted(self.approved_senders or ())}}

    def _send_sms(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        order = request.get("order")
        if not isinstance(order, dict):
            return 400, {}
        sender = str(order.get("sender") or "")
        given = order.get("message")
        message: dict[str, Any] = given if isinstance(given, dict) else {}
        text = str(message.get("text") or "")
        iys = None if order.get("iys") is None else str(order.get("iys"))
        iys_list = order.get("iysList")
        if not sender:
            return 459, {}
        if len(sender) > 11 or _TURKISH_LETTERS & set(sender):
            return 460, {}
        if self.approved_senders is not None and sender not in self.approved_senders:
            return 450, {}
        if iys not in ("0", "1"):
            return 468, {}
        if iys == "1" and iys_list not in ("BIREYSEL", "TACIR"):
            return 469, {}
        if not text:
            return 454, {}
        if len(text) > _MAX_TEXT:
            return 453, {}
        numbers = _recipients(message)
        with self.lock:
            if not numbers or self.blacklist.intersection(numbers):
                return 452, {}
            now = self.clock()
            for earlier in self.sent:
                same = earlier.text == text and set(earlier.numbers) == set(numbers)
                if same and now - earlier.at < self.duplicate_window:
                    return 451, {}
            sms = SentSms(str(next(self._order_ids)), sender, text, numbers, iys, iys_list, now)
            self.sent.append(sms)
        return 200, {"order": {"id": sms.id}}

    @staticmethod
    def _check_endpoint(endpoint: str) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def _blacklist_number(request: dict[str, Any]) -> str | None:
    options = request.get("blacklist")
    return to_e164(options.get("number")) if isinstance(options, dict) else None


def _recipients(message: dict[str, Any]) -> tuple[str, ...]:
    """E.164 recipients, or () when any of them is not a Turkish mobile (the provider's 452)."""
    holder = message.get("receipents")
    numbers = holder.get("number") if isinstance(holder, dict) else None
    if isinstance(numbers, str):
        numbers = [numbers]
    if not isinstance(numbers, list):
        return ()
    parsed = [to_e164(n) for n in numbers]
    return () if None in parsed else tuple(n for n in parsed if n)


