"""The scheduling loop behind `run()` and `process()`: each tick asks the store about new (and
rechecked) messages in one round trip, claims as many heads as there are free slots plus a small
prefetch (high priority first), and starts each claimed message as its own task.  A stop starts
nothing new, gives back what has not started, waits up to the grace period for running entries,
and leaves the rest to lease expiry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from keyrouter.dispatch.limits import Watchdog
from keyrouter.dispatch.outcomes import DEFERRED, describe_error
from keyrouter.dispatch.running import MessageEnds
from keyrouter.dispatch.scheduling import CLAIMED, RUNNING, WAITING, Item
from keyrouter.dispatch.writes import Writer, renew_forever
from keyrouter.events import Events
from keyrouter.message import Message
from keyrouter.rules.router import Route
from keyrouter.store.base import Claimed, Store

logger = logging.getLogger("keyrouter.dispatch")
CHECK_BATCH = 10_000  # ids asked of the store in one `unfinished` call per tick
IDLE_TICK = 1.0  # seconds between ticks with nothing to do (rechecks, a stop)
PREFETCH_SECONDS = 0.1  # claim ahead what this worker starts in about this time...
MAX_PREFETCH = 1000  # ...but never more than this


class ServeLoop(MessageEnds):
    """The Dispatcher's loop (a mixin: the fields live on the Dispatcher)."""

    store: Store
    owner: str
    lease: float
    concurrency: int
    prefetch: int | None
    flush_interval: float
    shutdown_grace: float
    clock: Callable[[], float]
    stopping: asyncio.Event | None
    events: Events
    _tasks: dict[str, asyncio.Task[None]]
    _stop_events: list[asyncio.Event]
    _serving: bool
    _continuous: bool
    _writer: Writer | None
    watchdog: Watchdog
    _pace: float  # messages started per second lately
    _started: int
    _pace_since: float

    def stopped(self) -> bool:
        raise NotImplementedError

    def route(self, message: Message) -> Route:
        raise NotImplementedError

    async def run_message(self, item: Item) -> None:
        """Runs a claimed message's handlers (running.run_message, on the Dispatcher)."""
        raise NotImplementedError

    def _route_item(self, item: Item) -> None:
        raise NotImplementedError

    async def _serve(self, until: Callable[[], bool]) -> None:
        self._serving = True
        self._started, self._pace_since = 0, time.monotonic()  # the pace of this loop's starts
        self._writer = Writer(self.store, self.owner, self.flush_interval, self._finished)
        helpers = [asyncio.create_task(renew_forever(self._queue, self.store, self.owner, self.lease)),
                   asyncio.create_task(self.watchdog.run()), asyncio.create_task(self.tally.run())]
        helpers += [asyncio.create_task(self._wake_on(e)) for e in (self.stopping, *self._stop_events) if e]
        writing = asyncio.create_task(self._writer.run())
        failures = 0
        try:
            while not self.stopped() and not until():
                self._wake.clear()
                try:
                    await self._tick()
                    failures = 0
                except Exception as exc:
                    if not self._continuous:
                        raise
                    failures += 1
                    delay = min(30.0, 0.5 * 2 ** failures)
                    logger.warning("the store failed (%s); next try in %.1fs", describe_error(exc), delay)
                    await self._sleep(delay)
                    continue
                if until():
                    break
                if not self._tasks and not self._queue.claimed_count():
                    self._writer.hurry()
                await self._sleep(self._next_wait())
        finally:
            try:
                await self._wind_down(writing)
                await self.tally.flush()
            finally:
                for helper in helpers:
                    helper.cancel()
                self._serving = False

    async def _wake_on(self, event: asyncio.Event) -> None:
        await event.wait()
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._wake.wait()

    def _next_wait(self) -> float:
        queue = self._queue
        if queue.has_unchecked() or (queue.has_ready() and self._wants() > 0):
            return 0.0
        timer = queue.next_timer()
        return IDLE_TICK if timer is None else min(IDLE_TICK, max(0.0, timer - time.monotonic()))

    def _wants(self) -> int:
        """Claims to ask for: free slots, plus a prefetch of what this worker starts in about
        PREFETCH_SECONDS at its recent pace (at least `prefetch`): a few with slow handlers, so
        workers share a burst; many with instant ones, so claims stay few round trips."""
        assert self.prefetch is not None
        ahead = min(MAX_PREFETCH, max(self.prefetch, int(self._pace * PREFETCH_SECONDS)))
        backlog = self._queue.claimed_count()
        if backlog > ahead // 2:  # enough claimed ahead: free slots take from it, claim in bulk later
            return 0
        return self.concurrency - len(self._tasks) + ahead - backlog

    def _count_start(self, n: int, now: float) -> None:
        """Messages started per second, smoothed over about a second."""
        self._started += n
        elapsed = now - self._pace_since
        if elapsed >= (0.25 if self._pace else 0.05):  # the first estimate early: claims grow soon
            rate = self._started / elapsed
            self._pace = rate if self._pace == 0 else 0.5 * self._pace + 0.5 * rate
            self._started, self._pace_since = 0, now

    async def _tick(self) -> None:
        queue = self._queue
        now = time.monotonic()
        unchecked = queue.take_unchecked(now)
        if unchecked:
            now = await self._check(unchecked)
        if self.stopped():
            return
        want = self._wants()
        if want > 0 and queue.has_ready():
            # a few more candidates than slots: the store skips those held elsewhere and stops at
            # `want` (when many are held elsewhere, the next tick comes at once for the rest)
            candidates = queue.pick(want + 8, now, waited_only=not self._continuous)
            if candidates:
                await self._claim(candidates, want)
        started = 0
        tasks, concurrency = self._tasks, self.concurrency
        # asked once: nothing else runs inside this loop (no await), so no stop arrives during it
        stopped = self.stopped()
        while len(tasks) < concurrency and not stopped:
            claimed = queue.next_claimed()
            if claimed is None:
                break
            claimed.state = RUNNING
            tasks[claimed.id] = asyncio.create_task(self._run(claimed))
            started += 1
        self._count_start(started, time.monotonic())

    async def _check(self, unchecked: list[Item]) -> float:
        """Ask the store which new (or re-checked) messages are unfinished, a batch a tick: the
        finished ones settle, the others are routed and wait their turn.  Returns the time after
        the store answered."""
        queue = self._queue
        batch, rest = unchecked[:CHECK_BATCH], unchecked[CHECK_BATCH:]
        queue.recheck(rest)
        left = set(await self.store.unfinished([i.id for i in batch]))
        now = time.monotonic()
        for item in batch:
            if not item.queued:
                continue
            if item.id in left:
                if item.route is None:
                    self._route_item(item)
                queue.checked(item)
            else:  # finished (here before, or by another worker)
                queue.drop(item)
                item.settle(None)
        for item in batch:
            if item.waiters and item.state == WAITING and item.queued and self._blocked(item, now):
                self._defer_line(item, DEFERRED)
        return now

    async def _claim(self, candidates: list[Item], want: int) -> None:
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
        queue = self._queue
        for n, item in enumerate(candidates):
            claim = by_id.get(item.id)
            if claim is not None:
                item.state, item.claim, item.recheck = CLAIMED, claim, 0.0
                queue.claimed[queue.rank(item)].append(item)
            elif n < examined:  # held by another worker, retry not due, or finished meanwhile
                queue.defer(item, now)
                self._defer_line(item, DEFERRED)
            else:
                queue.make_ready(item)

    def _blocked(self, item: Item, now: float) -> bool:
        """Without a `run()` loop, the item cannot start in this pass: its line waits for a head
        whose retry or recheck is not due, or that no `process()` call waits for."""
        if self._continuous:  # the loop runs it when its time comes: wait for that
            return False
        head = self._queue.head(item)
        if head.state != WAITING:
            return False
        return head.not_before > now or not head.waiters

    def _defer_line(self, item: Item, outcome: str | None) -> None:
        item.settle(outcome)
        for later in self._queue.behind(item):
            if later.waiters and later.state == WAITING:
                later.settle(DEFERRED)

    async def _run(self, item: Item) -> None:
        """One slot: runs `item`, then the next claimed message while there is one and nothing
        stops (a busy worker creates no task per message; the loop claims, this slot starts)."""
        tasks = self._tasks
        while True:
            try:
                await self.run_message(item)
            except asyncio.CancelledError:
                # cut off by a stop past the grace period: the lease runs out and the entry runs
                # again later, with the same idempotency key
                item.settle(DEFERRED)
                raise
            except Exception as exc:
                logger.error("message %s: %s; it will be tried again", item.id, describe_error(exc))
                self.lost(item)
            finally:
                task = tasks.pop(item.id, None)
                self._wake.set()
            if task is None or self.stopped() or len(tasks) >= self.concurrency:
                return
            following = self._queue.next_claimed()
            if following is None:
                return
            item = following
            item.state = RUNNING
            tasks[item.id] = task
            self._started += 1  # the pace counts it (see _count_start)

    async def _wind_down(self, writing: asyncio.Task[None]) -> None:
        queue = self._queue
        while (item := queue.next_claimed()) is not None:
            await self.give_back(item)
        started = time.monotonic()
        if self._tasks:
            _, cut = await asyncio.wait(list(self._tasks.values()), timeout=self.shutdown_grace)
            if cut:
                logger.warning("%d messages still running after the %gs grace period; leaving them "
                               "to lease expiry (they run again later, with the same idempotency "
                               "keys)", len(cut), self.shutdown_grace)
                for task in cut:
                    task.cancel()
                await asyncio.wait(cut, timeout=1.0)
        if self._to_release:
            ids, self._to_release = self._to_release, []
            try:
                await self.store.release(ids, self.owner)
            except Exception as exc:
                logger.warning("could not give back %d leases (%s); they expire", len(ids),
                               describe_error(exc))
        assert self._writer is not None
        await self._writer.close(writing, max(2.0, self.shutdown_grace - (time.monotonic() - started)))
        for item in list(queue.items.values()):
            if item.waiters:
                item.settle(DEFERRED)

    # ------------------------------------------------------------------ how a message ends
