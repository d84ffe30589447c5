"""The scheduling loop behind `run()` and `process()`: each tick asks the store about new (and
rechecked) messages in one round trip, claims as many heads as there are free slots plus a small
prefetch (high priority first), and starts each claimed message in a slot.  A stop starts
nothing new, gives back what has not started, waits up to the grace period for running entries,
and leaves the rest to lease expiry."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator

from keyrouter.dispatch.claims import Claims
from keyrouter.dispatch.ends import Ends
from keyrouter.dispatch.limits import Limits
from keyrouter.dispatch.outcomes import DEFERRED, describe_error
from keyrouter.dispatch.running import Runner
from keyrouter.dispatch.scheduling import RUNNING, Item, Queue
from keyrouter.dispatch.tally import Tally
from keyrouter.dispatch.writes import Writer, renew_forever
from keyrouter.store.base import Store

logger = logging.getLogger("keyrouter.dispatch")
IDLE_TICK = 1.0  # seconds between ticks with nothing to do (rechecks, a stop)
PREFETCH_SECONDS = 0.1  # claim ahead what this worker starts in about this time...
MAX_PREFETCH = 2000  # ...but never more than this
PACE_WINDOW = 0.05  # seconds over which the pace of starts is measured (then smoothed)
#: the garbage collector's first threshold while a loop serves (Python's default: 700)
GC_GEN0 = 50_000
_serving_loops = 0


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """While a loop serves, the collector runs after GC_GEN0 new objects rather than 700.  Each
    message allocates a few dozen objects and frees them by reference counting (no cycles), but
    they count towards the collector's thresholds, and every tenth young collection scans the
    older ones and every hundredth all live objects (thousands of queued messages): that was a
    third of the CPU per message.  The old thresholds come back when the last loop stops."""
    global _serving_loops
    before = gc.get_threshold()
    if _serving_loops == 0 and before[0] < GC_GEN0:
        gc.set_threshold(GC_GEN0, *before[1:])
    _serving_loops += 1
    try:
        yield
    finally:
        _serving_loops -= 1
        if _serving_loops == 0 and gc.get_threshold()[0] == GC_GEN0:
            gc.set_threshold(*before)


class Stops:
    """What stops the dispatcher: its own `stopping` event (a constructor argument, or set when
    handler threads are stuck) and the event of the `run()` call serving now."""

    def __init__(self, stopping: asyncio.Event | None) -> None:
        self.stopping = stopping
        self.serving: list[asyncio.Event] = []

    def __call__(self) -> bool:
        """Asked between every two messages a slot runs: a plain loop, no generator."""
        if self.stopping is not None and self.stopping.is_set():
            return True
        for event in self.serving:  # noqa: SIM110 (no generator: asked per message)
            if event.is_set():
                return True
        return False

    def events(self) -> list[asyncio.Event]:
        return [e for e in (self.stopping, *self.serving) if e is not None]

    def stop_all(self) -> None:
        """Stop every loop, including the caller's worker loop (it then exits for a restart)."""
        for event in self.events():
            event.set()
        if not self.events():
            self.stopping = asyncio.Event()
            self.stopping.set()


