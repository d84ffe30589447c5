"""In-process store on plain dicts: for tests and `memory://`.  Nothing survives the process.

No method awaits anything, so each runs atomically on the event loop, like a Lua script would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from keyrouter.store.assembled import Assembled
from keyrouter.store.base import (
    HORIZON_MARGIN,
    Claimed,
    DeadLetter,
    Description,
    Health,
)
from keyrouter.store.codec import read_row, row_json
from keyrouter.store.keys import check_namespace
from keyrouter.store.memory_parts import (
    MemoryActivity,
    MemoryConversations,
    MemoryLedger,
    MemoryReconciled,
    Space,
)
from keyrouter.store.probe import probe
from keyrouter.store.retried import retried_row_json


class MemoryStore(Assembled):
    """`spaces` lets several stores (namespaces) share one backend, as they would share a Redis;
    `clock` (epoch seconds) drives lease and horizon expiry, so tests can move time."""

    def __init__(
        self,
        namespace: str = "default",
        horizon: timedelta | None = None,
        *,
        clock: Callable[[], float] = time.time,
        spaces: dict[str, Space] | None = None,
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.horizon = horizon
        self._clock = clock
        self._spaces = {} if spaces is None else spaces
        self._s = self._spaces.setdefault(namespace, Space())
        super().__init__(MemoryActivity(self._s, clock), MemoryConversations(self._s),
                         MemoryReconciled(self._s), MemoryLedger(self._s, clock, self._is_finished))

    def __repr__(self) -> str:
        return f"MemoryStore(memory://, namespace={self.namespace!r})"

    async def health(self, timeout: float = 10.0) -> Health:
        return await probe(self.counts, timeout)

    def describe(self) -> Description:
        return Description("memory", "memory://", self.namespace, persistent=False)

    def _sweep(self) -> None:
        now = self._clock()
        finished = self._s.finished
        while finished:
            id, expires = next(iter(finished.items()))
            if expires > now:
                break
            del finished[id]

    def _is_finished(self, id: str) -> bool:
        if id in self._s.dead or id in self._s.kept:
            return True
        expires = self._s.finished.get(id)
        return expires is not None and expires > self._clock()

    def _mark(self, id: str, forever: bool = False) -> bool:
        """Mark `id` finished; False when it already was (so counters stay idempotent).  A
        `forever` marker replaces an expiring one."""
        s = self._s
        if self._is_finished(id) and id not in s.dead:
            if forever and s.finished.pop(id, None) is not None:
                s.kept.add(id)
            return False
        s.dead.pop(id, None)
        s.finished.pop(id, None)  # re-insert at the end: the sweep relies on the order
        if forever or self.horizon is None:
            s.kept.add(id)
        else:
            s.finished[id] = self._clock() + (self.horizon + HORIZON_MARGIN).total_seconds()
        return True

    def _taken(self, id: str, owner: str) -> bool:
        """Another owner holds a live lease on `id`: finish, fail and dead_letter leave it alone."""
        held = self._s.leases.get(id)
        return held is not None and held[0] != owner and held[1] > self._clock()

    def _release(self, id: str, owner: str) -> None:
        if self._s.leases.get(id, ("", 0.0))[0] == owner:
            del self._s.leases[id]

    def _holds(self, id: str, owner: str) -> bool:
        held = self._s.leases.get(id)
        return held is not None and held[0] == owner and held[1] > self._clock()

    async def unfinished(self, ids: Sequence[str]) -> list[str]:
        self._sweep()
        return [id for id in ids if not self._is_finished(id)]

    async def claim(
        self, ids: Sequence[str], owner: str, lease: float, now: float, *, limit: int | None = None
    ) -> list[Claimed]:
        self._sweep()
        out: list[Claimed] = []
        seen: set[str] = set()
        t = self._clock()
        for id in ids:
            if limit is not None and len(out) >= limit:
                break
            if id in seen or self._is_finished(id):
                continue
            attempts, retry_at = self._s.retry.get(id, (0, 0.0))
            held = self._s.leases.get(id)
            if retry_at > now or (held and held[0] != owner and held[1] > t):
                continue
            seen.add(id)
            self._s.leases[id] = (owner, t + lease)
            taken_over = held is not None and held[0] != owner
            progress = frozenset(self._s.progress.get(id, ()))
            out.append(Claimed(id, attempts, progress, taken_over))
        return out

    async def renew(self, ids: Sequence[str], owner: str, lease: float) -> list[str]:
        kept = [id for id in dict.fromkeys(ids) if self._holds(id, owner)]
        for id in kept:
            self._s.leases[id] = (owner, self._clock() + lease)
        return kept

    async def record_success(self, entries: Sequence[tuple[str, str]], owner: str) -> list[str]:
        lost: dict[str, None] = {}
        for id, entry in entries:
            if self._holds(id, owner):
                self._s.progress.setdefault(id, set()).add(entry)
            else:
                lost[id] = None
        return list(lost)

    async def finish(
        self,
        ids: Sequence[str],
        owner: str,
        *,
        skipped: Sequence[str] = (),
        forever: Sequence[str] = (),
    ) -> list[str]:
        self._sweep()
        keep = set(forever)
        left: dict[str, None] = {}
        for kind, batch in (("done", ids), ("skipped", skipped)):
            for id in batch:
                if self._taken(id, owner):
                    left[id] = None
                    continue
                if self._mark(id, id in keep):
                    self._s.stats[kind] += 1
                self._s.leases.pop(id, None)
                self._s.progress.pop(id, None)
                self._s.retry.pop(id, None)
                self._s.published.pop(id, None)
        return list(left)

    async def fail(self, id: str, owner: str, error: str, retry_at: float) -> int:
        if self._taken(id, owner):
            return -1
        attempts = self._s.retry.get(id, (0, 0.0))[0] + 1
        self._s.retry[id] = (attempts, retry_at)
        self._s.stats["failed"] += 1
        self._s.leases.pop(id, None)
        return attempts

    async def dead_letter(
        self, id: str, owner: str, error: str, *, rule: str | None, row: Mapping[str, Any], now: float
    ) -> bool:
        if self._taken(id, owner):
            return False
        attempts = self._s.retry.pop(id, (0, 0.0))[0] + 1
        self._s.dead.pop(id, None)  # a re-dead letter moves to the end, like a fresh one
        # the row as every backend reads it back: through JSON (codec.row_json)
        self._s.dead[id] = DeadLetter(id, error, attempts, now, rule, read_row(row_json(dict(row))))
        self._s.stats["dead"] += 1
        self._s.stats["failed"] += 1
        self._s.leases.pop(id, None)
        self._s.published.pop(id, None)
        return True

    async def dead_letters(self) -> list[DeadLetter]:
        return sorted(self._s.dead.values(), key=lambda d: (d.failed_at, d.id))

    async def retry_dead(self, id: str) -> bool:
        letter = self._s.dead.pop(id, None)
        if letter is None:
            return False
        self._s.retry.pop(id, None)
        if id not in self._s.published:  # run again from its row (store/retried.py)
            self._s.publish_seq += 1
            self._s.published[id] = (self._s.publish_seq, retried_row_json(letter.row))
        return True

    async def drop_dead(self, id: str) -> bool:
        if id not in self._s.dead:
            return False
        self._mark(id)
        self._s.progress.pop(id, None)
        self._s.retry.pop(id, None)
        return True

    async def counts(self) -> dict[str, int]:
        return dict(self._s.stats)

    async def release(self, ids: Sequence[str], owner: str) -> None:
        for id in ids:
            self._release(id, owner)

    async def acquire_fetch(self, owner: str, lease: float, now: float) -> int | None:
        s, t = self._s, self._clock()
        if s.fetch is not None and s.fetch[1] > t and s.fetch[0] != owner:
            return None
        if s.fetch is None or s.fetch[1] <= t:
            s.fetch_token += 1  # taken, not renewed: a new token fences the previous holder
        s.fetch = (owner, t + lease)
        return s.fetch_token

    async def release_fetch(self, owner: str) -> None:
        if self._s.fetch is not None and self._s.fetch[0] == owner:
            self._s.fetch = None

    async def publish(self, rows: Sequence[tuple[str, str]], token: int) -> int:
        s = self._s
        if token != s.fetch_token:
            return -1
        self._sweep()
        added = 0
        for id, row in rows:
            if id in s.published or self._is_finished(id):
                continue
            s.publish_seq += 1
            s.published[id] = (s.publish_seq, row)
            added += 1
        return added

    async def published(self, after: int) -> tuple[int, list[tuple[str, str]]]:
        s = self._s
        if after > s.publish_seq:
            after = 0  # a cursor from before the store lost its data
        rows = sorted((seq, id, row) for id, (seq, row) in s.published.items() if seq > after)
        return s.publish_seq, [(id, row) for _, id, row in rows]

    async def unpublish(self, ids: Sequence[str]) -> None:
        for id in ids:
            self._s.published.pop(id, None)

    # -- dead-letter pages (the dashboard); memory is for tests, so plain sorts are fine --------

    async def dead_letters_page(self, offset: int = 0, limit: int = 50,
                                rules: Sequence[str] | None = None,
                                oldest_first: bool = False) -> list[DeadLetter]:
        found = [d for d in self._s.dead.values() if rules is None or d.rule in rules]
        ordered = sorted(found, key=lambda d: (d.failed_at, d.id), reverse=not oldest_first)
        return ordered[max(0, offset) : max(0, offset) + max(0, limit)]

    async def get_dead_letter(self, id: str) -> DeadLetter | None:
        return self._s.dead.get(id)

    async def dead_letter_count(self) -> int:
        return len(self._s.dead)
