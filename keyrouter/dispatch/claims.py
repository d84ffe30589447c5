"""Asking the store about offered messages, a batch a tick: which are unfinished (those are
routed and wait their turn) and, of the heads that may start, which this worker now holds."""

from __future__ import annotations

import time
from collections.abc import Callable

from keyrouter.dispatch.ends import Ends
from keyrouter.dispatch.outcomes import DEFERRED
from keyrouter.dispatch.routing import Routing
from keyrouter.dispatch.scheduling import CLAIMED, WAITING, Item, Queue
from keyrouter.events import Events
from keyrouter.store.base import Claimed, Store

CHECK_BATCH = 10_000  # ids asked of the store in one `unfinished` call per tick, at most...
CHECK_FIRST = 1_000  # ...in the first call of a burst: its first messages start sooner...
#: ...and while messages run: a tick that checks and routes 10,000 holds the loop long enough
#: for running handlers to wake late and for free slots to wait for the next claim
CHECK_BUSY = 2_000


class Claims:
    def __init__(self, *, store: Store, queue: Queue, routing: Routing, ends: Ends, owner: str,
                 lease: float, clock: Callable[[], float], events: Events) -> None:
        self.store, self.queue, self.routing, self.ends = store, queue, routing, ends
        self.owner, self.lease, self.clock, self.events = owner, lease, clock, events
        #: a `run()` loop serves: it runs each message when its time comes (else only what
        #: `process()` calls wait for, in this pass)
        self.continuous = False
        self._batch = CHECK_FIRST

    async def check(self, unchecked: list[Item], *, busy: bool) -> float:
        """Ask the store which new (or re-checked) messages are unfinished, a batch a tick: the
        finished ones settle, the others are routed and wait their turn.  A burst is asked
        CHECK_FIRST first, then CHECK_BUSY at a time while messages run (`busy`), else
        CHECK_BATCH: slots start on the first ones while the rest are checked and routed, and
        an inbox of finished messages costs few round trips.  Returns the time after the store
        answered."""
        queue = self.queue
        size = min(self._batch, CHECK_BUSY) if busy else self._batch
        batch, rest = unchecked[:size], unchecked[size:]
        self._batch = CHECK_BATCH if rest else CHECK_FIRST
        queue.recheck(rest)
        left = set(await self.store.unfinished([i.id for i in batch]))
        now = time.monotonic()
        route_item = self.routing.route_item
        for item in batch:
            if not item.queued:
                continue
            if item.id in left:
                if item.route is None:
                    route_item(item)
                queue.checked(item)
            else:  # finished (here before, or by another worker)
                queue.drop(item)
                item.settle(None)
        if not self.continuous:
            for item in batch:
                if item.waiters and item.state == WAITING and item.queued and self.blocked(item, now):
                    self.ends.defer_line(item, DEFERRED)
        return now

    async def claim(self, candidates: list[Item], want: int) -> None:
        ids = [i.id for i in candidates]
        claims: list[Claimed] = await self.store.claim(ids, self.owner, self.lease, self.clock(),
                                                       limit=want)
        by_id = {c.id: c for c in claims}
        taken = sum(1 for c in claims if c.taken_over)
        if taken:
            self.events.lease_taken_over(taken)
        examined = len(candidates)  # the store stops after `want` claims: the rest were not looked at
        if len(claims) >= want:
            examined = max(n for n, i in enumerate(candidates) if i.id in by_id) + 1
        now = time.monotonic()
        queue = self.queue
        lanes = queue.claimed
        for n, item in enumerate(candidates):
            claim = by_id.get(item.id)
            if claim is not None:
                item.state, item.claim, item.recheck = CLAIMED, claim, 0.0
                lanes[queue.rank(item)].append(item)
            elif n < examined:  # held by another worker, retry not due, or finished meanwhile
                queue.defer(item, now)
                self.ends.defer_line(item, DEFERRED)
            else:
                queue.make_ready(item)

    def blocked(self, item: Item, now: float) -> bool:
        """Without a `run()` loop, the item cannot start in this pass: its line waits for a head
        whose retry or recheck is not due, or that no `process()` call waits for."""
        if self.continuous:  # the loop runs it when its time comes: wait for that
            return False
        head = self.queue.head(item)
        if head.state != WAITING:
            return False
        return head.not_before > now or not head.waiters
