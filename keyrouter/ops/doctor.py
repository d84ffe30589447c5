"""`keyrouter doctor`: check a host before production, one line per check with a fix.

Each check is a small async function returning `Check` (ok / warn / fail, or skip when it could not
be checked); the exit code is 0 when all pass, 1 with warnings, 2 with failures.  Provider calls
are read-only (get-inbox, get-balance, get-sender; İYS: a token and a consent status query,
keyrouter.ops.doctor_iys); nothing is sent, blacklisted or written except the store's own
round-trip read.  No secret is printed: errors come from the provider client
(keyrouter.providers.iletimerkezi), which blanks the credentials.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any

import httpx

from keyrouter.conversations.checks import check_all
from keyrouter.ops.doctor_iys import check_iys
from keyrouter.ops.doctor_store import Check, check_store
from keyrouter.providers.iletimerkezi import (
    AuthenticationRefused,
    IletiMerkezi,
    Inbox,
    PermanentApiError,
    TransientApiError,
)
from keyrouter.rules.loader import load_rules
from keyrouter.rules.model import RulesError
from keyrouter.rules.router import Router
from keyrouter.settings import Settings

STATUSES = ("ok", "warn", "fail", "skip")
MAX_SKEW = 30.0  # seconds: max_age and the opt-out ledger's deadlines depend on the clock
AUTH_FIX = ("check the three causes: (1) key or hash wrong (panel: Settings → Security → API Access); "
            "(2) the \"Allow API access\" toggle off (Settings → Security → Access Permissions); "
            "(3) an IP allowlist on the account that excludes this host")


@dataclass
class Doctor:
    """What the checks share: the settings, the provider client, its answers, the store."""

    settings: Settings
    client: IletiMerkezi | None = None
    recorder: _DateRecorder | None = None
    inbox: Inbox | None = None
    router: Router | None = None
    results: list[Check] = field(default_factory=list)
    #: why the provider checks after `credentials` cannot run (set by check_credentials)
    no_inbox: str = "the credentials did not work"


class _DateRecorder(httpx.AsyncBaseTransport):
    """Remembers the provider's `Date` header and the local time the answer arrived."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.last: tuple[str, float] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.time()
        response = await self.inner.handle_async_request(request)
        date = response.headers.get("date")
        if date:
            self.last = (date, (sent + time.time()) / 2)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# ---------------------------------------------------------------- provider
async def check_credentials(d: Doctor) -> Check:
    if d.client is None:
        return Check("credentials", "fail", "ILETIMERKEZI_API_KEY and ILETIMERKEZI_API_HASH are not set",
                     "set both from the panel (Settings → Security → API Access)")
    try:
        d.inbox = await d.client.get_inbox()
    except AuthenticationRefused:
        return Check("credentials", "fail", "get-inbox refused the key and hash (401)", AUTH_FIX)
    except PermanentApiError as exc:
        return Check("credentials", "fail", f"get-inbox refused: {exc}",
                     f"check ILETIMERKEZI_BASE_URL ({d.settings.base_url})")
    except TransientApiError as exc:
        d.no_inbox = "the provider could not be reached"
        return Check("credentials", "fail", f"the provider could not be reached: {exc}",
                     f"check the network path to {d.settings.base_url} and try again")
    total = "unknown" if d.inbox.total_rows is None else d.inbox.total_rows
    rows = len(d.inbox.rows)
    return Check("credentials", "ok", f"get-inbox accepted them ({rows} rows, totalRows {total})")


async def _optional_call(d: Doctor, endpoint: str) -> tuple[dict[str, Any] | None, str]:
    """(answer, "") or (None, why not checked)."""
    assert d.client is not None
    try:
        return await d.client._call(endpoint, {}), ""  # read-only endpoints the client lacks
    except PermanentApiError as exc:
        if exc.code == 402:
            raise
        return None, f"not checked: {endpoint} answered {exc.code}"
    except (TransientApiError, AuthenticationRefused) as exc:
        return None, f"not checked: {endpoint} failed ({exc.code or type(exc).__name__})"


async def check_balance(d: Doctor) -> Check:
    if d.client is None or d.inbox is None:
        return Check("balance", "skip", f"not checked: {d.no_inbox}")
    try:
        answer, why = await _optional_call(d, "get-balance")
    except PermanentApiError:
        return Check("balance", "fail", "get-balance: 402 insufficient balance",
                     "top up the account: replies and confirmations fail with 402")
    balance = answer.get("balance") if answer else None
    if not isinstance(balance, dict):
        return Check("balance", "skip", why or "not checked: no balance in the answer")
    amount, sms = balance.get("amount"), balance.get("sms")
    detail = f"amount {amount}, SMS credits {sms}"
    try:
        empty = float(str(sms)) <= 0
    except ValueError:
        empty = False
    if empty:
        return Check("balance", "warn", detail, "top up before replies are needed (402 otherwise)")
    return Check("balance", "ok", detail)


def _uses_reply(router: Router | None) -> bool:
    if router is None:
        return False
    return any(e.name == "reply" for e in router.rules.entries())


