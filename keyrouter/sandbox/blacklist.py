"""The fake iletiMerkezi's get-blacklist (keyrouter.testing): pages, the date filter in Turkey
time, and the provider's `count` (the account's total whatever the filter)."""

from __future__ import annotations

from collections.abc import Mapping, Set
from datetime import datetime
from typing import Any

from keyrouter.message import TURKEY


class Listing:
    """(added second, number) of the whole list, oldest first; cached while the list's size
    and the additions through the API or `add_from_panel` (its `version`) stay the same.  A
    number without a date counts as added at `started_at`."""

    def __init__(self, started_at: float) -> None:
        self._start = int(started_at)
        self._key: tuple[int, int] | None = None
        self._rows: list[tuple[int, str]] = []

    def rows(self, numbers: Set[str], dates: Mapping[str, float], version: int) -> list[tuple[int, str]]:
        key = (version, len(numbers))
        if self._key != key:
            self._key = key
            self._rows = sorted((int(dates[n]) if n in dates else self._start, n) for n in numbers)
        return self._rows


def blacklist_page(listing: list[tuple[int, str]], request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Paged by `page` (1-based) and `rowCount` (at most 1000), oldest addition first; the
    `filter` dates (`YYYY-MM-DD HH:MM:SS`, Turkey time, both ends included, to the second)
    keep the numbers added between them.  `count` is the account's total (`listing` is the
    whole list, `Listing.rows`), whatever the filter and the page, as the provider documents it."""
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
    total = len(listing)
    if low is not None or high is not None:
        listing = [(t, n) for t, n in listing
                   if (low is None or t >= low) and (high is None or t <= high)]
    chunk = [n for _, n in listing[(page - 1) * size : page * size]]
    return 200, {"blacklist": {"count": total, "number": chunk}}


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
