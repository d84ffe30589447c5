"""The fake iletiMerkezi's get-blacklist (keyrouter.testing): pages, the date filter in Turkey
time, and the provider's `count` (the account's total whatever the filter)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from keyrouter.message import TURKEY

if TYPE_CHECKING:
    from keyrouter.sandbox.provider import FakeIletiMerkezi  # only for types: it imports this module


def blacklist_page(fake: FakeIletiMerkezi, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Paged by `page` (1-based) and `rowCount` (at most 1000), oldest addition first; the
    `filter` dates (`YYYY-MM-DD HH:MM:SS`, Turkey time, both ends included, to the second)
    keep the numbers added between them.  `count` is the account's total, whatever the
    filter and the page, as the provider documents it."""
    options = request.get("blacklist")
    options = options if isinstance(options, dict) else {}
    page = max(1, _int(options.get("page"), 1))
    size = min(1000, max(1, _int(options.get("rowCount"), 1000)))
    window = options.get("filter")
    window = window if isinstance(window, dict) else {}
    bounds = [_turkey_seconds(window.get(k)) for k in ("start", "end")]
    if any(b is False for b in bounds):
        return 422, {}
    low, high = bounds
    with fake.lock:
        listing = _sorted(fake)
    if low is not None or high is not None:
        listing = [(t, n) for t, n in listing
                   if (low is None or t >= low) and (high is None or t <= high)]
    chunk = [n for _, n in listing[(page - 1) * size : page * size]]
    return 200, {"blacklist": {"count": len(fake.blacklist), "number": chunk}}

def _sorted(fake: FakeIletiMerkezi) -> list[tuple[int, str]]:
    """(added second, number) of the whole list, oldest first; cached while the list's size
    and the additions through the API or `add_from_panel` stay the same."""
    key = (fake._blacklist_version, len(fake.blacklist))
    if fake._listing is None or fake._listing[0] != key:
        dates, start = fake.blacklist_dates, int(fake._started_at)
        fake._listing = (key, sorted((int(dates[n]) if n in dates else start, n)
                                     for n in fake.blacklist))
    return fake._listing[1]


def _turkey_seconds(value: object) -> int | bool | None:
    """A filter date (Turkey time) -> epoch seconds; None when absent, False when unreadable."""
    if value in (None, ""):
        return None
    try:
        parsed = datetime.strptime(str(value).strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return int(parsed.replace(tzinfo=TURKEY).timestamp())


def _int(value: object, default: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        return default
