"""Messages -> handler effects, exactly once per namespace, as a stream.

`offer(messages)` adds messages to a local queue (routed at once, for their priority); `run()`
keeps `concurrency` slots busy: whenever one is free it claims the next heads of the queue (high
priority first; free slots plus a small prefetch, so several workers share a burst) and starts
each claimed message on its own (`running.py`).  No message waits for another sender's message;
a sender's messages start one after another in received order (`scheduling.py`).  Leases are
renewed in one round trip for everything held; progress and done markers are written in batches
(`writes.py`); time limits hold for every handler kind (`limits.py`).

The Dispatcher is wired here from explicit parts, each given only what it needs: the rules
(`Routing`), the queue, the store's side of scheduling (`Claims`), the `Runner` of one message,
the `Writer`, the `Limits`, the endings' bookkeeping (`Ends`) and the `Loop` that drives them.

`process(messages)` is `offer` plus waiting until each of those messages ran once or cannot run
this time (tests, replay, `keyrouter.testing`); without a `run()` loop it drives the loop itself.
A crash at any point repeats at most the entries that were running, with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from keyrouter.conversations.engine import Conversations
from keyrouter.dispatch.claims import Claims
from keyrouter.dispatch.duplicates import note_duplicate
from keyrouter.dispatch.ends import Ends
from keyrouter.dispatch.entry_context import Shared
from keyrouter.dispatch.limits import Limits
from keyrouter.dispatch.loop import Loop, Stops, fewer_collections
from keyrouter.dispatch.outcomes import DEFERRED, Report
from keyrouter.dispatch.routing import Handlers, Routing
from keyrouter.dispatch.running import Runner
from keyrouter.dispatch.scheduling import PRIORITY_NAMES, WAITING, Item, Queue, Waiter
from keyrouter.dispatch.tally import Tally
from keyrouter.dispatch.writes import Writer
from keyrouter.events import NO_EVENTS, Events
from keyrouter.message import Message
from keyrouter.providers.iletimerkezi import IletiMerkezi
from keyrouter.retries import RetryPolicy
from keyrouter.rules.router import Route, Router
from keyrouter.settings import Settings
from keyrouter.store.base import Store
from keyrouter.store.retried import is_retried_row

#: settings a caller may change after construction: handed on to the parts that hold them
_PASSED_ON = frozenset({"clock", "events", "policy", "handler_timeout", "client", "settings"})


@dataclass
class Dispatcher:
    router: Router
    store: Store
    namespace: str = "default"
    client: IletiMerkezi | None = None  # for built-ins
    settings: Settings | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    lease: float = 60.0
    concurrency: int = 64  # messages running at once
    batch_size: int = 1000  # kept for callers; claims are sized by free slots instead
    handler_timeout: float = 300.0  # KEYROUTER_HANDLER_TIMEOUT; a rule's or entry's `timeout` wins
    flush_interval: float = 0.1  # seconds a done marker may wait to share a write
    horizon: timedelta | None = None
    threads: int = 16  # threads for plain `def` handlers
    clock: Callable[[], float] = time.time
    stopping: asyncio.Event | None = None
    owner: str = field(default_factory=lambda: secrets.token_hex(8))
    events: Events = NO_EVENTS
    shutdown_grace: float = 30.0  # KEYROUTER_SHUTDOWN_GRACE
    max_abandoned: int = 8  # KEYROUTER_MAX_ABANDONED
    #: claimed beyond free slots, at least (more at a fast pace: see loop.Loop._wants);
    #: None: a quarter of concurrency, at most 32
    prefetch: int | None = None

    def __post_init__(self) -> None:
        """The one place the parts are wired."""
        if self.prefetch is None:
            self.prefetch = max(1, min(32, self.concurrency // 4))
        self.handlers = Handlers()
        self.routing = Routing(self.router, self.store, self.clock, self.handlers)
        self._stops = Stops(self.stopping)
        self._wake = asyncio.Event()
        self._queue = queue = Queue()
        self.tally = Tally(self.store)  # finished messages per rule and hour, for the dashboard
        self._ends = ends = Ends(queue, self.tally, self.events, self._wake)
        self.writer = Writer(self.store, self.owner, self.flush_interval, ends.finished)
        self.limits = Limits(self.threads, self.max_abandoned, self.events, self._stops.stop_all)
        shared = Shared(self.namespace, self.client, self.store, self.settings, self.events,
                        self.handlers.logger, self._holds)
        runner = Runner(routing=self.routing, limits=self.limits, writer=self.writer, ends=ends,
                        store=self.store, owner=self.owner, policy=self.policy,
                        clock=self.clock, handler_timeout=self.handler_timeout, shared=shared,
                        stopped=self._stops)
        self._claims = Claims(store=self.store, queue=queue, routing=self.routing, ends=ends,
                              owner=self.owner, lease=self.lease, clock=self.clock,
                              events=self.events)
        self._loop = Loop(queue=queue, claims=self._claims, runner=runner, ends=ends,
                          writer=self.writer, limits=self.limits, tally=self.tally,
                          store=self.store, owner=self.owner, lease=self.lease,
                          concurrency=self.concurrency, prefetch=self.prefetch,
                          shutdown_grace=self.shutdown_grace, stops=self._stops, wake=self._wake)
        self._waiters: set[Waiter] = set()
        self._driver: asyncio.Task[None] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        """A setting changed after wiring (tests move the clock, swap the events) reaches the
        parts that hold it."""
        object.__setattr__(self, name, value)
        if name in _PASSED_ON and "_loop" in self.__dict__:
            self._pass_on()

    def _pass_on(self) -> None:
        runner, shared = self._loop.runner, self._loop.runner.shared
        runner.clock = self.routing.clock = self._claims.clock = self.clock
        shared.events = self._ends.events = self._claims.events = self.events
        self.limits.events = self.events
        runner.policy, runner.handler_timeout = self.policy, self.handler_timeout
        shared.client, shared.settings = self.client, self.settings

    async def _holds(self, id: str) -> bool:
        """Fencing (keyrouter.handlers.fencing): this worker still holds the claim; renews it."""
        return bool(await self.store.renew([id], self.owner, self.lease))

    # ------------------------------------------------------------------ rules
    @property
    def conversations(self) -> Conversations | None:
        """The rules' conversations, consulted when each message starts."""
        return self.routing.conversations

    def use_router(self, router: Router) -> None:
        """Hot reload: messages not started yet run under the new rules, started ones finish
        under theirs.  Raises (and keeps the old rules) when a handler cannot be resolved."""
        self.routing.use(router)
        self.router = router

    def route(self, message: Message) -> Route:
        return self.routing.route(message)

    def beyond_horizon(self, message: Message) -> bool:
        """Older than the horizon: ignored before it reaches the store.  A message without a
        provider date is never beyond it (its done marker is kept for good instead), nor is a
        dead letter retried by hand (store/retried.py)."""
        return (self.horizon is not None and message.date_known
                and not is_retried_row(message.row)
                and message.received_at.timestamp() < self.clock() - self.horizon.total_seconds())

    # ------------------------------------------------------------------ what others read
    @property
    def restart_needed(self) -> bool:
        """Too many stuck handler threads: the worker exits for a restart."""
        return self.limits.restart_needed

    @property
    def inflight(self) -> int:
        """Messages running now."""
        return len(self._loop.tasks)

    def queued(self) -> dict[str, int]:
        """Messages waiting to start (claimed or not), by priority."""
        counts = dict.fromkeys(PRIORITY_NAMES, 0)
        for item in self._queue.waiting():
            counts[PRIORITY_NAMES[item.priority]] += 1
        return counts

    def oldest_waiting_age(self, now: float) -> float | None:
        """Seconds since the oldest unfinished message of this worker (waiting or running) was
        received, at epoch `now` (the inbox lag); None when there is none."""
        oldest = min((i.received for i in self._queue.items.values()), default=None)
        return None if oldest is None else max(0.0, now - oldest)

    @property
    def abandoned_threads(self) -> int:
        """Plain `def` handler threads abandoned past their limit and still running."""
        return self.limits.stuck()

    # ------------------------------------------------------------------ offering and waiting
    def offer(self, messages: Iterable[Message]) -> int:
        """Queue messages not queued yet (and not beyond the horizon); returns how many."""
        return self._offer(messages, None)

    def _offer(self, messages: Iterable[Message], waiter: Waiter | None) -> int:
        """`offer`, with `waiter` waiting for each message (queued already or not)."""
        new = 0
        now = time.monotonic()
        queue = self._queue
        items = queue.items
        queued: list[Item] = []  # already queued: the waiter joins them below
        with fewer_collections():  # a burst's items are kept, not garbage: see loop.py
            for m in messages:
                item = items.get(m.id)
                if item is not None:
                    queued.append(item)
                    continue
                if waiter is None and self.beyond_horizon(m):  # process() has asked already
                    continue
                item = queue.add(m, now)
                if waiter is not None:
                    item.waiters = [waiter]
                new += 1
        if waiter is not None:
            for item in queued:
                item.waiters = [*(item.waiters or ()), waiter]
                if item.state == WAITING and item.checked:
                    if self._claims.blocked(item, now):
                        self._ends.defer_line(item, DEFERRED)
                    else:
                        queue.make_ready(item)
        if new or waiter is not None:
            self._wake.set()
        return new

    async def process(self, messages: Sequence[Message], *,
                      progress: Callable[[int], None] | None = None) -> Report:
        """Offer `messages` and wait until each ran once or cannot run this time (held by another
        worker, or a stop; without a `run()` loop also: retry not due, its sender's earlier
        message unfinished).  `progress(n)` hears how many have settled so far."""
        report = Report(seen=len(messages))
        by_id = self._runnable(messages, report)
        if not by_id:
            return report
        if self._driver is not None and not self._open_waiters():
            await self._driver  # it is winding down: let it end before starting another
        waiter = Waiter(report, len(by_id), progress)
        self._offer(by_id.values(), waiter)
        self._waiters.add(waiter)
        if not self._loop.serving and self._driver is None:
            self._driver = asyncio.create_task(self._drive())
        driver = self._driver
        await waiter.settled.wait()
        self._waiters.discard(waiter)
        if waiter.error is not None:
            raise waiter.error
        if driver is not None and not self._open_waiters():
            await asyncio.shield(driver)
        return report

    def _runnable(self, messages: Sequence[Message], report: Report) -> dict[str, Message]:
        """The messages to offer, by id: a repeated id (logged when its content differs) and a
        message beyond the horizon are counted as ignored."""
        by_id: dict[str, Message] = {}
        for m in messages:
            if m.id in by_id:
                note_duplicate(by_id[m.id], m, self.events, where="inbox")
            if m.id in by_id or self.beyond_horizon(m):
                report.ignored += 1
                continue
            by_id[m.id] = m
        return by_id

    def _open_waiters(self) -> bool:
        return any(not w.settled.is_set() for w in self._waiters)

    async def _drive(self) -> None:
        """The loop for `process()` calls without `run()`: until every waiter has its answer."""
        try:
            await self._loop.serve(lambda: not self._open_waiters(), continuous=False)
        except Exception as exc:
            for waiter in self._waiters:
                waiter.fail(exc)
        finally:
            self._queue.clear()
            self._driver = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Run offered messages as slots free up, until `stopping` is set; then stop gracefully:
        start nothing new, give back what has not started, wait up to `shutdown_grace` seconds
        for running entries and leave the rest to lease expiry."""
        if self._driver is not None:
            await self._driver
        self._stops.serving = [stopping]
        self._queue.recheck_all()
        try:
            await self._loop.serve(lambda: False, continuous=True)
        finally:
            self._stops.serving = []

    async def aclose(self) -> None:
        """Let idle handler threads end; a stuck one is a daemon and never holds up the exit."""
        self.limits.close()
