"""Messages finished per rule and hour, for the dashboard: summed in memory and written with one
`Store.count_routed` call about once a second (and at stop), never one call per message.  A failed
write is logged and its counts dropped: these figures never hold up or fail a message."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

from keyrouter.dispatch.outcomes import describe_error
from keyrouter.store.base import Store

logger = logging.getLogger("keyrouter.dispatch")
FLUSH_EVERY = 1.0


class Tally:
    def __init__(self, store: Store, every: float = FLUSH_EVERY) -> None:
        self.store, self.every = store, every
        self._counts: Counter[tuple[str, int]] = Counter()

    def add(self, rule: str) -> None:
        """One message of `rule` finished (done, skipped or dead) now."""
        self._counts[(rule, int(time.time() // 3600))] += 1

    def add_all(self, rules: Iterable[str]) -> None:
        """A message of each of `rules` finished now (one done batch: the hour asked once)."""
        hour, counts = int(time.time() // 3600), self._counts
        for rule in rules:
            counts[(rule, hour)] += 1

    async def flush(self) -> None:
        if not self._counts:
            return
        counts, self._counts = self._counts, Counter()
        try:
            await self.store.count_routed(counts)
        except Exception as exc:
            logger.warning("could not write %d per-rule counts for the dashboard (%s); dropped",
                           sum(counts.values()), describe_error(exc))

    async def run(self) -> None:
        """Flush every `every` seconds until cancelled (the caller flushes once more at stop)."""
        while True:
            await asyncio.sleep(self.every)
            await self.flush()
