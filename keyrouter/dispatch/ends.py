"""How a message leaves its slot, and what its sender's line does next: done or skipped once the
done marker is written, given back at a stop, lost to another worker, dead, or retrying."""

from __future__ import annotations

import asyncio
import logging
import time

from keyrouter.dispatch.outcomes import DEAD, DEFERRED, DONE, RETRYING, SKIPPED
from keyrouter.dispatch.scheduling import WAITING, Item, Queue
from keyrouter.dispatch.tally import Tally
from keyrouter.events import Events

logger = logging.getLogger("keyrouter.dispatch")


class Ends:
    """The queue's bookkeeping for each ending; `wake` tells the loop a slot or a line moved."""

    def __init__(self, queue: Queue, tally: Tally, events: Events, wake: asyncio.Event) -> None:
        self.queue, self.tally, self.events, self.wake = queue, tally, events, wake
        #: leases given back at a stop, released in one round trip when the loop winds down
        self.to_release: list[str] = []

    def defer_line(self, item: Item, outcome: str | None) -> None:
        """The item settles as `outcome` this time; its sender's later messages wait with it."""
        item.settle(outcome)
        for later in self.queue.behind(item):
            if later.waiters and later.state == WAITING:
                later.settle(DEFERRED)

    def finished(self, items: list[Item], taken: list[str]) -> None:
        """Done markers written (the writer's callback): the senders' next messages may start."""
        lost = set(taken)
        now = time.monotonic()
        queue, events = self.queue, self.events
        ended: list[str] = []  # their rules, for the tally
        for item in items:
            if item.id in lost:
                logger.warning("message %s was taken over by another worker before it was marked "
                               "done; its last handler entry may run again", item.id)
                queue.defer(item, now)
                self.defer_line(item, None)
                continue
            queue.drop(item)
            outcome = SKIPPED if item.skipped else DONE
            item.settle(outcome)
            ended.append(item.rule)
            events.message_finished(item.rule, outcome)
        self.tally.add_all(ended)
        self.wake.set()

    def give_back(self, item: Item) -> None:
        """A stop between entries: the lease is given back (in one round trip with the others
        when the loop winds down) so another worker can take the message at once."""
        self.to_release.append(item.id)
        self.queue.defer(item, time.monotonic())
        self.defer_line(item, DEFERRED)

    def lost(self, item: Item) -> None:
        """Another worker holds the message now (or a write failed): leave it to them."""
        self.queue.defer(item, time.monotonic())
        self.defer_line(item, None)

    def dead(self, item: Item, rule: str) -> None:
        self.queue.drop(item)
        item.settle(DEAD)
        self.tally.add(rule)
        self.events.message_finished(rule, DEAD)

    def retrying(self, item: Item, rule: str, delay: float) -> None:
        self.queue.defer(item, time.monotonic(), delay)
        self.defer_line(item, RETRYING)
        self.events.message_finished(rule, RETRYING)
