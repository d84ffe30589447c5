"""The store's activity figures for the dashboard's Status page, on every backend: the fetch
leader's last poll and messages finished per rule and hour.  Small and bounded: one poll record,
and hourly counters kept ROUTED_HOURS hours (memory and SQLite prune on write, Redis lets each
hour's HASH expire).  Each call is one round trip; the backends mix these classes in."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keyrouter.store.base import ROUTED_HOURS
from keyrouter.store.codec import unescape
from keyrouter.store.keys import Keys
from keyrouter.store.mixins import SqlitePlumbing

if TYPE_CHECKING:  # memory_space.py imports this module
    from keyrouter.store.memory_space import Space

HOUR = 3600
#: Seconds an hour's Redis counters live after their last write.
ROUTED_TTL = ROUTED_HOURS * HOUR


def _hours(hour: int, now: float) -> range:
    """The hours `routed_since(hour)` reads: from `hour` (at most ROUTED_HOURS back) to the
    clock's hour and one beyond (a writer's clock may run a little ahead)."""
    current = int(now // HOUR)
    return range(max(hour, current - ROUTED_HOURS + 1), current + 2)


@dataclass
class Activity:
    """The memory backend's figures for one namespace."""

    poll: tuple[float, int] | None = None
    touched: float | None = None
    routed: dict[int, dict[str, int]] = field(default_factory=dict)


class MemoryActivity:
    """Kept on the namespace's `Space` (memory.py), so stores sharing spaces share it."""

    _clock: Callable[[], float]
    _s: Space

    @property
    def _activity(self) -> Activity:
        return self._s.activity

    async def record_poll(self, at: float, rows: int) -> None:
        self._activity.poll = (float(at), int(rows))

    async def touch(self, at: float) -> None:
        self._activity.touched = float(at)

    async def last_poll(self) -> tuple[float, int] | None:
        return self._activity.poll

    async def count_routed(self, counts: Mapping[tuple[str, int], int]) -> None:
        routed = self._activity.routed
        for (rule, hour), n in counts.items():
            by_rule = routed.setdefault(int(hour), {})
            by_rule[rule] = by_rule.get(rule, 0) + int(n)
        oldest = int(self._clock() // HOUR) - ROUTED_HOURS + 1
        for hour in [h for h in routed if h < oldest]:
            del routed[hour]

    async def routed_since(self, hour: int) -> dict[int, dict[str, int]]:
        routed = self._activity.routed
        return {h: dict(routed[h]) for h in _hours(hour, self._clock()) if routed.get(h)}


class SqliteActivity(SqlitePlumbing):
    """Tables `polls` and `touches` (one row per namespace) and `routed` (ns, hour, rule, n), in
    sqlite/sql.py."""

    _clock: Callable[[], float]

    async def record_poll(self, at: float, rows: int) -> None:
        p = self._p(at=float(at), rows=int(rows))
        await self._write(lambda db: db.execute(
            "INSERT INTO polls VALUES (:ns, :at, :rows) ON CONFLICT (ns) DO UPDATE"
            " SET at = excluded.at, rows = excluded.rows", p))

    async def touch(self, at: float) -> None:
        p = self._p(at=float(at))
        await self._write(lambda db: db.execute(
            "INSERT INTO touches VALUES (:ns, :at) ON CONFLICT (ns) DO UPDATE SET at = excluded.at",
            p))

    async def last_poll(self) -> tuple[float, int] | None:
        rows = await self._read("SELECT at, rows FROM polls WHERE ns = :ns", self._p())
        return (float(rows[0][0]), int(rows[0][1])) if rows else None

    async def count_routed(self, counts: Mapping[tuple[str, int], int]) -> None:
        params = [self._p(hour=int(hour), rule=rule, n=int(n))
                  for (rule, hour), n in counts.items()]
        oldest = int(self._clock() // HOUR) - ROUTED_HOURS + 1

        def run(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO routed VALUES (:ns, :hour, :rule, :n) ON CONFLICT"
                           " (ns, hour, rule) DO UPDATE SET n = n + excluded.n", params)
            db.execute("DELETE FROM routed WHERE ns = :ns AND hour < :oldest",
                       self._p(oldest=oldest))

        await self._write(run)

    async def routed_since(self, hour: int) -> dict[int, dict[str, int]]:
        span = _hours(hour, self._clock())
        out: dict[int, dict[str, int]] = {}
        for h, rule, n in await self._read(
                "SELECT hour, rule, n FROM routed WHERE ns = :ns AND hour >= :lo AND hour < :hi",
                self._p(lo=span.start, hi=span.stop)):
            if n:
                out.setdefault(int(h), {})[rule] = int(n)
        return out


ROUTED_ADD = """
-- KEYS: the hour HASHes; ARGV[1] their TTL in seconds, then (key index, rule, count) triples
for i = 2, #ARGV, 3 do
    redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ARGV[1]) end
return 0
"""

ROUTED_READ = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""


def _text(value: bytes | str) -> str:
    return unescape(value.decode() if isinstance(value, bytes) else value)


class RedisActivity:
    """Keys `poll` ("at|rows"), `touch` and `routed:<hour>` HASHes (keys.py), all in the
    namespace's slot."""

    _clock: Callable[[], float]
    keys: Keys
    client: Any
    _ready: Callable[[], Any]
    _routed_add: Callable[..., Any]  # ROUTED_ADD and ROUTED_READ, registered by RedisStore
    _routed_read: Callable[..., Any]

    async def record_poll(self, at: float, rows: int) -> None:
        await self._ready()
        await self.client.set(self.keys.poll, f"{float(at)!r}|{int(rows)}")

    async def touch(self, at: float) -> None:
        await self._ready()
        await self.client.set(self.keys.touch, repr(float(at)), ex=86_400)

    async def last_poll(self) -> tuple[float, int] | None:
        await self._ready()
        raw = await self.client.get(self.keys.poll)
        if raw is None:
            return None
        at, _, rows = (raw.decode() if isinstance(raw, bytes) else raw).partition("|")
        return float(at), int(rows)

    async def count_routed(self, counts: Mapping[tuple[str, int], int]) -> None:
        index: dict[int, int] = {}
        args: list[Any] = [ROUTED_TTL]
        for (rule, hour), n in counts.items():
            if n:
                at = index.setdefault(int(hour), len(index) + 1)
                args += [at, rule, int(n)]
        if index:
            await self._routed_add(keys=[self.keys.routed(h) for h in index], args=args)

    async def routed_since(self, hour: int) -> dict[int, dict[str, int]]:
        hours = list(_hours(hour, self._clock()))
        replies = await self._routed_read(keys=[self.keys.routed(h) for h in hours])
        out: dict[int, dict[str, int]] = {}
        for h, flat in zip(hours, replies, strict=True):
            counts = {_text(k): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
            if any(counts.values()):
                out[h] = {k: v for k, v in counts.items() if v}
        return out
