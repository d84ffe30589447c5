"""A saved inbox through the whole pipeline, retries included, until every message is finished."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import replace

from keyrouter.dispatch import Dispatcher, Report
from keyrouter.worker.loop import sleep_unless_stopped
from keyrouter.worker.runtime import Runtime
from keyrouter.worker.sources import SavedInbox

PROGRESS_EVERY = 0.1  # seconds between progress calls
#: the next part of the file is read and offered once fewer than this many offered messages wait
#: to start: more than a claim takes beyond its free slots (dispatch/loop.py, MAX_PREFETCH), so a
#: claim never finds the queue short while the file has rows left
WAITING_LOW = 2_000
STOP_SEEN = 0.1  # seconds: how soon a stop ends the reading of a file
#: seconds the reading waits at most for the first part's messages to start: read on at once, it
#: would compete with their check and claim for the event loop (they may be held elsewhere)
FIRST_START = 0.05


async def replay(runtime: Runtime, inbox: SavedInbox, stopping: asyncio.Event,
                 progress: Callable[[int, int], None] | None = None) -> tuple[Report, list[str]]:
    """Stream the inbox's messages through the dispatcher: its parts are parsed and offered while
    the first ones run, each message running as soon as a slot is free and its sender's earlier
    message is finished; retries run when due.  Returns the summed report and the ids of these
    messages in the dead letters, in file order.  `progress(done, total)` is called at most every
    100 ms and at the end; after a stop it is not called again (messages given back unstarted are
    not progress, nor are parts never offered)."""
    dispatcher = runtime.dispatcher
    finished = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(finished))
    await asyncio.sleep(0)  # let the loop start, so process() below waits on it
    first = _FirstPass(dispatcher, inbox, stopping, progress)
    try:
        report = await first.run()
        # every one done, skipped or dead in the first pass: no need to ask the store again
        if report.done + report.skipped + report.dead < report.seen - report.ignored:
            await _retries(runtime, inbox, stopping, report)
    finally:
        first.cancel()  # only when an error cut the replay short: else every pass has returned
        finished.set()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    dead = {d.id for d in await runtime.store.dead_letters()}
    return report, [i for i in inbox.unique_ids if i in dead]


class _FirstPass:
    """Each part of the file offered by a `process()` call of its own, the next one once the
    dispatcher is short of waiting messages, and how far they all got."""

    def __init__(self, dispatcher: Dispatcher, inbox: SavedInbox, stopping: asyncio.Event,
                 progress: Callable[[int, int], None] | None) -> None:
        self.dispatcher, self.inbox, self.stopping, self.progress = dispatcher, inbox, stopping, progress
        self.total = inbox.total
        self.offered = self.settled = 0
        self._settled_by_part: list[int] = []
        self._passes: list[asyncio.Task[Report]] = []
        self._room = asyncio.Event()
        self._reported = 0.0

    async def run(self) -> Report:
        async for part in self.inbox.parts():
            index = len(self._passes)
            self._settled_by_part.append(0)
            self.offered += len(part)
            self._passes.append(asyncio.create_task(self.dispatcher.process(
                part, progress=functools.partial(self._on_settled, index))))
            if index == 0:
                await self._first_started()
            await self._wait_for_room()
            if self.stopping.is_set():
                break
        report = Report()
        for one in await asyncio.gather(*self._passes):
            report.add(one)
        if self.progress is not None and not self.stopping.is_set() and self.settled < self.total:
            self.progress(self.total, self.total)  # duplicates, horizon: settled without running
        return report

    def cancel(self) -> None:
        for one in self._passes:
            one.cancel()

    def _waiting(self) -> int:
        return self.offered - self.settled - self.dispatcher.inflight

    async def _first_started(self) -> None:
        """Until a message of the first part runs or settles, or FIRST_START passes (looked at
        every millisecond: only once a replay, for a few milliseconds)."""
        deadline = time.monotonic() + FIRST_START
        while not (self.stopping.is_set() or self.settled or self.dispatcher.inflight) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    async def _wait_for_room(self) -> None:
        while not self.stopping.is_set() and self._waiting() >= WAITING_LOW:
            self._room.clear()
            with contextlib.suppress(TimeoutError):  # a stop is seen within STOP_SEEN
                await asyncio.wait_for(self._room.wait(), STOP_SEEN)

    def _on_settled(self, part: int, n: int) -> None:
        self.settled += n - self._settled_by_part[part]
        self._settled_by_part[part] = n
        if self._waiting() < WAITING_LOW:
            self._room.set()
        if self.progress is None or self.stopping.is_set():  # called per message: no clock then
            return
        now = time.monotonic()
        if self.settled >= self.total or now - self._reported >= PROGRESS_EVERY:
            self._reported = now
            self.progress(self.settled, self.total)


async def _retries(runtime: Runtime, inbox: SavedInbox, stopping: asyncio.Event,
                   report: Report) -> None:
    """Passes over what is still unfinished until nothing is (retries run when due)."""
    dispatcher = runtime.dispatcher
    messages = inbox.messages()
    ids = [m.id for m in messages if not dispatcher.beyond_horizon(m)]
    pause = min(1.0, runtime.settings.retry_base)
    while not stopping.is_set():
        left = set(await runtime.store.unfinished(ids))
        if not left:
            return
        retried = await dispatcher.process([m for m in messages if m.id in left])
        report.add(replace(retried, seen=0, ignored=0, deferred=0))  # the first pass counted these
        if retried.deferred:  # held by another worker: give it time
            await sleep_unless_stopped(stopping, pause)