async def check_sender(d: Doctor) -> Check:
    sender, replies = d.settings.sender, _uses_reply(d.router)
    if not sender and not replies:
        return Check("sender", "skip", "not checked: no `reply` in the rules and no ILETIMERKEZI_SENDER")
    if not sender:
        return Check("sender", "fail", "the rules use `reply` but ILETIMERKEZI_SENDER is not set",
                     "set ILETIMERKEZI_SENDER to your approved sender name")
    if d.client is None or d.inbox is None:
        return Check("sender", "skip", f"not checked: {d.no_inbox}")
    answer, why = await _optional_call(d, "get-sender")
    holder = answer.get("senders") if answer else None
    names = holder.get("sender") if isinstance(holder, dict) else None
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        return Check("sender", "skip", why or "not checked: no sender list in the answer")
    approved = [str(n.get("name", n)) if isinstance(n, dict) else str(n) for n in names]
    if sender not in approved:
        shown = ", ".join(approved[:10]) or "none"
        return Check("sender", "fail", f"ILETIMERKEZI_SENDER {sender!r} is not approved (approved: {shown})",
                     "use an approved name, or have this one approved in the panel (450 otherwise)")
    return Check("sender", "ok", f"{sender!r} is an approved sender")


async def check_clock(d: Doctor) -> Check:
    last = d.recorder.last if d.recorder else None
    if last is None:
        return Check("clock", "skip", "not checked: no answer with a Date header from the provider")
    try:
        theirs = parsedate_to_datetime(last[0]).timestamp()
    except (TypeError, ValueError):
        return Check("clock", "skip", f"not checked: unreadable Date header {last[0][:40]!r}")
    skew = last[1] - theirs
    detail = f"local clock {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the provider's"
    if abs(skew) > MAX_SKEW:
        return Check("clock", "warn", detail,
                     "synchronise the clock (chrony or systemd-timesyncd): max_age and opt-out "
                     "deadlines use it")
    return Check("clock", "ok", f"within {max(1.0, abs(skew)):.0f}s of the provider's Date")


async def check_paging(d: Doctor) -> Check:
    """Page 2 with a small rowCount, compared with page 1: honoured, ignored or refused."""
    if d.client is None or d.inbox is None:
        return Check("pagination", "skip", f"not checked: {d.no_inbox}")
    rows = len(d.inbox.rows)
    if rows < 2:
        return Check("pagination", "skip", f"not checked: the inbox holds {rows} rows; need at least 2")
    size = max(1, min(5, rows // 2))

    async def page(n: int) -> list[str] | None:
        assert d.client is not None
        answer = await d.client._call("get-inbox", {"page": str(n), "rowCount": str(size)})
        orders = answer.get("orders")
        found = orders.get("order") if isinstance(orders, dict) else None
        found = [found] if isinstance(found, dict) else found if isinstance(found, list) else []
        return [str(r.get("id")) for r in found if isinstance(r, dict)]

    try:
        first, second = await page(1), await page(2)
    except PermanentApiError as exc:
        return Check("pagination", "ok" if not d.inbox.shortfall else "warn",
                     f"refused: get-inbox answered {exc.code} to page/rowCount; keyrouter sends neither")
    except TransientApiError as exc:
        return Check("pagination", "skip", f"not checked: {exc}")
    assert first is not None and second is not None
    if len(first) <= size and len(second) <= size and first and not set(first) & set(second):
        return Check("pagination", "ok", f"honoured: page 2 of {size} rows holds other ids than page 1")
    if first and set(first) == set(second) and len(first) == rows:
        if d.inbox.shortfall:
            return Check("pagination", "warn", f"ignored, and totalRows exceeds the rows returned by "
                         f"{d.inbox.shortfall}", "ask the provider how to read the rest of the inbox")
        return Check("pagination", "ok",
                     "ignored: every call returns the whole inbox (keyrouter's assumption)")
    return Check("pagination", "warn", f"unclear: page 1 gave {len(first)} rows, page 2 gave {len(second)} "
                 f"(asked {size} per page)", "run doctor again once the inbox is stable")


# ---------------------------------------------------------------- rules, version
def check_rules(d: Doctor) -> Check:
    try:
        d.router = Router(load_rules(d.settings.rules))
    except RulesError as exc:
        return Check("rules", "fail", f"{len(exc.problems)} problems, first: {exc.problems[0]}",
                     "run `keyrouter check` and fix each file:line")
    except OSError as exc:
        return Check("rules", "fail", f"cannot read {d.settings.rules}: {exc.strerror}",
                     "set KEYROUTER_RULES")
    failures, count = check_all(d.router)
    if failures:
        return Check("rules", "fail", f"{len(failures)} examples fail, first: {failures[0]}",
                     "run `keyrouter check` and fix each file:line")
    return Check("rules", "ok", f"{len(d.router.rules.rules)} rules valid, {count} examples hold")


def version_line() -> Check:
    try:
        ours = metadata.version("keyrouter")
    except metadata.PackageNotFoundError:
        ours = "unknown"
    return Check("version", "ok", f"keyrouter {ours}, Python {platform.python_version()}")


# ---------------------------------------------------------------- the command
async def diagnose(settings: Settings, emit: Callable[[Check], None]) -> list[Check]:
    d = Doctor(settings)
    if settings.api_key is not None and settings.api_hash is not None:
        d.recorder = _DateRecorder()
        timeout = httpx.Timeout(settings.http_timeout or 10.0)
        d.client = IletiMerkezi(settings.api_key.get_secret_value(), settings.api_hash.get_secret_value(),
                                base_url=settings.base_url, timeout=timeout, transport=d.recorder)

    def add(check: Check) -> None:
        d.results.append(check)
        emit(check)

    add(version_line())
    add(check_rules(d))
    try:
        steps: list[Callable[[Doctor], Awaitable[Check]]] = [
            check_credentials, check_balance, check_sender, check_clock, check_paging]
        for step in steps:
            add(await step(d))
        for check in await check_store(d.settings):
            add(check)
        add(await check_iys(d.settings, d.router))
    finally:
        if d.client is not None:
            await d.client.aclose()
    return d.results


def exit_code(results: list[Check]) -> int:
    statuses = {c.status for c in results}
    return 2 if "fail" in statuses else 1 if "warn" in statuses else 0