class Loop:
    """Slots, ticks and the winding down; given the queue, how to claim and run a message, and
    the helpers that run beside it (writer, lease renewal, time limits, the tally)."""

    def __init__(self, *, queue: Queue, claims: Claims, runner: Runner, ends: Ends,
                 writer: Writer, limits: Limits, tally: Tally, store: Store, owner: str,
                 lease: float, concurrency: int, prefetch: int, shutdown_grace: float,
                 stops: Stops, wake: asyncio.Event) -> None:
        self.queue, self.claims, self.runner, self.ends = queue, claims, runner, ends
        self.writer, self.limits, self.tally = writer, limits, tally
        self.store, self.owner, self.lease = store, owner, lease
        self.concurrency, self.prefetch, self.shutdown_grace = concurrency, prefetch, shutdown_grace
        self.stops, self.wake = stops, wake
        self.tasks: dict[str, asyncio.Task[None]] = {}  # running messages' slots, by message id
        self.serving = False
        self._pace, self._started, self._pace_since = 0.0, 0, time.monotonic()
        #: the claimed backlog at which the next claim is due (three quarters of the prefetch),
        #: and whether a claim is in flight: slots let the loop turn at that point (see `_run`)
        self._low_water, self._claiming = 0, False

    async def serve(self, until: Callable[[], bool], *, continuous: bool) -> None:
        """Tick until `until()` or a stop; `continuous` (a `run()` loop): a store failure is
        retried with backoff rather than raised."""
        self.serving, self.claims.continuous = True, continuous
        self._started, self._pace_since = 0, time.monotonic()  # the pace of this loop's starts
        helpers = [asyncio.create_task(renew_forever(self.queue, self.store, self.owner, self.lease)),
                   asyncio.create_task(self.limits.watchdog.run()),
                   asyncio.create_task(self.tally.run())]
        helpers += [asyncio.create_task(self._wake_on(e)) for e in self.stops.events()]
        writing = self.writer.start()
        with fewer_collections():
            try:
                await self._ticks(until, continuous)
            finally:
                try:
                    await self._wind_down(writing)
                    await self.tally.flush()
                finally:
                    for helper in helpers:
                        helper.cancel()
                    self.serving = self.claims.continuous = False

    async def _ticks(self, until: Callable[[], bool], continuous: bool) -> None:
        failures = 0
        while not self.stops() and not until():
            self.wake.clear()
            try:
                await self._tick()
                failures = 0
            except Exception as exc:
                if not continuous:
                    raise
                failures += 1
                delay = min(30.0, 0.5 * 2 ** failures)
                logger.warning("the store failed (%s); next try in %.1fs", describe_error(exc), delay)
                await self._sleep(delay)
                continue
            if until():
                break
            if self._nothing_to_start():
                self.writer.hurry()
            await self._sleep(self._next_wait())

    async def _wake_on(self, event: asyncio.Event) -> None:
        await event.wait()
        self.wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` pass or something wakes the loop; with nothing to wait for, one turn of
        the event loop all the same: the slots just started run before the next tick (which then
        sees whether they are still busy)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()

    def _nothing_to_start(self) -> bool:
        """Nothing claimed, claimable or to be checked: the done markers of the messages that
        finish now need not wait for others to share their round trip (the last ones of a batch,
        and those whose senders' next messages wait for them, go out at once)."""
        queue = self.queue
        return not (queue.claimed_count() or queue.has_ready() or queue.has_unchecked())

    def _next_wait(self) -> float:
        queue = self.queue
        if queue.has_unchecked() or (queue.has_ready() and self._wants() > 0):
            return 0.0
        timer = queue.next_timer()
        return IDLE_TICK if timer is None else min(IDLE_TICK, max(0.0, timer - time.monotonic()))

    def _wants(self) -> int:
        """Claims to ask for: free slots, plus a prefetch of what this worker starts in about
        PREFETCH_SECONDS at its recent pace (at least `prefetch`): a few with slow handlers, so
        workers share a burst; many with instant ones, so claims stay few round trips."""
        ahead = min(MAX_PREFETCH, max(self.prefetch, int(self._pace * PREFETCH_SECONDS)))
        backlog = self.queue.claimed_count()
        self._low_water = low = ahead * 3 // 4
        if backlog > low:  # enough claimed ahead: free slots take from it, claim in bulk later
            return 0
        return self.concurrency - len(self.tasks) + ahead - backlog

    def _count_start(self, n: int, now: float) -> None:
        """Messages started per second, smoothed over a few tenths of a second (a burst's claims
        grow within its first tenth)."""
        self._started += n
        elapsed = now - self._pace_since
        if elapsed >= (PACE_WINDOW if self._pace else PACE_WINDOW / 5):  # a first figure soon
            rate = self._started / elapsed
            self._pace = rate if self._pace == 0 else 0.5 * self._pace + 0.5 * rate
            self._started, self._pace_since = 0, now

    async def _tick(self) -> None:
        queue = self.queue
        now = time.monotonic()
        unchecked = queue.take_unchecked(now)
        if unchecked:
            checked = await self.claims.check(unchecked, busy=bool(self.tasks))
            # routing a checked batch keeps the slots from starting anything: that time is not
            # part of the pace (a burst's first claims would stay small for a while otherwise)
            self._pace_since += checked - now
            now = checked
        if self.stops():
            return
        want = self._wants()
        if want > 0 and queue.has_ready():
            # a few more candidates than slots: the store skips those held elsewhere and stops at
            # `want` (when many are held elsewhere, the next tick comes at once for the rest)
            candidates = queue.pick(want + 8, now, waited_only=not self.claims.continuous)
            if candidates:
                self._claiming = True
                try:
                    await self.claims.claim(candidates, want)
                finally:
                    self._claiming = False
        started = 0
        tasks, concurrency = self.tasks, self.concurrency
        # asked once: nothing else runs inside this loop (no await), so no stop arrives during it
        stopped = self.stops()
        while len(tasks) < concurrency and not stopped:
            claimed = queue.next_claimed()
            if claimed is None:
                break
            claimed.state = RUNNING
            tasks[claimed.id] = asyncio.create_task(self._run(claimed))
            started += 1
        self._count_start(started, time.monotonic())

    async def _run(self, item: Item) -> None:
        """One slot: runs `item`, then the next claimed message while there is one and nothing
        stops (a busy worker creates no task per message; the loop claims, this slot starts)."""
        tasks, run_message, queue = self.tasks, self.runner.run_message, self.queue
        while True:
            try:
                await run_message(item)
            except asyncio.CancelledError:
                # cut off by a stop past the grace period: the lease runs out and the entry runs
                # again later, with the same idempotency key
                item.settle(DEFERRED)
                raise
            except Exception as exc:
                logger.error("message %s: %s; it will be tried again", item.id, describe_error(exc))
                self.ends.lost(item)
            finally:
                task = tasks.pop(item.id, None)
                self.wake.set()
            if task is None or len(tasks) >= self.concurrency or self.stops():
                return
            if not self._claiming and queue.claimed_count() <= self._low_water:
                # the next claim is due: let the loop send it, then run on while the store
                # answers (handlers that never wait would otherwise hold the event loop until
                # the claimed messages run out, and the claim's round trip would not overlap)
                await asyncio.sleep(0)
                if len(tasks) >= self.concurrency or self.stops():
                    return
            following = queue.next_claimed()
            if following is None:
                return
            item = following
            item.state = RUNNING
            tasks[item.id] = task
            self._started += 1  # the pace counts it (see _count_start)

    async def _wind_down(self, writing: asyncio.Task[None]) -> None:
        queue, ends = self.queue, self.ends
        while (item := queue.next_claimed()) is not None:
            ends.give_back(item)
        started = time.monotonic()
        if self.tasks:
            _, cut = await asyncio.wait(list(self.tasks.values()), timeout=self.shutdown_grace)
            if cut:
                logger.warning("%d messages still running after the %gs grace period; leaving them "
                               "to lease expiry (they run again later, with the same idempotency "
                               "keys)", len(cut), self.shutdown_grace)
                for task in cut:
                    task.cancel()
                await asyncio.wait(cut, timeout=1.0)
        if ends.to_release:
            ids, ends.to_release = ends.to_release, []
            try:
                await self.store.release(ids, self.owner)
            except Exception as exc:
                logger.warning("could not give back %d leases (%s); they expire", len(ids),
                               describe_error(exc))
        await self.writer.close(writing, max(2.0, self.shutdown_grace - (time.monotonic() - started)))
        for item in list(queue.items.values()):
            if item.waiters:
                item.settle(DEFERRED)
