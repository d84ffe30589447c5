"""Async client for the iletiMerkezi endpoints keyrouter uses.

Every answer goes through one place, `IletiMerkezi._check`, which turns provider status codes,
transport failures and malformed bodies into three exception classes, so callers decide
"retry or not" by class alone.  The credentials travel only in request bodies: they never reach a
repr, a log line or an exception text, and httpx errors (which hold the request) are not chained.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Self

import httpx

from keyrouter.message import to_e164
from keyrouter.settings import DEFAULT_BASE_URL

__all__ = [
    "AUTH_HELP",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "DUPLICATE_SMS",
    "NOT_ON_BLACKLIST",
    "STATUS_CODES",
    "ApiError",
    "AuthenticationRefused",
    "IletiMerkezi",
    "Inbox",
    "PermanentApiError",
    "TransientApiError",
]

logger = logging.getLogger("keyrouter.client")

#: The provider's SDKs set none; a hung poll must not stall a worker for ever.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=20.0, write=20.0, pool=5.0)

#: Permanent at this layer; a handler may read them as "already done" (see the reference table).
DUPLICATE_SMS = 451
NOT_ON_BLACKLIST = 474

STATUS_CODES: Mapping[int, str] = MappingProxyType(
    {
        200: "OK",
        400: "malformed request body",
        401: "authentication refused",
        402: "insufficient balance",
        404: "wrong URL or method",
        422: "field validation failed",
        450: "sender name not approved",
        451: "same text to the same recipients within 10 minutes",
        452: "invalid recipients (including numbers on the blacklist)",
        453: "text too long (over 7 SMS)",
        454: "text empty",
        459: "sender empty",
        460: "sender longer than 11 characters or has Turkish letters",
        466: "invalid number",
        468: "iys missing",
        469: "iysList is not BIREYSEL or TACIR",
        474: "cannot remove the block (number not on the blacklist)",
        503: "temporarily unavailable",
    }
)
#: 4xx codes that describe a passing condition, not a bad request (not in the provider's table).
_RETRYABLE_4XX = frozenset({408, 429})

AUTH_HELP = (
    "iletiMerkezi refused the credentials. One of these is the cause: "
    "(1) the API key or hash is wrong "
    "(copy both from the panel, Settings → Security → API Access); "
    '(2) the panel\'s "Allow API access" toggle is off '
    "(Settings → Security → Access Permissions); "
    "(3) an IP allowlist on the account excludes this host. "
    "Retrying does not help: fix the account or the credentials."
)
_MAX_PROVIDER_TEXT = 200


class ApiError(Exception):
    """Any failure talking to iletiMerkezi; `code` is None when no provider answer was read."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        provider_message: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.provider_message = provider_message
        self.endpoint = endpoint

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only fields survive pickling (subprocesses)
        return (type(self), (str(self),), self.__dict__)


class AuthenticationRefused(ApiError):
    """401: retrying cannot help; a worker should stop and say why (AUTH_HELP)."""


class PermanentApiError(ApiError):
    """The provider understood and refused; the same request will be refused again."""


class TransientApiError(ApiError):
    """No usable answer (5xx, timeout, reset, garbage body); the same request may succeed later."""


@dataclass(frozen=True, slots=True)
class Inbox:
    """One get-inbox answer: the raw rows, and the provider's own count of them."""

    rows: list[dict[str, Any]]
    total_rows: int | None

    @property
    def shortfall(self) -> int:
        """Rows the provider counted but did not return (pagination is undocumented)."""
        if self.total_rows is None:
            return 0
        return max(0, self.total_rows - len(self.rows))


