"""The İYS (İleti Yönetim Sistemi) API over httpx: one consent record at a time.

Facts (docs/compliance.md, "İYS"; gathered from independent public clients of the API):
- token: `POST {base}/oauth2/token`, JSON `{"username", "password", "grant_type": "password"}`
  (or `{"refresh_token", "grant_type": "refresh_token"}`), answered with `access_token`,
  `refresh_token`, `expires_in`, `refresh_expires_in` (seconds); calls send `Bearer <token>`;
- add: `POST {base}/sps/{iysCode}/brands/{brandCode}/consents`, answered 200 with `transactionId`
  and `creationDate`;
- status: `POST {base}/sps/{iysCode}/brands/{brandCode}/consents/status` with `recipient`,
  `type`, `recipientType`: the consent İYS holds;
- errors: `{"errors": [{"code", "message"}]}`, with İYS's documented codes
  (docs/ordering-and-masking.md, "İYS's answers"): H175 on an add (a recipient's first record
  cannot be RET: İYS holds no consent to withdraw), H174 (the status must differ from the one held:
  İYS already holds it), H353 (iysCode or brandCode do not match the account), H001 (no such
  service provider).

The token is fetched once and shared by every concurrent call behind an asyncio lock (no token
storm); it is refreshed shortly before it expires, and fetched anew once after a 401 (then a second
401 is permanent).  429, 5xx, timeouts and connection failures are retried here a few times with
exponential backoff honouring `Retry-After`; a wait longer than `max_wait` goes back to the
dispatcher as RetryLater(retry_after) instead of holding a runner.  Any other 4xx is permanent,
with İYS's own error text.  Two refusals are success, and only on İYS's own error code: H175 for
a RET ("nothing_to_withdraw": İYS holds no consent, and a first record cannot be RET) and H174
("already": İYS holds this status); otherwise the consent status is asked and a held equal status
is "already".  A 403/404 that names the brand or the service provider, or a 404 without İYS's
error body (an unknown path), is a configuration error naming the variable (`misconfigured`):
never success, whatever the status query says.

Secrets (password, tokens) never appear in errors, logs or reprs: errors are raised outside the
httpx exception handlers, so no request (with its headers) rides along as a cause.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from keyrouter.providers.iys_errors import (
    CODES_NOT_MATCHED,
    NO_CONSENT_HELD,
    NO_SERVICE_PROVIDER,
    SAME_STATUS,
    error_codes,
    error_text,
    misconfigured,
)
from keyrouter.retries import PermanentError, RetryLater, retry_after
from keyrouter.settings import DEFAULT_IYS_BASE_URL, SANDBOX_IYS_BASE_URL, Settings

__all__ = [
    "CODES_NOT_MATCHED",
    "DEFAULT_IYS_BASE_URL",
    "NO_CONSENT_HELD",
    "NO_SERVICE_PROVIDER",
    "SAME_STATUS",
    "SANDBOX_IYS_BASE_URL",
    "Consent",
    "ConsentResult",
    "IysClient",
    "IysMisconfigured",
    "IysRefused",
    "IysUnavailable",
    "close_shared",
    "error_codes",
    "error_text",
    "misconfigured",
    "shared_client",
]

STATUSES = ("RET", "ONAY")
RECIPIENT_TYPES = ("BIREYSEL", "TACIR")
#: İYS's `source` values (where the decision was expressed; reference in docs/reconciliation.md).
SOURCES = ("HS_MESAJ", "HS_WEB", "HS_MOBIL", "HS_CAGRI_MERKEZI", "HS_FIZIKSEL_ORTAM",
           "HS_ISLAK_IMZA", "HS_EPOSTA", "HS_SOSYAL_MEDYA", "HS_EORTAM", "HS_ETKINLIK", "HS_ATM",
           "HS_2015", "HS_KARAR")
#: Outcomes of one consent call, as the ledger records them.
RECORDED, ALREADY, NOTHING_TO_WITHDRAW = "recorded", "already", "nothing_to_withdraw"

log = logging.getLogger("keyrouter.iys")


class IysRefused(PermanentError):
    """İYS refused the request for good (a 4xx other than 401/429, or credentials refused)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.status))


class IysMisconfigured(IysRefused):
    """İYS's answer blames a setting (`variable`): a wrong code or base URL, never "handled"."""

    def __init__(self, message: str, status: int = 0, variable: str = "") -> None:
        super().__init__(message, status)
        self.variable = variable

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.status, self.variable))


class IysUnavailable(RetryLater):
    """İYS did not answer usefully (429, 5xx, network); try again after `retry_after`."""


