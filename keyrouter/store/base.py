"""The store contract every backend (Redis, SQLite, memory) implements and tests/store/ proves.

Every method that takes a list of ids costs one round trip to the backend, whatever the length of
the list: that is what keeps a poll over a large, fully processed inbox cheap.

Vocabulary:
- *finished*: done (handlers all succeeded), skipped (e.g. older than a rule's max_age) or dead
  (dead-lettered).  A finished id is never claimed again, unless a dead letter is retried.
- *claim*: a lease held by one worker (`owner`, a random token) for `lease` seconds; renewed while
  handlers run, released on finish or failure.  Two owners never hold one id at once.
- *progress*: the handler entry keys of a message that already succeeded, so a retry skips them.
- *retry state*: failed attempts so far and the epoch time before which the id may not be claimed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

#: Done markers outlive the horizon by this much, so a message just inside the horizon is never
#: forgotten while it is still in the inbox.
HORIZON_MARGIN = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A lease just taken, with what a retry needs to know."""

    id: str
    attempts: int = 0
    succeeded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    error: str
    attempts: int
    failed_at: float  # epoch seconds
    rule: str | None = None
    row: Mapping[str, Any] = field(default_factory=dict)


class Store(ABC):
    """Per-namespace processing state.  All methods are coroutines; ids are opaque strings."""

    namespace: str
    #: When set, done markers expire after horizon + HORIZON_MARGIN (the worker ignores messages
    #: older than the horizon before they reach the store).  None keeps markers forever.
    horizon: timedelta | None

    @abstractmethod
    async def unfinished(self, ids: Sequence[str]) -> list[str]:
        """The ids, in input order, that are not finished.  One round trip."""

    @abstractmethod
    async def claim(self, ids: Sequence[str], owner: str, lease: float, now: float) -> list[Claimed]:
        """Atomically lease every id that is unfinished, not leased by another owner (an expired
        lease counts as free) and whose retry time is <= `now` (epoch seconds).  Re-claiming an
        id this owner already holds renews it.  Returns the claimed ones in input order."""

    @abstractmethod
    async def renew(self, ids: Sequence[str], owner: str, lease: float) -> list[str]:
        """Extend the leases `owner` still holds; returns those ids (a lost lease is left out)."""

    @abstractmethod
    async def record_success(self, entries: Sequence[tuple[str, str]], owner: str) -> list[str]:
        """Add each (id, entry_key) to that id's progress, only where `owner` holds the lease.
        Returns the ids whose lease was lost (their entries were not recorded)."""

    @abstractmethod
    async def finish(self, ids: Sequence[str], owner: str, *, skipped: Sequence[str] = ()) -> None:
        """Mark `ids` done and `skipped` skipped (both finished); drop their progress, retry state
        and lease.  Idempotent."""

    @abstractmethod
    async def fail(self, id: str, owner: str, error: str, retry_at: float) -> int:
        """Count a failed attempt, keep progress, forbid claims before `retry_at`, release the
        lease.  Returns the number of failed attempts so far."""

    @abstractmethod
    async def dead_letter(
        self, id: str, owner: str, error: str, *, rule: str | None, row: Mapping[str, Any], now: float
    ) -> None:
        """Finish `id` as dead with its error and row; keep progress (a retry skips entries that
        succeeded); release the lease.  Counts the attempt."""

    @abstractmethod
    async def dead_letters(self) -> list[DeadLetter]:
        """All dead letters, oldest first."""

    @abstractmethod
    async def retry_dead(self, id: str) -> bool:
        """Make a dead letter unfinished again with zero attempts, so the next poll (or replay)
        that sees the id runs it; progress is kept.  False when `id` is not a dead letter."""

    @abstractmethod
    async def drop_dead(self, id: str) -> bool:
        """Discard a dead letter and mark the id done.  False when `id` is not a dead letter."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Counters since the namespace began: done, skipped, dead, failed (attempts)."""

    async def close(self) -> None:  # noqa: B027 - optional for backends holding no resources
        """Release connections and files."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