class _Secret(str):
    """A credential: serialized as itself, but masked wherever a repr could print it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class IletiMerkezi:
    """One reused connection pool to the provider; `async with` it, or call `aclose()`."""

    def __init__(
        self,
        key: str,
        hash: str,  # the provider's own name for it
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._secrets = tuple(_Secret(s) for s in (str(key), str(hash)) if s)
        self._auth = {"key": _Secret(key), "hash": _Secret(hash)}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout or DEFAULT_TIMEOUT,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "keyrouter"},
        )
        self._last_shortfall: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"IletiMerkezi(base_url={self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- endpoints -------------------------------------------------------------------------

    async def get_inbox(self) -> Inbox:
        """The whole inbox as the provider returns it; rows are left raw for `parse_row`."""
        response = await self._call("get-inbox", {})
        orders = response.get("orders")
        if orders is None or orders == [] or orders == "":  # an empty inbox, PHP-style
            orders = {}
        if not isinstance(orders, dict):
            raise self._malformed("get-inbox", f"orders is {type(orders).__name__}")
        rows = self._rows(orders.get("order"))
        inbox = Inbox(rows=rows, total_rows=_as_int(orders.get("totalRows")))
        self._note_shortfall(inbox)
        return inbox

    async def add_blacklist(self, number: str) -> None:
        """Idempotent at the provider: adding a blocked number again answers 200."""
        await self._call("add-blacklist", {"blacklist": {"number": _wire_number(number)}})

    async def delete_blacklist(self, number: str) -> None:
        """Not idempotent: a number not on the list raises PermanentApiError(474)."""
        await self._call("delete-blacklist", {"blacklist": {"number": _wire_number(number)}})

    async def get_blacklist_page(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """One get-blacklist call: the answer's `blacklist` object ({} when absent).  `options`
        are the request's `blacklist` fields (page, rowCount, filter); keyrouter.blacklist_client
        pages through the whole list."""
        response = await self._call("get-blacklist", {"blacklist": dict(options)})
        body = response.get("blacklist")
        return body if isinstance(body, dict) else {}

    async def send_sms(
        self,
        *,
        sender: str,
        text: str,
        numbers: list[str],
        iys: str = "0",
        iys_list: str = "BIREYSEL",
    ) -> str:
        """Send now; returns the provider's order id.

        `iys="0"` marks a transactional message (a reply, an opt-out confirmation).  A 200 without
        an order id raises TransientApiError although the SMS may be out: a retry then meets 451.
        """
        if not numbers:
            raise ValueError("send_sms needs at least one number")
        order = {
            "sender": sender,
            "sendDateTime": [],
            "iys": str(iys),
            "iysList": iys_list,
            "message": {"text": text, "receipents": {"number": [_wire_number(n) for n in numbers]}},
        }
        response = await self._call("send-sms", {"order": order})
        placed = response.get("order")
        order_id = _as_id(placed.get("id")) if isinstance(placed, dict) else None
        if order_id is None:
            raise self._malformed("send-sms", "no order.id in a 200 answer")
        return order_id

    # --- the one place where answers become results or errors ------------------------------

    async def _call(self, endpoint: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST one request; return the `response` object of a 200 answer, or raise."""
        body = {"request": {"authentication": self._auth, **payload}}
        failure: ApiError | None = None
        try:
            answer = await self._http.post(f"/v1/{endpoint}/json", json=body)
        except httpx.UnsupportedProtocol as exc:
            failure = PermanentApiError(
                self._text(f"iletiMerkezi {endpoint}: {exc}"), endpoint=endpoint
            )
        except httpx.TimeoutException as exc:
            failure = TransientApiError(
                f"iletiMerkezi {endpoint}: no answer in time ({type(exc).__name__})",
                endpoint=endpoint,
            )
        except httpx.HTTPError as exc:
            said = self._text(str(exc))
            detail = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
            failure = TransientApiError(
                f"iletiMerkezi {endpoint}: connection failed ({detail})", endpoint=endpoint
            )
        # Raised here, outside the except clauses, so the httpx error (whose request carries the
        # credentials) is neither the cause nor the context of what callers see.
        if failure is not None:
            raise failure
        return self._check(endpoint, answer)

    def _check(self, endpoint: str, answer: httpx.Response) -> dict[str, Any]:
        document = _json_object(answer.content)
        response = document.get("response") if document is not None else None
        status = response.get("status") if isinstance(response, dict) else None
        code = _as_int(status.get("code")) if isinstance(status, dict) else None
        if code is None or not isinstance(response, dict) or not isinstance(status, dict):
            if answer.is_success:
                what = "no response.status.code" if document is not None else "a body not JSON"
                raise self._malformed(endpoint, f"HTTP {answer.status_code} with {what}")
            kind = answer.headers.get("content-type", "no content type").split(";")[0]
            raise self._error(endpoint, answer.status_code, None, f"{kind} body")
        if code != 200:
            message = status.get("message")
            raise self._error(endpoint, code, None if message is None else str(message))
        return response

    def _error(
        self, endpoint: str, code: int, provider_message: str | None, detail: str = ""
    ) -> ApiError:
        """Status code -> exception class: 401 auth, other 4xx permanent, the rest transient."""
        said = self._text(provider_message)[:_MAX_PROVIDER_TEXT] if provider_message else None
        text = f"iletiMerkezi {endpoint}: {code} {_meaning(code)}"
        if said:
            text += f" (provider says {said!r})"
        if detail:
            text += f" ({detail})"
        cls: type[ApiError]
        if code == 401:
            cls, text = AuthenticationRefused, f"{text}. {AUTH_HELP}"
        elif 400 <= code < 500 and code not in _RETRYABLE_4XX:
            cls = PermanentApiError
        else:
            cls = TransientApiError
        return cls(text, code=code, provider_message=said, endpoint=endpoint)

    def _malformed(self, endpoint: str, detail: str) -> TransientApiError:
        return TransientApiError(
            f"iletiMerkezi {endpoint}: unexpected answer ({detail})", code=200, endpoint=endpoint
        )

    def _text(self, text: str | None) -> str:
        """Defence in depth: blank out the credentials in any text bound for a log or an error."""
        text = text or ""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _rows(self, order: object) -> list[dict[str, Any]]:
        if order is None or order == "":
            return []
        if isinstance(order, dict):  # a single row, not wrapped in a list
            return [order]
        if not isinstance(order, list):
            raise self._malformed("get-inbox", f"orders.order is {type(order).__name__}")
        rows = [row for row in order if isinstance(row, dict)]
        if len(rows) < len(order):
            dropped = len(order) - len(rows)
            logger.warning("get-inbox: ignored %d rows that are not JSON objects", dropped)
        return rows

    def _note_shortfall(self, inbox: Inbox) -> None:
        """Warn once per new (total, returned) pair, so a steady shortfall does not flood logs."""
        if not inbox.shortfall:
            self._last_shortfall = None
            return
        pair = (inbox.total_rows or 0, len(inbox.rows))
        if pair != self._last_shortfall:
            self._last_shortfall = pair
            logger.warning(
                "get-inbox returned %d rows but totalRows is %d: the provider's pagination is "
                "undocumented, so %d messages may be out of reach",
                pair[1],
                pair[0],
                inbox.shortfall,
            )


def _meaning(code: int) -> str:
    if code in STATUS_CODES:
        return STATUS_CODES[code]
    return "server error" if 500 <= code < 600 else "unknown status code"


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(content)
    except ValueError:  # includes UnicodeDecodeError
        return None
    return document if isinstance(document, dict) else None


def _as_int(value: object) -> int | None:
    """`200`, `"200"`, `" 200 "`, `200.0` -> 200; anything else (junk, bool, None) -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _as_id(value: object) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() or None


def _wire_number(number: str) -> str:
    """Turkish mobiles in any common form -> `905XXXXXXXXX`; others go as given, for the provider
    to refuse with its own code (466, 452) through the usual error path."""
    e164 = to_e164(number)
    return e164[1:] if e164 else str(number).strip()
