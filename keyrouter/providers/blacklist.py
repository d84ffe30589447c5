"""get-blacklist, the whole list: every page until a short one (docs/reconciliation.md).

The provider's `count` is the account's total whatever the filter, and its pages are 1-based with
at most 1000 numbers each.  A pass never trusts `count` to know where the list ends: it asks for
the next page until one comes back with fewer than `rowCount` numbers, so a list of 2,500 numbers
costs three calls and one of exactly 2,000 costs three (the third empty).  A page answering the
very numbers of the page before means the provider ignored `page`: the pass stops with an error
instead of looping.

Errors are the client's (keyrouter.client): 401 AuthenticationRefused with the three causes,
other 4xx PermanentApiError, 5xx/timeouts/garbage TransientApiError.  A transient error is
retried on the same page with backoff (`retries` times) so a blip on page 150 does not restart a
200,000-number pass; the last error is raised.

The date filter (`start`, `end`) is sent as Turkey time (`YYYY-MM-DD HH:MM:SS`, UTC+03:00): the
provider documents no zone for it, and every other date it shows (panel, get-inbox rows) is Turkey
time.  Callers that must not miss a number widen the window (keyrouter.reconcile does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from keyrouter import timefmt
from keyrouter.message import mask_number, to_e164
from keyrouter.providers.iletimerkezi import IletiMerkezi, PermanentApiError, TransientApiError

__all__ = ["MAX_ROW_COUNT", "BlacklistPass", "fetch_blacklist", "filter_date"]

logger = logging.getLogger("keyrouter.blacklist")

MAX_ROW_COUNT = 1000
#: A pass stops here (10 million numbers): a provider that never sends a short page is broken.
MAX_PAGES = 10_000


@dataclass(slots=True)
class BlacklistPass:
    """One pass over get-blacklist: the numbers (E.164, first-seen order, once each), the calls
    made (retries included), the pages read and the provider's last `count`."""

    numbers: list[str] = field(default_factory=list)
    calls: int = 0
    pages: int = 0
    count: int | None = None
    unreadable: int = 0  # entries that are not a Turkish mobile number (kept out of `numbers`)


def filter_date(epoch: float) -> str:
    """An epoch moment as get-blacklist's filter date: Turkey time, to the second."""
    return timefmt.iys(epoch)


async def fetch_blacklist(
    client: IletiMerkezi,
    *,
    start: float | None = None,
    end: float | None = None,
    row_count: int = MAX_ROW_COUNT,
    retries: int = 3,
    backoff: float = 1.0,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> BlacklistPass:
    """Every number on the account's blacklist (added between `start` and `end`, epoch seconds,
    when given).  Raises the client's errors (see the module doc)."""
    if not 1 <= row_count <= MAX_ROW_COUNT:
        raise ValueError(f"row_count must be 1..{MAX_ROW_COUNT}, not {row_count}")
    options: dict[str, Any] = {"rowCount": str(row_count)}
    if start is not None or end is not None:
        options["filter"] = {k: filter_date(v) for k, v in (("start", start), ("end", end))
                             if v is not None}
    result = BlacklistPass()
    seen: set[str] = set()
    previous: list[Any] | None = None
    for page in range(1, MAX_PAGES + 1):
        answer = await _page(client, {**options, "page": str(page)}, result, retries, backoff, sleep)
        result.pages += 1
        body = answer
        result.count = _count(body.get("count"))
        raw = body.get("number")
        entries = raw if isinstance(raw, list) else [] if raw in (None, "", {}) else [raw]
        if entries and entries == previous:
            raise PermanentApiError(
                f"iletiMerkezi get-blacklist: page {page} repeats page {page - 1}: the provider "
                "ignores `page`, so the whole list cannot be read", endpoint="get-blacklist")
        previous = entries
        for entry in entries:
            number = to_e164(str(entry))
            if number is None:
                result.unreadable += 1
                logger.warning("get-blacklist: an entry that is not a Turkish mobile number (%s)",
                               mask_number(str(entry)))
            elif number not in seen:
                seen.add(number)
                result.numbers.append(number)
        if len(entries) < row_count:
            return result
    raise PermanentApiError(f"iletiMerkezi get-blacklist: no short page after {MAX_PAGES} pages",
                            endpoint="get-blacklist")


async def _page(client: IletiMerkezi, options: dict[str, Any], result: BlacklistPass, retries: int,
                backoff: float, sleep: Callable[[float], Awaitable[Any]]) -> dict[str, Any]:
    for attempt in range(retries + 1):
        result.calls += 1
        try:
            return await client.get_blacklist_page(options)
        except TransientApiError as exc:
            if attempt == retries:
                raise
            logger.warning("get-blacklist page %s: %s; retrying", options["page"], exc)
            await sleep(backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def _count(value: object) -> int | None:
    """`count` arrives as a number or a string; anything else is None (it is informational)."""
    try:
        return int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        return None
