"""What the Status page shows beyond the store's counters: the inbox lag from the rows the
workers share, whether the rules changed on disk, the store's place without secrets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from keyrouter import timefmt
from keyrouter.message import RowError, parse_row
from keyrouter.store import ActivityStore, FeedStore
from keyrouter.store.choice import redact_store_url
from keyrouter.web.pages import RulesInfo
from keyrouter.worker.reload import rules_version


@dataclass(frozen=True)
class Inbox:
    waiting: int  # rows fetched and shared, not finished
    oldest: str  # received time of the oldest of them
    lag: str  # its age: the inbox lag


async def inbox(store: FeedStore, now: float) -> Inbox:
    """The rows the workers share (`Store.published`: fetched, unfinished), one read bounded by
    the inbox: how many wait and the age of the oldest, i.e. the inbox lag."""
    _, rows = await store.published(0)
    oldest: float | None = None
    for _, text in rows:
        try:
            at = parse_row(json.loads(text)).received_at.timestamp()
        except (ValueError, RowError):
            continue
        oldest = at if oldest is None else min(oldest, at)
    if oldest is None:
        return Inbox(len(rows), "", "")
    return Inbox(len(rows), timefmt.display(oldest), age(now - oldest))


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def rules_on_disk_changed(info: RulesInfo) -> bool:
    """The files changed since the dashboard loaded them (a worker may run newer rules)."""
    try:
        return rules_version(info.path) != info.version
    except OSError:
        return True


def store_label(url: str) -> str:
    """Scheme and place of the store URL, never a password (nor a user or query: the page is
    shown to anyone who may read the dashboard)."""
    scheme, _, rest = redact_store_url(url).partition("://")
    if scheme.startswith("redis"):
        host = rest.rsplit("@", 1)[-1].split("?", 1)[0]
        return f"{scheme}://{host}"
    if scheme == "sqlite":
        return f"sqlite:///{Path(rest[1:]).name}" if rest else "sqlite://"
    return f"{scheme}://"


@dataclass(frozen=True)
class Poll:
    at: str  # Turkey time with its offset, "" when no poll was recorded
    age: str
    rows: int


@dataclass(frozen=True)
class Routed:
    totals: list[tuple[str, int]]  # (rule, messages) over the window, most first
    hours: list[tuple[str, int, list[tuple[str, int]]]]  # (hour start, total, by rule), newest first
    window: int  # hours


async def last_poll(store: ActivityStore, now: float) -> Poll:
    """The fetch leader's latest get-inbox poll (`Store.last_poll`), one small read."""
    poll = await store.last_poll()
    if poll is None:
        return Poll("", "", 0)
    return Poll(timefmt.display(poll[0]), age(now - poll[0]), poll[1])


async def routed(store: ActivityStore, now: float, window: int = 24) -> Routed:
    """Messages finished per rule in the last `window` hours (`Store.routed_since`): one read of at
    most `window` small counters, whatever the traffic."""
    current = int(now // 3600)
    by_hour = await store.routed_since(current - window + 1)
    totals: dict[str, int] = {}
    hours = []
    for hour in sorted((h for h in by_hour if h <= current), reverse=True):
        rules = sorted(by_hour[hour].items(), key=lambda kv: (-kv[1], kv[0]))
        for rule, n in rules:
            totals[rule] = totals.get(rule, 0) + n
        hours.append((timefmt.minute(hour * 3600), sum(n for _, n in rules), rules))
    return Routed(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])), hours, window)
