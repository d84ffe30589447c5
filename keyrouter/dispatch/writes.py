"""Progress, done markers and leases, written in batches rather than one round trip per entry.

- A success with entries left is *progress*: the message's next entry starts only once it is
  written (a crash then repeats at most the entry that was running).  Progress is group-committed:
  a write goes out as soon as none is in flight, carrying every success that arrived meanwhile,
  so under load one round trip serves many entries and an idle worker adds no delay.
- A message whose entries all returned is *finished* (done or skipped): its slot is free at once,
  and its done marker waits up to `interval` (about 100 ms) to share a round trip with others,
  unless nothing else waits to start (the loop's `hurry()`: then it goes out as soon as no write
  is in flight).  The sender's next message starts only after that write (callback `finished`).
A failed write is retried with capped backoff (the store is down; leases then run out and another
worker may repeat the entries that ran, with the same idempotency keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from keyrouter.dispatch.outcomes import describe_error
from keyrouter.dispatch.scheduling import CLAIMED, FINISHING, RUNNING, Item, Queue
from keyrouter.store.base import Store

logger = logging.getLogger("keyrouter.dispatch")
#: a finish batch this long goes out without waiting for the interval (a longer one keeps Redis
#: busy long enough to hold up the next claim)
BATCH_LIMIT = 1000
MAX_BACKOFF = 5.0


class Writer:
    def __init__(self, store: Store, owner: str, interval: float,
                 finished: Callable[[list[Any], list[str]], None]) -> None:
        """`finished(items, taken)` is called with the finished items once their markers are
        written, and the ids another owner held (left alone by the store's fencing)."""
        self.store, self.owner, self.interval = store, owner, interval
        self._finished = finished
        self._progress: list[tuple[str, str, asyncio.Future[bool]]] = []
        self._finishes: list[tuple[Any, bool, bool]] = []  # (item, skipped, forever)
        self._wake = asyncio.Event()
        self._closing = False
        self._hurry = False

    def pending(self) -> int:
        return len(self._progress) + len(self._finishes)

    def progress(self, id: str, key: str) -> asyncio.Future[bool]:
        """Resolves True once written, False when the lease was lost (not written)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._progress.append((id, key, future))
        self._wake.set()
        return future

    def finish(self, item: Item, *, skipped: bool = False, forever: bool = False) -> None:
        self._finishes.append((item, skipped, forever))
        if len(self._finishes) == 1 or len(self._finishes) >= BATCH_LIMIT:
            self._wake.set()

    def hurry(self) -> None:
        """Nothing else to do: write the finishes now rather than at the interval."""
        if self._finishes:
            self._hurry = True
            self._wake.set()

    def start(self) -> asyncio.Task[None]:
        """The writer task of one serving loop, until its `close()`."""
        self._closing = False
        return asyncio.create_task(self.run())

    async def run(self) -> None:
        """The one writer task (`start`); returns after `close()` once everything is written."""
        failures = 0
        while True:
            if not self._progress and not self._finishes:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._progress and not self._closing and not self._hurry \
                    and len(self._finishes) < BATCH_LIMIT:
                self._wake.clear()  # only finishes: let more join them for up to `interval`
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        while not (self._progress or self._closing or self._hurry
                                   or len(self._finishes) >= BATCH_LIMIT):
                            self._wake.clear()
                            await self._wake.wait()
            self._hurry = False
            progress, self._progress = self._progress, []
            finishes, self._finishes = self._finishes, []
            try:
                await self._write(progress, finishes)
                failures = 0
            except Exception as exc:
                self._progress[:0], self._finishes[:0] = progress, finishes
                failures += 1
                delay = min(MAX_BACKOFF, 0.1 * 2 ** failures)
                logger.warning("could not write progress (%s); retrying in %.1fs",
                               describe_error(exc), delay)
                if self._closing and failures >= 3:
                    self._give_up()
                    return
                await asyncio.sleep(delay)

    async def _write(self, progress: list[tuple[str, str, asyncio.Future[bool]]],
                     finishes: list[tuple[Any, bool, bool]]) -> None:
        if progress:
            lost = set(await self.store.record_success([(i, k) for i, k, _ in progress], self.owner))
            for id, _, future in progress:
                if not future.done():
                    future.set_result(id not in lost)
        if finishes:
            done = [item.id for item, skipped, _ in finishes if not skipped]
            skipped = [item.id for item, skip, _ in finishes if skip]
            forever = [item.id for item, _, keep in finishes if keep]
            taken = await self.store.finish(done, self.owner, skipped=skipped, forever=forever)
            self._finished([item for item, _, _ in finishes], list(taken or ()))

    def _give_up(self) -> None:
        """Stopping with the store down: leave what is unwritten to lease expiry."""
        for _, _, future in self._progress:
            if not future.done():
                future.set_result(False)
        if self._finishes:
            logger.warning("stopping with %d done markers unwritten (the store is unreachable); "
                           "their last entries may run again, with the same idempotency keys",
                           len(self._finishes))
        self._progress, self._finishes = [], []

    async def close(self, task: asyncio.Task[None], timeout: float) -> None:
        """Write what is pending (for at most `timeout` seconds), then end the writer task."""
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(max(timeout, 0.1)):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            self._give_up()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def renew_forever(queue: Queue, store: Store, owner: str, lease: float) -> None:
    """Every lease/3, one round trip renews every lease this worker holds; a lost one marks its
    message so it stops between entries."""
    while True:
        await asyncio.sleep(lease / 3)
        held = [i for i in queue.items.values() if i.state in (CLAIMED, RUNNING, FINISHING)]
        if not held:
            continue
        try:
            kept = set(await store.renew([i.id for i in held], owner, lease))
        except Exception as exc:  # a blip must not end renewal: try again at the next tick
            logger.warning("could not renew leases (%s); retrying", describe_error(exc))
            continue
        for item in held:
            if item.id not in kept and item.state in (CLAIMED, RUNNING) and not item.lost:
                item.lost = True
                logger.warning("lease lost for message %s; another worker may take it over", item.id)