@dataclass(frozen=True, slots=True)
class Consent:
    """One consent record, as İYS takes it."""

    recipient: str  # E.164
    status: str  # RET | ONAY
    consent_date: str  # "YYYY-MM-DD HH:mm:ss", Turkey time
    type: str = "MESAJ"
    source: str = "HS_MESAJ"
    recipient_type: str = "BIREYSEL"

    def body(self) -> dict[str, str]:
        return {"recipient": self.recipient, "type": self.type, "source": self.source,
                "status": self.status, "consentDate": self.consent_date,
                "recipientType": self.recipient_type}


@dataclass(frozen=True, slots=True)
class ConsentResult:
    outcome: str  # RECORDED | ALREADY | NOTHING_TO_WITHDRAW
    transaction_id: str | None = None
    detail: str | None = None  # İYS's text, when it refused and that counted as success


class IysClient:
    """One İYS account (service provider code + brand code).  Share one per process and loop."""

    def __init__(
        self,
        username: str,
        password: SecretStr | str,
        iys_code: str,
        brand_code: str,
        base_url: str = DEFAULT_IYS_BASE_URL,
        *,
        timeout: float = 20.0,
        attempts: int = 3,
        backoff: float = 0.5,
        max_wait: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._username = username
        self._password = password if isinstance(password, SecretStr) else SecretStr(password)
        self.iys_code, self.brand_code = str(iys_code), str(brand_code)
        self.base_url = base_url.rstrip("/")
        self.attempts, self.backoff, self.max_wait = attempts, backoff, max_wait
        self._clock = clock
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self._refresh: str | None = None
        self._refresh_expires = 0.0
        #: Token requests made (password or refresh grant): tests count them.
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"IysClient({self.base_url}, iys_code={self.iys_code}, brand_code={self.brand_code})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> IysClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- token -------------------------------------------------------------------------------

    async def token(self, *, stale: str | None = None) -> str:
        """The access token: cached; refreshed shortly before expiry; anew when `stale` (the
        token a 401 refused) is still the cached one.  One request however many callers wait."""
        async with self._lock:
            now = self._clock()
            if self._token is not None and self._token != stale and now < self._expires:
                return self._token
            if stale is None and self._refresh and now < self._refresh_expires:
                try:
                    return await self._grant({"grant_type": "refresh_token",
                                              "refresh_token": self._refresh})
                except IysRefused:
                    log.info("iys: refresh token refused; logging in again")
            return await self._grant({"grant_type": "password", "username": self._username,
                                      "password": self._password.get_secret_value()})

    async def _grant(self, body: dict[str, str]) -> str:
        self.token_requests += 1
        sent_at = self._clock()
        answer = await self._send("token", f"{self.base_url}/oauth2/token", body, auth=False)
        if answer.status_code in (400, 401, 403):
            self._token = self._refresh = None
            raise IysRefused(
                f"İYS refused the login ({answer.status_code}: {error_text(answer)}): check "
                "IYS_USERNAME and IYS_PASSWORD, and IYS_BASE_URL (live or sandbox)", answer.status_code)
        if answer.status_code != 200:
            raise IysRefused(f"İYS token endpoint answered {answer.status_code}: {error_text(answer)}",
                             answer.status_code)
        try:
            doc = answer.json()
            token = doc["access_token"]
            lifetime = float(doc.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError):
            raise IysUnavailable("İYS token endpoint answered 200 without a usable access_token") from None
        if not isinstance(token, str) or not token or not math.isfinite(lifetime):
            raise IysUnavailable("İYS token endpoint answered 200 without a usable access_token")
        # Refresh ahead: a tenth of the lifetime early, at most a minute.
        self._token, self._expires = token, sent_at + lifetime - min(60.0, lifetime / 10)
        refresh, refresh_life = doc.get("refresh_token"), doc.get("refresh_expires_in")
        if isinstance(refresh, str) and refresh:
            life = float(refresh_life) if isinstance(refresh_life, int | float) else lifetime
            self._refresh, self._refresh_expires = refresh, sent_at + life - min(60.0, life / 10)
        return token

    # -- calls -------------------------------------------------------------------------------

    async def add_consent(self, consent: Consent, *, check_first: bool = False) -> ConsentResult:
        """Record one consent.  `check_first` (a repeat: the previous try may have reached İYS)
        asks the status first and sends nothing when İYS already holds this decision."""
        if check_first:
            held = await self.consent_status(consent)
            if held is not None and held.get("status") == consent.status:
                return ConsentResult(ALREADY, None, "İYS already holds this decision")
        answer = await self._call("consents", consent.body())
        if answer.status_code == 200:
            try:
                tx = answer.json().get("transactionId")
            except (ValueError, AttributeError):
                tx = None
            return ConsentResult(RECORDED, None if tx is None else str(tx))
        text = error_text(answer)
        status = answer.status_code
        codes = error_codes(answer)
        if NO_CONSENT_HELD in codes and consent.status == "RET":
            return ConsentResult(NOTHING_TO_WITHDRAW, None, text)
        if SAME_STATUS in codes:
            return ConsentResult(ALREADY, None, text)
        variable = misconfigured(answer)
        if variable:
            raise IysMisconfigured(f"İYS refused the consent ({status}: {text}): check {variable}",
                                   status, variable)
        try:
            held = await self.consent_status(consent)
        except (IysRefused, IysUnavailable):
            held = None  # unknown: the refusal stands
        if held is not None and held.get("status") == consent.status:
            return ConsentResult(ALREADY, None, text)
        raise IysRefused(f"İYS refused the consent ({status}: {text})", status)

    async def consent_status(self, consent: Consent) -> dict[str, Any] | None:
        """What İYS holds for the recipient and channel, or None when its answer says it holds
        nothing for the recipient (a 404 with İYS's error body naming neither code).  A 403/404
        blaming the configuration raises IysRefused naming the variable (`misconfigured`)."""
        body = {"recipient": consent.recipient, "type": consent.type,
                "recipientType": consent.recipient_type}
        answer = await self._call("consents/status", body)
        variable = misconfigured(answer)
        if variable:
            raise IysMisconfigured(f"İYS status query refused ({answer.status_code}: "
                                   f"{error_text(answer)}): check {variable}", answer.status_code,
                                   variable)
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise IysRefused(f"İYS status query refused ({answer.status_code}: {error_text(answer)})",
                             answer.status_code)
        try:
            doc = answer.json()
        except ValueError:
            raise IysUnavailable("İYS status query answered 200 without JSON") from None
        return doc if isinstance(doc, dict) else None

    async def _call(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST to the brand's `path` with the token; a 401 gets one new token and one more try."""
        url = f"{self.base_url}/sps/{self.iys_code}/brands/{self.brand_code}/{path}"
        token = await self.token()
        answer = await self._send(path, url, body, token=token)
        if answer.status_code == 401:
            log.info("iys: %s answered 401; fetching a new token once", path)
            token = await self.token(stale=token)
            answer = await self._send(path, url, body, token=token)
            if answer.status_code == 401:
                raise IysRefused(f"İYS refused a fresh token on {path} (401: {error_text(answer)}): "
                                 "check the account's API permissions and IYS_CODE/IYS_BRAND_CODE", 401)
        return answer

    async def _send(self, what: str, url: str, body: dict[str, Any], *, token: str | None = None,
                    auth: bool = True) -> httpx.Response:
        """One request with transient failures retried; returns a non-transient answer."""
        headers = {"Content-Type": "application/json", "User-Agent": "keyrouter"}
        if auth and token:
            headers["Authorization"] = f"Bearer {token}"
        failure = ""
        for attempt in range(1, self.attempts + 1):
            wait: float | None = None
            try:
                answer = await self._http.post(url, json=body, headers=headers)
            except httpx.TimeoutException:
                answer, failure = None, f"İYS {what}: no answer in time"
            except httpx.HTTPError as exc:
                answer, failure = None, f"İYS {what}: connection failed ({type(exc).__name__})"
            if answer is not None:
                if answer.status_code != 429 and answer.status_code < 500:
                    return answer
                failure = f"İYS {what}: HTTP {answer.status_code} ({error_text(answer)})"
                wait = retry_after(answer.headers.get("Retry-After"))
            delay = wait if wait is not None else self.backoff * 2 ** (attempt - 1)
            if attempt == self.attempts or delay > self.max_wait:
                after = f", retry after {delay:g}s" if wait is not None else ""
                raise IysUnavailable(failure + after, retry_after=wait)
            log.info("iys: %s; trying again in %.1fs", failure, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")


# -- one shared client per account and event loop (the token cache is what is shared) ----------

_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], IysClient]] = (
    weakref.WeakKeyDictionary())


def configured(settings: Settings) -> bool:
    return bool(settings.iys_username and settings.iys_password and settings.iys_code
                and settings.iys_brand_code)


def shared_client(settings: Settings) -> IysClient | None:
    """The process' client for the account in `settings` (None when İYS is not configured)."""
    if not configured(settings):
        return None
    assert settings.iys_password is not None
    secret = settings.iys_password.get_secret_value()
    key = (settings.iys_base_url, str(settings.iys_username), str(settings.iys_code),
           str(settings.iys_brand_code), hashlib.sha256(secret.encode()).hexdigest())
    clients = _SHARED.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(key)
    if client is None:
        client = clients[key] = IysClient(
            str(settings.iys_username), settings.iys_password, str(settings.iys_code),
            str(settings.iys_brand_code), settings.iys_base_url,
            timeout=settings.http_timeout or 20.0, max_wait=min(30.0, settings.retry_max))
    return client


async def close_shared() -> None:
    """Close this loop's shared clients (runtime shutdown)."""
    clients = _SHARED.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()
