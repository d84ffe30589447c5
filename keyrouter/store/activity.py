"""The store's activity figures for the dashboard's Status page, on every backend: the fetch
leader's last poll and messages finished per rule and hour.  Small and bounded: one poll record,
and hourly counters kept ROUTED_HOURS hours (memory and SQLite prune on write, Redis lets each
hour's HASH expire).  Each call is one round trip; each backend has its part (memory_parts.py,
sqlite/parts.py, redis/parts.py)."""

from __future__ import annotations

from keyrouter.store.values import ROUTED_HOURS

HOUR = 3600
#: Seconds an hour's Redis counters live after their last write.
ROUTED_TTL = ROUTED_HOURS * HOUR


def hours(hour: int, now: float) -> range:
    """The hours `routed_since(hour)` reads: from `hour` (at most ROUTED_HOURS back) to the
    clock's hour and one beyond (a writer's clock may run a little ahead)."""
    current = int(now // HOUR)
    return range(max(hour, current - ROUTED_HOURS + 1), current + 2)
